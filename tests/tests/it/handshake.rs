//! The handshake of PROTOCOL.md §2 against a real gateway: order of the server-side checks,
//! the exact failure messages and close codes, and the `hello-ok` shape.

use std::time::Duration;

use serde_json::{json, Value};

use argent_tests::raw::{connect_frame, Next, RawWs};
use argent_tests::Gateway;

const WAIT: Duration = Duration::from_secs(5);

fn connect_with(params: Value) -> Value {
    json!({"type":"req","id":"c1","method":"connect","params":params})
}

fn cli_params(token: Option<&str>) -> Value {
    let mut p = json!({"minProtocol":3,"maxProtocol":3,
        "client":{"id":"cli","version":"test","platform":"linux","mode":"cli"}});
    if let Some(t) = token {
        p["auth"] = json!({"token": t});
    }
    p
}

/// Sends `frame` as the first frame and returns (response error, close).
async fn reject(gw: &Gateway, frame: &str) -> (Option<Value>, Next) {
    let (mut ws, _) = RawWs::open_challenged(&gw.ws).await.unwrap();
    ws.send_text(frame).await.unwrap();
    match ws.next(WAIT).await {
        Next::Frame(res) => {
            assert_eq!(res["type"], "res");
            assert_eq!(res["ok"], false, "{res}");
            let close = ws.closed(WAIT).await;
            (Some(res["error"].clone()), close)
        }
        other => (None, other),
    }
}

fn close(code: u16, reason: &str) -> Next {
    Next::Close(code, reason.to_string())
}

#[tokio::test]
async fn hello_ok_has_the_shape_real_clients_read() {
    let gw = Gateway::local().start().await.unwrap();
    let (mut ws, challenge) = RawWs::open_challenged(&gw.ws).await.unwrap();
    assert_eq!(challenge["nonce"].as_str().unwrap().len(), 36);
    assert!(challenge["ts"].as_u64().unwrap() > 0);
    ws.send_json(&connect_frame("connect-1", &gw.token))
        .await
        .unwrap();
    let Next::Frame(res) = ws.next(WAIT).await else {
        panic!("no hello")
    };
    assert_eq!(res["id"], "connect-1");
    assert_eq!(res["ok"], true);
    // (Key order is not part of the protocol: compare the set.)
    let mut keys: Vec<&String> = res.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["id", "ok", "payload", "type"],
        "no extra top-level keys"
    );
    let hello = &res["payload"];
    assert_eq!(hello["type"], "hello-ok");
    assert_eq!(hello["protocol"], 3);
    assert_eq!(hello["server"]["connId"].as_str().unwrap().len(), 36);
    let methods = hello["features"]["methods"].as_array().unwrap();
    // The methods this release handles; catalog entries not built yet are not advertised.
    assert!(methods.contains(&json!("health")) && methods.contains(&json!("agents.files.get")));
    assert!(methods.contains(&json!("chat.send")) && methods.contains(&json!("agent")));
    assert!(methods.contains(&json!("cron.add")) && methods.contains(&json!("config.patch")));
    assert!(methods.contains(&json!("tts.convert")) && methods.contains(&json!("talk.mode")));
    assert!(methods.contains(&json!("system-event")));
    assert!(methods.contains(&json!("send")) && methods.contains(&json!("channels.logout")));
    assert!(!methods.contains(&json!("terminal.create")));
    // Internal methods are never advertised.
    assert!(!methods.contains(&json!("agent.result")));
    assert!(!methods.contains(&json!("channels.webhook")));
    let events = hello["features"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 21);
    assert_eq!(
        hello["snapshot"]["sessionDefaults"]["mainSessionKey"],
        "agent:main:main"
    );
    assert_eq!(
        hello["snapshot"]["sessionDefaults"]["defaultAgentId"],
        "main"
    );
    assert!(hello["snapshot"]["presence"].is_array());
    assert!(hello["snapshot"]["health"]["ok"].as_bool().unwrap());
    assert!(hello["snapshot"]["stateVersion"]["presence"].is_u64());
    assert!(hello["snapshot"]["stateVersion"]["health"].is_u64());
    assert!(hello["snapshot"]["uptimeMs"].is_u64());
    assert_eq!(hello["policy"]["maxPayload"], 10_485_760);
    assert_eq!(hello["policy"]["maxBufferedBytes"], 15_728_640);
    assert_eq!(hello["policy"]["tickIntervalMs"], 30_000);
    assert!(
        hello.get("auth").is_none(),
        "no device token without a proven device"
    );
}

