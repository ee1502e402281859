//! The Control UI (the browser dashboard) over plain HTTP on the WebSocket port, as the
//! upstream gateway serves it, so that one URL opens the dashboard of the gateway that
//! served it: the UI builds its WebSocket URL from the page's own location and base path.
//!
//! * The files come from `gateway.controlUi.root` (default `<state dir>/control-ui`), e.g.
//!   the `dist/control-ui` folder of the `openclaw` npm package; `gateway.controlUi.basePath`
//!   moves everything under a path; `gateway.controlUi.enabled: false` turns it off.
//! * `index.html` is rewritten as upstream does: relative URLs under the base path, and the
//!   `<html>` tag carries `data-openclaw-control-ui-base-path` and
//!   `data-openclaw-terminal-enabled`.
//! * Deep links get `index.html` (SPA fallback) when the browser asks for HTML; a missing
//!   file with a known extension is a 404.
//! * `assets/*` are content-hashed: cached for a year, served from their `.br`/`.gz`
//!   siblings when the browser accepts them. Everything else is `no-cache`.
//! * `/control-ui-config.json` answers upstream's bootstrap shape. It holds no secret; the
//!   token reaches the UI in the URL fragment (`#token=…`), never from the server.
//!
//! Only `GET` and `HEAD`; paths are resolved inside the root (no `..`, no hidden files).
//! Requests under `/channels/` are chat platforms' webhooks (`crate::channel_webhooks`).

use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpStream;

use crate::context::Ctx;

/// How long a kept-alive connection may take to send its next request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A file larger than this is not served (a built UI's largest bundle is a few MB).
const MAX_FILE_BYTES: u64 = 32 << 20;

type Answer = Response<Full<Bytes>>;

/// Serves plain HTTP requests on an accepted connection until the client closes it.
pub async fn serve(ctx: Arc<Ctx>, tcp: TcpStream) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let ctx = ctx.clone();
        async move {
            if request
                .uri()
                .path()
                .starts_with(crate::channel_webhooks::PREFIX)
            {
                let mut answer = crate::channel_webhooks::answer(&ctx, request).await;
                secure(answer.headers_mut());
                return Ok::<_, Infallible>(answer);
            }
            Ok::<_, Infallible>(
                answer(&ctx, request.method(), request.uri(), request.headers()).await,
            )
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), service)
        .await;
    if let Err(err) = served {
        tracing::debug!(%err, "control UI connection ended");
    }
}

/// Where the UI is served from now (the shared config may change at any time).
struct Site {
    root: PathBuf,
    base_path: String,
}

fn site(ctx: &Ctx) -> Option<Site> {
    let config = ctx.shared_config.get().control_ui();
    if !config.enabled {
        return None;
    }
    let root = match config.root {
        Some(root) => PathBuf::from(root),
        None => ctx.state_dir.join("control-ui"),
    };
    Some(Site {
        root,
        base_path: config.base_path,
    })
}

/// Every answer carries the security headers. (hyper sends no body for `HEAD`, with the
/// `Content-Length` of the `GET`.)
async fn answer(ctx: &Ctx, method: &Method, uri: &http::Uri, headers: &HeaderMap) -> Answer {
    let mut answer = route(ctx, method, uri, headers).await;
    secure(answer.headers_mut());
    answer
}

async fn route(ctx: &Ctx, method: &Method, uri: &http::Uri, headers: &HeaderMap) -> Answer {
    if method != Method::GET && method != Method::HEAD {
        let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        answer
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return answer;
    }
    let Some(site) = site(ctx) else {
        return text(
            StatusCode::NOT_FOUND,
            "the Control UI is turned off (gateway.controlUi.enabled)\n",
        );
    };
    let path = uri.path();
    let base = site.base_path.as_str();
    if !base.is_empty() && path == base {
        let location = match uri.query() {
            Some(query) => format!("{base}/?{query}"),
            None => format!("{base}/"),
        };
        return redirect(&location);
    }
    let Some(rest) = path.strip_prefix(base).filter(|rest| rest.starts_with('/')) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if matches!(
        rest,
        "/control-ui-config.json" | "/__openclaw/control-ui-config.json"
    ) || (base.is_empty() && rest == "/__openclaw__/control-ui-config.json")
    {
        return config_json(ctx, base);
    }
    if !is_file(&site.root.join("index.html")).await {
        return text(
            StatusCode::NOT_FOUND,
            &format!(
                "no Control UI in {}: run `argent ui install` to fetch it there, or set \
                 gateway.controlUi.root to a built UI (the dist/control-ui folder of the \
                 openclaw package; see the README)\n",
                site.root.display()
            ),
        );
    }
    file_answer(&site, rest, headers).await
}

