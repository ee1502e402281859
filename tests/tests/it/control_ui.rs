//! The Control UI over plain HTTP on the gateway's WebSocket port: pages, assets, deep links,
//! the bootstrap JSON and the base path, with the WebSocket still answering on the same port.

use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::chat_local::local_gateway;

/// A built UI in miniature: the shape of `dist/control-ui`.
fn fake_ui(dir: &Path) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html>\n<html lang=\"en\">\n<head><script type=\"module\" \
         src=\"./assets/app-1a2b.js\"></script><link rel=\"stylesheet\" \
         href=\"./assets/app-1a2b.css\"><link rel=\"icon\" \
         href=\"./favicon.svg\"></head>\n<body><openclaw-app></openclaw-app></body></html>\n",
    )
    .unwrap();
    std::fs::write(dir.join("assets/app-1a2b.js"), "console.log('ui')").unwrap();
    std::fs::write(dir.join("assets/app-1a2b.js.gz"), "gzipped bytes").unwrap();
    std::fs::write(dir.join("assets/app-1a2b.css"), "body{}").unwrap();
    std::fs::write(dir.join("favicon.svg"), "<svg/>").unwrap();
    std::fs::write(dir.join(".env"), "SECRET=1").unwrap();
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection to the gateway's WebSocket port.
async fn request(ws_url: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let addr = ws_url.trim_start_matches("ws://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

const PAGE: (&str, &str) = ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8");

#[tokio::test]
async fn the_websocket_port_serves_the_control_ui() {
    let ui = tempfile::tempdir().unwrap();
    fake_ui(ui.path());
    let config = json!({"gateway": {"controlUi": {"root": ui.path()}},
                        "agents": {"list": [{"id": "main", "name": "Nova"}]}});
    let gw = local_gateway(&config).await;

    let index = request(&gw.ws, "GET", "/", &[PAGE]).await;
    assert_eq!(index.status, 200, "{}", index.body);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    assert_eq!(index.header("x-frame-options"), Some("DENY"));
    assert!(index.body.contains("<html data-openclaw-control-ui-base-path=\"\" data-openclaw-terminal-enabled=\"false\" lang=\"en\">"), "{}", index.body);
    assert!(
        index.body.contains("src=\"/assets/app-1a2b.js\""),
        "{}",
        index.body
    );
    assert!(
        index.body.contains("href=\"/favicon.svg\""),
        "{}",
        index.body
    );

    // A deep link of the single-page app is the page; a missing resource is not.
    let deep = request(&gw.ws, "GET", "/chat/agent%3Amain%3Amain", &[PAGE]).await;
    assert_eq!(deep.status, 200);
    assert!(deep.body.contains("openclaw-app"));
    assert_eq!(
        request(&gw.ws, "GET", "/missing.js", &[PAGE]).await.status,
        404
    );
    let json_wanted = request(&gw.ws, "GET", "/chat", &[("Accept", "application/json")]).await;
    assert_eq!(json_wanted.status, 404);

    // Hashed assets: long-lived, precompressed when the browser takes it, from any depth.
    let js = request(
        &gw.ws,
        "GET",
        "/assets/app-1a2b.js",
        &[("Accept-Encoding", "gzip, br")],
    )
    .await;
    assert_eq!(js.status, 200);
    assert_eq!(js.body, "gzipped bytes");
    assert_eq!(js.header("content-encoding"), Some("gzip"));
    assert_eq!(
        js.header("content-type"),
        Some("application/javascript; charset=utf-8")
    );
    assert_eq!(
        js.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let plain = request(&gw.ws, "GET", "/chat/assets/app-1a2b.js", &[]).await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (200, "console.log('ui')")
    );
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(
        request(&gw.ws, "GET", "/assets/app-1a2b.js.gz", &[])
            .await
            .status,
        404
    );
    let icon = request(&gw.ws, "GET", "/favicon.svg", &[]).await;
    assert_eq!(
        (icon.status, icon.header("content-type")),
        (200, Some("image/svg+xml"))
    );

    // Nothing outside the folder, nothing hidden, only GET and HEAD.
    assert_eq!(
        request(&gw.ws, "GET", "/../../etc/passwd", &[])
            .await
            .status,
        404
    );
    assert_eq!(
        request(&gw.ws, "GET", "/%2e%2e/%2e%2e/etc/passwd", &[])
            .await
            .status,
        404
    );
    assert_eq!(
        request(&gw.ws, "GET", "/.env", &[("Accept", "text/plain")])
            .await
            .status,
        404
    );
    let post = request(&gw.ws, "POST", "/", &[]).await;
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
    let head = request(&gw.ws, "HEAD", "/", &[PAGE]).await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));

    // The bootstrap JSON: no secret in it.
    let boot = request(&gw.ws, "GET", "/control-ui-config.json", &[]).await;
    assert_eq!(boot.status, 200);
    let boot: Value = serde_json::from_str(&boot.body).unwrap();
    assert_eq!(boot["basePath"], "");
    assert_eq!(boot["assistantName"], "Nova");
    assert_eq!(boot["assistantAgentId"], "main");
    assert_eq!(boot["terminalEnabled"], false);
    assert!(!boot.to_string().contains(&gw.token));

    // The WebSocket on the same port is untouched.
    let client = gw.client().await.unwrap();
    assert_eq!(client.call("health", json!({})).await.unwrap()["ok"], true);
}