#[tokio::test]
async fn first_frame_failures_in_order() {
    let gw = Gateway::local().start().await.unwrap();

    // 1. Not JSON: no response, close 1000.
    let (error, next) = reject(&gw, "{not json").await;
    assert_eq!((error, next), (None, close(1000, "")));

    // 2. JSON but not a request: no response, close 1008.
    let (error, next) = reject(&gw, r#"{"type":"event","event":"x"}"#).await;
    assert_eq!(error, None);
    assert_eq!(next, close(1008, "invalid request frame"));

    // 2. A request with an extra key.
    let (error, next) = reject(&gw, r#"{"type":"req","id":"a","method":"connect","x":1}"#).await;
    let error = error.unwrap();
    assert_eq!(error["code"], "INVALID_REQUEST");
    assert_eq!(
        error["message"],
        "invalid request frame: at root: unexpected property 'x'"
    );
    assert_eq!(error["details"]["jsonrpcCode"], -32600);
    assert!(matches!(next, Next::Close(1008, _)));

    // 2. First request not connect.
    let (error, next) = reject(&gw, r#"{"type":"req","id":"a","method":"health"}"#).await;
    assert_eq!(
        error.unwrap()["message"],
        "invalid handshake: first request must be connect"
    );
    assert_eq!(
        next,
        close(1008, "invalid handshake: first request must be connect")
    );

    // 2. Invalid connect params (unknown client id, unknown key).
    let mut params = cli_params(Some(&gw.token));
    params["client"]["id"] = json!("ios-node");
    params["bogus"] = json!(true);
    let (error, next) = reject(&gw, &connect_with(params).to_string()).await;
    let message = error.unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("invalid connect params: "), "{message}");
    assert!(message.contains("at root: unexpected property 'bogus'"));
    assert!(message.contains("at /client/id: must be equal to one of the allowed values"));
    assert!(matches!(next, Next::Close(1008, _)));

    // 3. Protocol mismatch (a range without 3 or 4): close 1002, our highest version named.
    let mut params = cli_params(Some(&gw.token));
    params["minProtocol"] = json!(5);
    params["maxProtocol"] = json!(6);
    let (error, next) = reject(&gw, &connect_with(params).to_string()).await;
    let error = error.unwrap();
    assert_eq!(error["message"], "protocol mismatch");
    assert_eq!(error["details"]["expectedProtocol"], 4);
    assert_eq!(next, close(1002, "protocol mismatch"));

    // 4. Invalid role.
    let mut params = cli_params(Some(&gw.token));
    params["role"] = json!("root");
    let (error, next) = reject(&gw, &connect_with(params).to_string()).await;
    assert_eq!(error.unwrap()["message"], "invalid role");
    assert_eq!(next, close(1008, "invalid role"));
}

#[tokio::test]
async fn token_failures_use_the_exact_upstream_messages() {
    let gw = Gateway::local().start().await.unwrap();

    // 8d: no token, no device.
    let (error, next) = reject(&gw, &connect_with(cli_params(None)).to_string()).await;
    let error = error.unwrap();
    assert_eq!(error["code"], "NOT_PAIRED");
    assert_eq!(error["message"], "device identity required");
    assert_eq!(error["details"]["jsonrpcCode"], -32002);
    assert_eq!(next, close(1008, "device identity required"));

    // 8c: wrong token, CLI hint.
    let (error, next) = reject(&gw, &connect_with(cli_params(Some("wrong"))).to_string()).await;
    let error = error.unwrap();
    let expected = "unauthorized: gateway token mismatch (set gateway.remote.token to match gateway.auth.token)";
    assert_eq!(error["code"], "INVALID_REQUEST");
    assert_eq!(error["message"], expected);
    assert_eq!(error["details"]["reason"], "token_mismatch");
    assert_eq!(next, close(1008, &expected[..expected.len().min(120)]));

    // Generic client hint.
    let mut params = cli_params(Some("wrong"));
    params["client"] = json!({"id":"test","version":"1","platform":"linux","mode":"test"});
    let (error, _) = reject(&gw, &connect_with(params).to_string()).await;
    assert_eq!(
        error.unwrap()["message"],
        "unauthorized: gateway token mismatch (provide gateway auth token)"
    );

    // 9: a device block that does not prove anything.
    let mut params = cli_params(None);
    params["device"] = json!({"id":"ab","publicKey":"cd","signature":"ef","signedAt":1});
    let (error, _) = reject(&gw, &connect_with(params).to_string()).await;
    assert_eq!(error.unwrap()["message"], "device identity mismatch");

    // 8a: the Control UI without a device.
    let params = json!({"minProtocol":3,"maxProtocol":3,
        "client":{"id":"argent-control-ui","version":"1","platform":"web","mode":"webchat"},
        "auth":{"token": gw.token}});
    let mut ws = RawWs::open(&gw.ws, &[("origin", "http://localhost:18789")])
        .await
        .unwrap();
    ws.next(WAIT).await;
    ws.send_json(&connect_with(params)).await.unwrap();
    let Next::Frame(res) = ws.next(WAIT).await else {
        panic!()
    };
    assert_eq!(
        res["error"]["message"],
        "control ui requires HTTPS or localhost (secure context)"
    );

    // [EXT] the device role needs a paired device, never just the token.
    let mut params = cli_params(Some(&gw.token));
    params["role"] = json!("device");
    let (error, _) = reject(&gw, &connect_with(params).to_string()).await;
    assert_eq!(error.unwrap()["code"], "NOT_PAIRED");
}

#[tokio::test]
async fn password_mode_failures() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("argent.json"),
        r#"{"gateway":{"auth":{"mode":"password","password":"hunter2"}}}"#,
    )
    .unwrap();
    let gw = Gateway::local()
        .state_dir(state.path())
        .start()
        .await
        .unwrap();
    let with = |auth: Value| {
        let mut p = cli_params(None);
        p["auth"] = auth;
        connect_with(p).to_string()
    };
    // In password mode the token is not a shared secret.
    let (error, _) = reject(&gw, &with(json!({"token": "anything"}))).await;
    assert_eq!(
        error.unwrap()["message"],
        "unauthorized: gateway password missing (set gateway.remote.password to match gateway.auth.password)"
    );
    let (error, _) = reject(&gw, &with(json!({"password": "wrong"}))).await;
    assert_eq!(
        error.unwrap()["message"],
        "unauthorized: gateway password mismatch (set gateway.remote.password to match gateway.auth.password)"
    );
    let (mut ws, _) = RawWs::open_challenged(&gw.ws).await.unwrap();
    ws.send_text(&with(json!({"password": "hunter2"})))
        .await
        .unwrap();
    let Next::Frame(res) = ws.next(WAIT).await else {
        panic!("no hello")
    };
    assert_eq!(res["payload"]["type"], "hello-ok");
}