async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

/// `/control-ui-config.json`: upstream's bootstrap shape, with what this gateway knows.
fn config_json(ctx: &Ctx, base_path: &str) -> Answer {
    let config = ctx.shared_config.get();
    let agents = config.agents();
    let default = agents.agents.iter().find(|a| a.id == agents.default_id);
    let name = default
        .and_then(|a| a.name.clone())
        .unwrap_or_else(|| "Assistant".to_string());
    let avatar = name.chars().next().map(String::from).unwrap_or_default();
    let body = json!({
        "basePath": base_path,
        "assistantName": name,
        "assistantAvatar": avatar,
        "assistantAvatarSource": null,
        "assistantAvatarStatus": null,
        "assistantAvatarReason": null,
        "assistantAgentId": agents.default_id,
        "serverVersion": ctx.version,
        "embedSandbox": "scripts",
        "allowExternalEmbedUrls": false,
        "automaticallyFetchFavicons": false,
        "communityInvite": false,
        // No terminal yet; must match the attribute on index.html, or the UI reloads.
        "terminalEnabled": false,
        "cliAgentsEnabled": false,
        "pluginAssetsRequireAuth": true,
        "pluginFrameGrants": [],
    });
    uncached(body.to_string(), "application/json; charset=utf-8")
}

/// A generated document, never cached (it follows the config).
fn uncached(body: String, content_type: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    let headers = answer.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer
}

/// A file of the UI, `index.html` for a deep link, or 404.
async fn file_answer(site: &Site, rest: &str, headers: &HeaderMap) -> Answer {
    let Some(relative) = inside_root(rest) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    // Hashed bundles may be asked for from any depth of a deep link (`/chat/assets/x.js`).
    let relative = match rest.find("/assets/") {
        Some(at) => match inside_root(&rest[at..]) {
            Some(assets) => assets,
            None => return text(StatusCode::NOT_FOUND, "not found\n"),
        },
        None => relative,
    };
    let extension = relative
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if matches!(extension.as_deref(), Some("br" | "gz")) {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let is_dir_path = rest.ends_with('/') || relative.as_os_str().is_empty();
    let path = if is_dir_path {
        site.root.join(&relative).join("index.html")
    } else {
        site.root.join(&relative)
    };
    if path.file_name().is_some_and(|n| n == "index.html") {
        return index(site).await;
    }
    if is_file(&path).await {
        // A symbolic link inside the folder must not lead out of it.
        let inside = match (
            tokio::fs::canonicalize(&path).await,
            tokio::fs::canonicalize(&site.root).await,
        ) {
            (Ok(file), Ok(root)) => file.starts_with(root),
            _ => false,
        };
        if !inside {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        let hashed = relative.starts_with("assets");
        return static_file(&path, extension.as_deref(), hashed, headers).await;
    }
    // A missing file with an extension a browser would load as a resource: 404. Anything
    // else is a route of the single-page app, when the browser wants a page.
    let resource = extension
        .as_deref()
        .is_some_and(|e| e != "html" && content_type(e) != "application/octet-stream");
    if !resource && wants_html(headers) {
        return index(site).await;
    }
    text(StatusCode::NOT_FOUND, "not found\n")
}

/// `rest` as a relative path inside the root: normal components only, none hidden.
fn inside_root(rest: &str) -> Option<PathBuf> {
    let decoded = percent_decode(rest)?;
    let mut relative = PathBuf::new();
    for component in Path::new(decoded.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) if !part.to_string_lossy().starts_with('.') => {
                relative.push(part)
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(relative)
}

fn percent_decode(path: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!decoded.contains('\0')).then_some(decoded)
}

/// Whether the request may be answered with a page: no `Accept`, or one that takes HTML.
fn wants_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        matches!(
            media,
            "text/html" | "text/*" | "*/*" | "application/xhtml+xml"
        )
    })
}

