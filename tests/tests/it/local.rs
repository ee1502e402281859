//! The one-process default: no NATS, a generated token, the CLI, durable state, drain.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use argent_client::ClientError;
use argent_tests::{bin_dir, Gateway};

fn argent(args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("argent"))
        .args(args)
        .env_remove("ARGENT_GATEWAY_TOKEN")
        .output()
        .expect("argent runs")
}

#[tokio::test]
async fn first_run_writes_a_private_token_and_the_cli_uses_it() {
    let gw = Gateway::local().start().await.unwrap();
    let path = gw.state_dir.join("argent.json");
    assert_eq!(gw.token.len(), 48);
    assert!(gw.token.bytes().all(|b| b.is_ascii_hexdigit()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let dir = gw.state_dir.to_str().unwrap();

    let out = argent(&["call", "health", "--url", &gw.ws, "--state-dir", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["ok"], true);
    assert_eq!(health["cluster"]["mode"], "local");

    let out = argent(&[
        "call",
        "agents.files.get",
        r#"{"agentId":"main"}"#,
        "--url",
        &gw.ws,
        "--state-dir",
        dir,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(
        error["message"],
        "invalid agents.files.get params: at root: must have required property 'name'"
    );

    let out = argent(&[
        "call",
        "health",
        "{nope",
        "--url",
        &gw.ws,
        "--state-dir",
        dir,
    ]);
    assert_eq!(out.status.code(), Some(2));

    let out = argent(&["gateway", "status", "--url", &gw.ws, "--state-dir", dir]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "token:    {} (gateway.auth.token)",
            path.display()
        )),
        "{text}"
    );
    assert!(text.contains("mode local"), "{text}");
    assert!(
        text.contains("inproc://"),
        "the embedded node is listed: {text}"
    );

    let out = argent(&["call", "health", "--url", &gw.ws, "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway token mismatch"));
}

#[tokio::test]
async fn state_survives_a_restart_and_sigterm_drains() {
    let state = tempfile::tempdir().unwrap();
    let mut gw = Gateway::local()
        .state_dir(state.path())
        .start()
        .await
        .unwrap();
    let mut client = gw.client().await.unwrap();
    client
        .call(
            "agents.files.set",
            json!({"agentId":"main","name":"IDENTITY.md","content":"- Name: Ferris\n- Emoji: 🦀"}),
        )
        .await
        .unwrap();

    let status = gw.proc.terminate(Duration::from_secs(10)).unwrap();
    let shutdown = client
        .wait_event("shutdown", Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(shutdown.payload["reason"], "gateway restarting");
    assert_eq!(
        client.closed(Duration::from_secs(5)).await.unwrap().code,
        1012
    );
    assert!(status.success());

    let gw = Gateway::local()
        .state_dir(state.path())
        .start()
        .await
        .unwrap();
    let client = gw.client().await.unwrap();
    let identity = client.call("agent.identity.get", json!({})).await.unwrap();
    assert_eq!(identity["name"], "Ferris");
    assert_eq!(identity["emoji"], "🦀");
}

#[tokio::test]
async fn without_a_node_forwarded_methods_say_so() {
    let gw = Gateway::local()
        .arg("--no-embedded-node")
        .start()
        .await
        .unwrap();
    let client = gw.client().await.unwrap();
    match client.call("agents.list", json!({})).await {
        Err(ClientError::Call(e)) => {
            assert_eq!(e.code, "UNAVAILABLE");
            assert!(e.message.contains("no live node-agent"), "{}", e.message);
            assert_eq!(e.retryable, Some(true));
        }
        other => panic!("{other:?}"),
    }
    let health = client.call("health", json!({})).await.unwrap();
    assert_eq!(health["cluster"]["degraded"], true);
    let (status, body) = gw.http_get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("argent_gateway_requests_total"), "{body}");
    assert_eq!(gw.http_get("/readyz").await.unwrap().0, 200);
}

/// The CLI finds a gateway that runs on another port without `--url`: from
/// `ARGENT_GATEWAY_PORT`, or from the state dir config's `gateway.port` (which `argent
/// gateway run` also listens on).
#[tokio::test]
async fn the_cli_finds_the_configured_port() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("argent.json"),
        format!(r#"{{"gateway":{{"port":{port}}}}}"#),
    )
    .unwrap();
    // Started without --port: the config's port.
    let gw = Gateway::local()
        .state_dir(state.path())
        .configured_port()
        .start()
        .await
        .unwrap();
    assert_eq!(gw.ws, format!("ws://127.0.0.1:{port}"));
    let dir = state.path().to_str().unwrap();
    let status = |env: Option<(&str, String)>| {
        let mut command = Command::new(bin_dir().join("argent"));
        command
            .args(["gateway", "status", "--state-dir", dir])
            .env_remove("ARGENT_GATEWAY_TOKEN")
            .env_remove("ARGENT_GATEWAY_URL")
            .env_remove("ARGENT_GATEWAY_PORT");
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, text) = status(None);
    assert!(ok && text.contains("mode local"), "{text}");
    let (ok, text) = status(Some(("ARGENT_GATEWAY_PORT", port.to_string())));
    assert!(ok && text.contains(&format!("127.0.0.1:{port}")), "{text}");
}

/// Ids that cannot name a stored record are refused up front, naming the field, never as
/// an internal `UNAVAILABLE` that shows the store's key layout.
#[tokio::test]
async fn bad_ids_are_refused_naming_the_field() {
    let gw = Gateway::local().start().await.unwrap();
    let client = gw.client().await.unwrap();
    for (method, params, field) in [
        (
            "device.pair.approve",
            json!({"requestId": "a b"}),
            "/requestId",
        ),
        (
            "device.pair.reject",
            json!({"requestId": "../x"}),
            "/requestId",
        ),
        (
            "device.token.revoke",
            json!({"deviceId": "a b", "role": "operator"}),
            "/deviceId",
        ),
        ("cron.remove", json!({"id": "a b"}), "/id"),
    ] {
        match client.call(method, params).await {
            Err(ClientError::Call(e)) => {
                assert_eq!(e.code, "INVALID_REQUEST", "{method}: {e:?}");
                assert!(e.message.contains(field), "{method}: {e:?}");
                assert!(
                    !e.message.contains("pending.") && !e.message.contains("job."),
                    "{e:?}"
                );
                assert_ne!(e.retryable, Some(true));
            }
            other => panic!("{method}: {other:?}"),
        }
    }
}