#[tokio::test]
async fn browser_clients_pass_the_origin_check() {
    let gw = Gateway::local().start().await.unwrap();
    let webchat = |token: &str| {
        connect_with(json!({"minProtocol":3,"maxProtocol":3,
            "client":{"id":"webchat","version":"1.0.0","platform":"web","mode":"webchat"},
            "role":"operator","scopes":["operator.admin","operator.approvals","operator.pairing"],
            "caps":["tool-events"],"auth":{"token":token}}))
    };
    // Opens a socket from `origin`, sends the dashboard's connect, returns the response.
    let attempt = |origin: &'static str, token: String| {
        let url = gw.ws.clone();
        async move {
            let mut ws = RawWs::open(&url, &[("origin", origin)]).await.unwrap();
            ws.next(WAIT).await;
            ws.send_json(&webchat(&token)).await.unwrap();
            let Next::Frame(res) = ws.next(WAIT).await else {
                panic!("no response")
            };
            (res, ws)
        }
    };
    // From a foreign origin: refused.
    let (res, mut ws) = attempt("http://evil.example", gw.token.clone()).await;
    assert!(res["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("origin not allowed"));
    assert!(matches!(ws.closed(WAIT).await, Next::Close(1008, _)));
    // From a loopback dashboard: the wrong token gets the dashboard's hint …
    let (res, _) = attempt("http://localhost:5173", "nope".into()).await;
    assert_eq!(
        res["error"]["message"],
        "unauthorized: gateway token mismatch (open a tokenized dashboard URL or paste token in Control UI settings)"
    );
    // … and the right one is accepted.
    let (res, _) = attempt("http://localhost:5173", gw.token.clone()).await;
    assert_eq!(res["payload"]["type"], "hello-ok");
}

#[tokio::test]
async fn handshake_deadline_closes_silent_sockets() {
    let gw = Gateway::local()
        .args(&["--handshake-timeout-ms", "300"])
        .start()
        .await
        .unwrap();
    let (mut ws, _) = RawWs::open_challenged(&gw.ws).await.unwrap();
    assert_eq!(ws.next(Duration::from_secs(3)).await, close(1000, ""));
}

#[tokio::test]
async fn after_the_handshake_connect_is_refused_but_the_socket_stays() {
    let gw = Gateway::local().start().await.unwrap();
    let client = gw.client().await.unwrap();
    let res = client
        .request("connect", cli_params(Some(&gw.token)))
        .await
        .unwrap();
    assert_eq!(
        res.error.unwrap().message,
        "connect is only valid as the first request"
    );
    let reader = gw
        .client_with(|o| o.scopes = Some(vec!["operator.read".into()]))
        .await
        .unwrap();
    let res = reader.request("connect", json!({})).await.unwrap();
    assert_eq!(res.error.unwrap().message, "missing scope: operator.admin");
    assert!(client.call("health", json!({})).await.is_ok());
}

#[tokio::test]
async fn token_is_re_read_at_every_handshake() {
    let gw = Gateway::local().start().await.unwrap();
    let before = gw.client().await.unwrap();
    let path = gw.state_dir.join("argent.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let rotated = "f".repeat(48);
    std::fs::write(&path, text.replace(&gw.token, &rotated)).unwrap();
    let old = gw.client().await;
    assert!(old.is_err(), "the old token stops working at once");
    let mut options = gw.options();
    options.token = Some(rotated);
    assert!(argent_client::Client::connect(&options).await.is_ok());
    assert!(
        before.call("health", json!({})).await.is_ok(),
        "established connections stay"
    );
    // A broken edit does not lock anyone out: the last good version stays in force.
    std::fs::write(&path, "{ \"gateway\": { oops").unwrap();
    assert!(argent_client::Client::connect(&options).await.is_ok());
}

#[tokio::test]
async fn nodes_get_no_health_events() {
    let gw = Gateway::local()
        .args(&["--tick-interval-ms", "200"])
        .start()
        .await
        .unwrap();
    let mut node = gw
        .client_with(|o| {
            o.role = Some("node".into());
            o.scopes = Some(vec![]);
            o.client_id = "node-host".into();
            o.client_mode = "node".into();
        })
        .await
        .unwrap();
    // The first event a node sees is a tick, not the welcome health an operator gets.
    let first = tokio::time::timeout(Duration::from_secs(3), node.next_event())
        .await
        .expect("an event")
        .expect("open");
    assert_eq!(first.name, "tick");
    let mut operator = gw.client().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(3), operator.next_event())
        .await
        .expect("an event")
        .expect("open");
    assert_eq!(first.name, "health");
    assert_eq!(first.seq, Some(1));
}

#[tokio::test]
async fn ticks_are_sequenced_per_connection() {
    let gw = Gateway::local()
        .args(&["--tick-interval-ms", "100"])
        .start()
        .await
        .unwrap();
    let mut client = gw.client().await.unwrap();
    assert_eq!(client.hello()["policy"]["tickIntervalMs"], 100);
    // Every broadcast event (ticks, health) takes the next seq of this connection.
    let mut seqs = Vec::new();
    let mut ticks = 0;
    while ticks < 4 {
        let event = tokio::time::timeout(Duration::from_secs(3), client.next_event())
            .await
            .expect("events keep coming")
            .expect("connection open");
        if event.name == "tick" {
            assert!(event.payload["ts"].as_u64().unwrap() > 0);
            ticks += 1;
        }
        seqs.push(event.seq.expect("broadcast events carry seq"));
    }
    assert_eq!(seqs[0], 1, "{seqs:?}");
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "seq is +1 when nothing was lost: {seqs:?}"
        );
    }
}