#[tokio::test]
async fn a_base_path_moves_the_ui_and_a_missing_ui_says_how_to_get_one() {
    let ui = tempfile::tempdir().unwrap();
    fake_ui(ui.path());
    let config = json!({"gateway": {"controlUi": {"root": ui.path(), "basePath": "ui/"}}});
    let gw = local_gateway(&config).await;
    let bare = request(&gw.ws, "GET", "/ui?x=1", &[PAGE]).await;
    assert_eq!(
        (bare.status, bare.header("location")),
        (302, Some("/ui/?x=1"))
    );
    let index = request(&gw.ws, "GET", "/ui/", &[PAGE]).await;
    assert_eq!(index.status, 200);
    assert!(index
        .body
        .contains("data-openclaw-control-ui-base-path=\"/ui\""));
    assert!(index.body.contains("src=\"/ui/assets/app-1a2b.js\""));
    assert!(index.body.contains("href=\"/ui/favicon.svg\""));
    assert_eq!(
        request(&gw.ws, "GET", "/ui/assets/app-1a2b.css", &[])
            .await
            .status,
        200
    );
    assert_eq!(request(&gw.ws, "GET", "/", &[PAGE]).await.status, 404);
    let boot = request(&gw.ws, "GET", "/ui/control-ui-config.json", &[]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&boot.body).unwrap()["basePath"],
        "/ui"
    );

    // No UI configured and none in the state dir: a 404 that says what to do.
    let bare_gw = local_gateway(&json!({})).await;
    let missing = request(&bare_gw.ws, "GET", "/", &[PAGE]).await;
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("gateway.controlUi.root"),
        "{}",
        missing.body
    );
}

#[tokio::test]
async fn long_page_requests_are_pages_and_stalled_heads_are_dropped() {
    let ui = tempfile::tempdir().unwrap();
    fake_ui(ui.path());
    let state = tempfile::tempdir().unwrap().keep();
    let config = json!({"gateway": {"controlUi": {"root": ui.path()}}});
    std::fs::write(state.join("argent.json"), config.to_string()).unwrap();
    let gw = argent_tests::Gateway::local()
        .state_dir(&state)
        .args(&["--handshake-timeout-ms", "500"])
        .start()
        .await
        .unwrap();

    // A browser's cookies for localhost can make a page request several KB long.
    let cookie = format!("other-dev-server={}", "x".repeat(6000));
    let page = request(&gw.ws, "GET", "/", &[PAGE, ("Cookie", &cookie)]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("openclaw-app"));

    // Part of a head, then silence: the socket is closed within the handshake timeout.
    let addr = gw.ws.trim_start_matches("ws://").trim_end_matches('/');
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stalled.read_to_end(&mut rest),
    )
    .await;
    // Closed (an end of stream, or a reset: the unread bytes make the kernel send RST).
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "still open after 5 s: {closed:?}"
    );

    // And the WebSocket still answers.
    let client = gw.client().await.unwrap();
    assert_eq!(client.call("health", json!({})).await.unwrap()["ok"], true);
}

/// A package tarball in npm's layout: `package/dist/control-ui/…`, plus `extra` entries.
fn package(extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut add = |path: &str, body: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw: `set_path` would refuse the `..` a hostile package carries.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, body).unwrap();
    };
    add("package/package.json", b"{\"name\":\"openclaw\"}");
    add(
        "package/dist/control-ui/index.html",
        b"<!doctype html><openclaw-app>",
    );
    add(
        "package/dist/control-ui/assets/app.js",
        b"console.log('ui')",
    );
    for (path, body) in extra {
        add(path, body);
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// An npm registry double serving one version of `openclaw`: its metadata (with the
/// tarball's integrity, or a wrong one) and the tarball.
async fn registry(tarball: Vec<u8>, honest: bool) -> String {
    use axum::routing::get;
    use base64::Engine as _;
    use sha2::Digest as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let digest = sha2::Sha512::digest(if honest { &tarball[..] } else { b"other" });
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    );
    let meta = json!({"name": "openclaw", "version": "2026.9.6", "dist": {
        "tarball": format!("{base}/openclaw/-/openclaw-2026.9.6.tgz"), "integrity": integrity}})
    .to_string();
    let app = axum::Router::new()
        .route(
            "/openclaw/2026.9.6",
            get(move || std::future::ready(([("content-type", "application/json")], meta.clone()))),
        )
        .route(
            "/openclaw/-/openclaw-2026.9.6.tgz",
            get(move || std::future::ready(tarball.clone())),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn install(registry: &str, dir: &Path) -> std::process::Output {
    tokio::process::Command::new(argent_tests::bin_dir().join("argent"))
        .args(["ui", "install", "--registry", registry, "--dir"])
        .arg(dir)
        .output()
        .await
        .unwrap()
}

/// `argent ui install` fetches the UI from the npm registry into the folder the gateway
/// serves: checked against the registry's integrity first, the UI folder only, nothing
/// outside the target, swapped in whole (a failed install leaves the old UI alone).
#[tokio::test]
async fn ui_install_fetches_the_control_ui_from_the_registry() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("control-ui");
    let hostile = package(&[("package/dist/control-ui/../../escaped.txt", b"x")]);
    let out = install(&registry(hostile, true).await, &dir).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("index.html").is_file() && dir.join("assets/app.js").is_file());
    assert!(!dir.join("package.json").exists());
    assert!(!state.path().join("escaped.txt").exists() && !Path::new("escaped.txt").exists());
    // The gateway serves what was installed.
    let gw = local_gateway(&json!({"gateway": {"controlUi": {"root": dir}}})).await;
    let page = request(&gw.ws, "GET", "/", &[PAGE]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("openclaw-app"));

    // A tarball that does not match its integrity is not unpacked; the UI stays.
    std::fs::write(dir.join("marker"), "old").unwrap();
    let out = install(&registry(package(&[]), false).await, &dir).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match its integrity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("marker").is_file());
    // A good one replaces it whole.
    let out = install(&registry(package(&[]), true).await, &dir).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("marker").exists() && dir.join("index.html").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["control-ui"], "staging folders left behind");
}
