//! The edge at scale, without timing anything: what an idle connection keeps after large
//! frames, the presence list encoded once per change, presence events coalesced after a
//! mass disconnect, the control frames the writer interleaves (pongs, close replies), and the
//! upgrade response held back to leave with the challenge.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use argent_tests::raw::{connect_frame, Next, RawWs};
use argent_tests::Gateway;

/// A dashboard-like client that presence tracks (protocol 3, mode `ui`, its own instance);
/// returns it with its `hello-ok` frame's length.
async fn tracked(gw: &Gateway, n: usize) -> (RawWs, usize) {
    let (mut ws, _) = RawWs::open_challenged(&gw.ws).await.unwrap();
    let mut connect = connect_frame("c", &gw.token);
    connect["params"]["client"] = json!({"id": "gateway-client", "version": "test",
        "platform": "linux", "mode": "ui", "instanceId": format!("edge-{n}")});
    ws.send_json(&connect).await.unwrap();
    match ws.next_message(Duration::from_secs(10)).await {
        Some(Message::Text(text)) => {
            let hello: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(hello["ok"], true, "{hello}");
            (ws, text.len())
        }
        other => panic!("no hello-ok: {other:?}"),
    }
}

/// Opens `count` tracked clients, `at_once` at a time.
async fn many_tracked(gw: &Gateway, count: usize) -> (Vec<RawWs>, usize) {
    let mut held = Vec::with_capacity(count);
    let mut largest_hello = 0;
    for chunk in (0..count).collect::<Vec<_>>().chunks(25) {
        let opened = futures_util::future::join_all(chunk.iter().map(|&n| tracked(gw, n))).await;
        for (ws, hello_len) in opened {
            largest_hello = largest_hello.max(hello_len);
            held.push(ws);
        }
    }
    (held, largest_hello)
}

async fn eventually_zero(gw: &Gateway, metric: &str) -> f64 {
    let mut value = f64::NAN;
    for _ in 0..50 {
        value = gw.metric(metric).await.unwrap();
        if value == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    value
}

#[tokio::test]
async fn a_large_hello_ok_leaves_no_buffer_behind_and_the_list_is_encoded_once() {
    let gw = Gateway::local().start().await.unwrap();
    let (held, largest_hello) = many_tracked(&gw, 220).await;
    // 200 presence entries: the later `hello-ok`s carry the full list.
    assert!(largest_hello > 40_000, "hello-ok of {largest_hello} bytes");

    // Idle now: nothing queued, and no connection holds a buffer for what it once wrote.
    assert_eq!(
        eventually_zero(&gw, "argent_gateway_outbound_queue_bytes").await,
        0.0
    );
    assert_eq!(
        eventually_zero(&gw, "argent_gateway_outbound_buffer_bytes").await,
        0.0,
        "idle connections keep outbound buffers"
    );
    assert!(gw.metric("argent_gateway_connections").await.unwrap() >= 220.0);

    // Clients presence does not track (the CLI) change nothing: each `hello-ok` takes the
    // list already encoded (re-encoded at most once a second for the gateways' own `ts`).
    let builds = gw
        .metric("argent_gateway_presence_list_builds_total")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut cli = Vec::new();
    for _ in 0..60 {
        cli.push(RawWs::connected(&gw.ws, &gw.token).await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    let rebuilt = gw
        .metric("argent_gateway_presence_list_builds_total")
        .await
        .unwrap()
        - builds;
    assert!(
        rebuilt <= seconds.ceil() + 1.0,
        "the list was encoded {rebuilt} times for 60 connects in {seconds:.1} s"
    );
    drop((held, cli));
}

#[tokio::test]
async fn presence_events_are_coalesced_after_a_mass_disconnect() {
    let gw = Gateway::local().start().await.unwrap();
    let (held, _) = many_tracked(&gw, 150).await;
    let (mut observer, _) = tracked(&gw, 10_000).await;
    // Everyone else leaves at once.
    drop(held);
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        match observer.next(left).await {
            Next::Frame(frame) if frame["event"] == "presence" => events.push(frame),
            Next::Frame(_) => {}
            Next::Silent => break,
            other => panic!("the observer must stay connected: {other:?}"),
        }
    }
    // One event per short interval carrying the latest list, not one per disconnect.
    assert!(
        !events.is_empty() && events.len() <= 8,
        "{} presence events for 150 disconnects",
        events.len()
    );
    let last = events.last().unwrap();
    let instances: Vec<&str> = last["payload"]["presence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["instanceId"].as_str())
        .filter(|id| id.starts_with("edge-"))
        .collect();
    assert_eq!(instances, vec!["edge-10000"], "the last list is current");
    // And the observer's requests were answered meanwhile.
    assert!(matches!(
        observer.call("h", "health", json!({})).await,
        Next::Frame(frame) if frame["ok"] == true
    ));
}

#[tokio::test]
async fn pings_are_answered_between_messages_and_a_client_close_is_answered() {
    let gw = Gateway::local().start().await.unwrap();
    let mut ws = RawWs::connected(&gw.ws, &gw.token).await.unwrap();
    ws.send_message(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let frame = json!({"type":"req","id":"after-ping","method":"health","params":{}});
    ws.send_json(&frame).await.unwrap();
    let (mut pong, mut answered) = (None, false);
    while pong.is_none() || !answered {
        match ws.next_message(Duration::from_secs(5)).await {
            Some(Message::Pong(payload)) => pong = Some(payload.to_vec()),
            Some(Message::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).expect("whole JSON frames");
                answered |= frame["id"] == "after-ping";
            }
            Some(_) => {}
            None => panic!("ended before the pong and the answer"),
        }
    }
    assert_eq!(pong.as_deref(), Some(&b"are you there"[..]));

    ws.send_message(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let closed = ws.closed(Duration::from_secs(5)).await;
    assert!(matches!(closed, Next::Close(1000, _)), "{closed:?}");
}

#[tokio::test]
async fn a_refused_upgrade_still_gets_its_http_answer() {
    // The upgrade response is held back to leave with the challenge; a refusal must still
    // be written.
    let gw = Gateway::local().start().await.unwrap();
    let url = format!("{}/__argent__/ws", gw.ws.trim_end_matches('/'));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected HTTP 404, got {other:?}"),
    }
    // And an accepted one gets its challenge.
    let (_ws, challenge) = RawWs::open_challenged(&gw.ws).await.unwrap();
    assert!(challenge["nonce"].is_string(), "{challenge}");
}

#[tokio::test]
async fn a_client_that_pings_without_reading_holds_one_pong() {
    let gw = Gateway::local().start().await.unwrap();
    let mut ws = RawWs::connected(&gw.ws, &gw.token).await.unwrap();
    // ~12 MB of pongs to answer: far more than the sockets' buffers take while the client
    // does not read. Only the latest ping needs an answer (RFC 6455 §5.5.3).
    let payload = vec![b'p'; 125];
    for _ in 0..100_000 {
        ws.send_message(Message::Ping(payload.clone().into()))
            .await
            .unwrap();
    }
    ws.send_json(&json!({"type":"req","id":"after","method":"health","params":{}}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = gw
        .metric("argent_gateway_outbound_buffer_bytes")
        .await
        .unwrap();
    assert!(held < 64.0 * 1024.0, "{held} bytes held for pongs");
    // The connection still works once the client reads.
    let answer = ws.response("after", Duration::from_secs(30)).await;
    assert!(matches!(answer, Next::Frame(frame) if frame["ok"] == true));
}