#[tokio::test]
async fn failed_handshakes_are_rate_limited_but_valid_credentials_pass() {
    let gw = Gateway::local()
        .args(&["--auth-failures-per-minute", "3"])
        .start()
        .await
        .unwrap();
    let wrong = connect_with(cli_params(Some("wrong"))).to_string();
    for _ in 0..3 {
        let (error, _) = reject(&gw, &wrong).await;
        assert!(error.unwrap()["message"]
            .as_str()
            .unwrap()
            .starts_with("unauthorized: gateway token mismatch"));
    }
    // Over the budget: further failures are refused as rate-limited, each for longer...
    let mut waits = Vec::new();
    for _ in 0..2 {
        let (error, next) = reject(&gw, &wrong).await;
        let error = error.unwrap();
        assert!(
            error["message"].as_str().unwrap().starts_with(
                "unauthorized: too many failed authentication attempts from this address; retry in"
            ),
            "{error}"
        );
        assert_eq!(error["retryable"], true);
        assert_eq!(error["details"]["reason"], "rate_limited");
        assert!(matches!(next, Next::Close(1008, _)));
        waits.push(error["retryAfterMs"].as_u64().unwrap());
    }
    assert!(waits[0] > 0 && waits[1] > waits[0], "{waits:?}");
    // ...while the right token from the same address still gets in (a load balancer's
    // address is everyone's).
    let client = gw.client().await.unwrap();
    assert!(client.call("health", json!({})).await.is_ok());
}