/// `index.html` with asset URLs under the base path and the attributes the UI reads.
async fn index(site: &Site) -> Answer {
    let path = site.root.join("index.html");
    let html = match tokio::fs::read_to_string(&path).await {
        Ok(html) => html,
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot read the Control UI");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the Control UI\n",
            );
        }
    };
    let base = escape_attribute(&site.base_path);
    // Relative URLs (`./assets/…`, `./favicon.svg`) would resolve against a deep link's
    // path; they are made absolute under the base path.
    let html = html
        .replace("src=\"./", &format!("src=\"{base}/"))
        .replace("href=\"./", &format!("href=\"{base}/"))
        .replacen(
            "<html",
            &format!(
                "<html data-openclaw-control-ui-base-path=\"{base}\" data-openclaw-terminal-enabled=\"false\""
            ),
            1,
        );
    uncached(html, "text/html; charset=utf-8")
}

fn escape_attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn static_file(
    path: &Path,
    extension: Option<&str>,
    hashed: bool,
    headers: &HeaderMap,
) -> Answer {
    let content_type = content_type(extension.unwrap_or(""));
    // Hashed bundles ship precompressed siblings; use one the browser accepts.
    let mut chosen = (path.to_path_buf(), None);
    if hashed && compressible(content_type) {
        for (encoding, suffix) in [("br", "br"), ("gzip", "gz")] {
            let sibling = PathBuf::from(format!("{}.{suffix}", path.display()));
            if accepts_encoding(headers, encoding) && is_file(&sibling).await {
                chosen = (sibling, Some(encoding));
                break;
            }
        }
    }
    let (file, encoding) = chosen;
    match tokio::fs::metadata(&file).await {
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        Ok(_) => {}
        Err(_) => return text(StatusCode::NOT_FOUND, "not found\n"),
    }
    let body = match tokio::fs::read(&file).await {
        Ok(body) => body,
        Err(err) => {
            tracing::warn!(file = %file.display(), %err, "cannot read a Control UI file");
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
    };
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    let out = answer.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if hashed {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    if hashed && compressible(content_type) {
        out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if let Some(encoding) = encoding {
        out.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    answer
}

fn accepts_encoding(headers: &HeaderMap, encoding: &str) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut pieces = part.split(';');
            let name = pieces.next().unwrap_or("").trim();
            let refused = pieces.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case(encoding) && !refused
        })
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/javascript")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/manifest+json")
        || content_type.starts_with("image/svg+xml")
}

fn content_type(extension: &str) -> &'static str {
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "application/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json; charset=utf-8",
        "webmanifest" => "application/manifest+json; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// Headers upstream sends with every Control UI response (its CSP, which lists hashes of
/// the inline scripts of its own build, is not: it would break other builds).
fn secure(headers: &mut HeaderMap) {
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

fn text(status: StatusCode, body: &str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}

fn redirect(location: &str) -> Answer {
    let mut answer = text(StatusCode::FOUND, "");
    if let Ok(value) = HeaderValue::from_str(location) {
        answer.headers_mut().insert(header::LOCATION, value);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        assert_eq!(
            inside_root("/assets/a.js"),
            Some(PathBuf::from("assets/a.js"))
        );
        assert_eq!(inside_root("/"), Some(PathBuf::new()));
        assert_eq!(inside_root("/../etc/passwd"), None);
        assert_eq!(inside_root("/a/%2e%2e/%2e%2e/x"), None);
        assert_eq!(inside_root("/.env"), None);
        assert_eq!(inside_root("/a%00b"), None);
    }

    #[test]
    fn a_page_is_wanted_unless_the_browser_asks_for_something_else() {
        let mut headers = HeaderMap::new();
        assert!(wants_html(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
        );
        assert!(wants_html(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_html(&headers));
    }

    #[test]
    fn encodings_refused_with_q0_are_not_used() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br;q=0"),
        );
        assert!(accepts_encoding(&headers, "gzip"));
        assert!(!accepts_encoding(&headers, "br"));
    }
}