/// Sockets past the per-address cap of pending handshakes are answered with HTTP 503 and
/// `Retry-After`, not dropped; a slot freed is usable again.
#[tokio::test]
async fn too_many_pending_handshakes_get_http_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::local()
        .args(&["--pending-handshakes-per-address", "3"])
        .start()
        .await
        .unwrap();
    let address = gw.ws.trim_start_matches("ws://").to_string();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // The gateway counts a socket from its accept: give it a moment to see all three.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(&address).await.unwrap();
    extra
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, extra.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gw.client().await.is_ok(), "a freed slot serves again");
}

/// Behind a trusted proxy the limiter counts the client's forwarded address; from any other
/// peer the forwarding headers are not believed.
#[tokio::test]
async fn trusted_proxies_forward_the_client_address_to_the_limiter() {
    let wrong = connect_with(cli_params(Some("wrong"))).to_string();
    let attempt = |url: String, client: &'static str| {
        let wrong = wrong.clone();
        async move {
            let mut ws = RawWs::open(&url, &[("x-forwarded-for", client)])
                .await
                .unwrap();
            assert!(matches!(ws.next(WAIT).await, Next::Frame(_)), "challenge");
            ws.send_text(&wrong).await.unwrap();
            let Next::Frame(res) = ws.next(WAIT).await else {
                panic!("no answer")
            };
            res["error"]["message"].as_str().unwrap().to_string()
        }
    };
    let limited = |message: &str| message.contains("too many failed authentication attempts");

    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("argent.json"),
        r#"{"gateway":{"trustedProxies":["127.0.0.0/8"]}}"#,
    )
    .unwrap();
    let behind_proxy = Gateway::local()
        .state_dir(state.path())
        .args(&["--auth-failures-per-minute", "2"])
        .start()
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(!limited(
            &attempt(behind_proxy.ws.clone(), "203.0.113.7").await
        ));
    }
    assert!(limited(
        &attempt(behind_proxy.ws.clone(), "203.0.113.7").await
    ));
    assert!(
        !limited(&attempt(behind_proxy.ws.clone(), "203.0.113.8").await),
        "another client behind the same proxy is not limited"
    );

    let direct = Gateway::local()
        .args(&["--auth-failures-per-minute", "2"])
        .start()
        .await
        .unwrap();
    for client in ["203.0.113.1", "203.0.113.2"] {
        assert!(!limited(&attempt(direct.ws.clone(), client).await));
    }
    assert!(
        limited(&attempt(direct.ws.clone(), "203.0.113.3").await),
        "an untrusted peer's forwarding headers are ignored"
    );
}
