//! Bad input after the handshake: malformed, wrong-typed and oversized frames get the exact
//! error shape, never a panic, and never disturb another connection.

use std::time::Duration;

use serde_json::json;

use argent_tests::raw::{Next, RawWs};
use argent_tests::Gateway;

const WAIT: Duration = Duration::from_secs(5);

fn error_of(next: Next) -> serde_json::Value {
    match next {
        Next::Frame(frame) => {
            assert_eq!(frame["type"], "res", "{frame}");
            assert_eq!(frame["ok"], false, "{frame}");
            assert!(frame.get("payload").is_none());
            frame["error"].clone()
        }
        other => panic!("expected an error response, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_socket_stays_open() {
    let gw = Gateway::local().start().await.unwrap();
    let mut ws = RawWs::connected(&gw.ws, &gw.token).await.unwrap();

    ws.send_text("{oops").await.unwrap();
    let error = error_of(ws.response("invalid", WAIT).await);
    assert_eq!(error["code"], "INVALID_REQUEST");
    assert_eq!(
        error["message"],
        "invalid request frame: frame is not valid JSON"
    );
    assert_eq!(error["details"]["jsonrpcCode"], -32600);

    // A number no double holds: the request is answered as invalid, under its own id.
    ws.send_text(r#"{"type":"req","id":"big","method":"health","params":{"n":1e400}}"#)
        .await
        .unwrap();
    let error = error_of(ws.response("big", WAIT).await);
    assert_eq!(error["code"], "INVALID_REQUEST");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid request frame: frame is not valid JSON: number out of range"),
        "{error}"
    );

    ws.send_text(r#"{"type":"req","id":"x1","method":"health","extra":true}"#)
        .await
        .unwrap();
    let error = error_of(ws.response("x1", WAIT).await);
    assert_eq!(
        error["message"],
        "invalid request frame: at root: unexpected property 'extra'"
    );

    ws.send_text(r#"{"type":"req","id":"x2","method":42}"#)
        .await
        .unwrap();
    let error = error_of(ws.response("x2", WAIT).await);
    assert_eq!(
        error["message"],
        "invalid request frame: at /method: must be string"
    );

    ws.send_text(r#"{"type":"req","id":"","method":"health"}"#)
        .await
        .unwrap();
    let error = error_of(ws.response("invalid", WAIT).await);
    assert!(error["message"].as_str().unwrap().contains("at /id"));

    // Wrong param types.
    let error = error_of(ws.call("x3", "health", json!([1, 2])).await);
    assert_eq!(
        error["message"],
        "invalid health params: at root: must be object"
    );
    assert_eq!(error["details"]["jsonrpcCode"], -32602);
    let error = error_of(ws.call("x4", "health", json!({"probe": "yes"})).await);
    assert_eq!(
        error["message"],
        "invalid health params: at /probe: must be boolean"
    );

    // Unknown methods (admins see them).
    let error = error_of(ws.call("x5", "no.such.method", json!({})).await);
    assert_eq!(error["message"], "unknown method: no.such.method");
    assert_eq!(error["details"]["jsonrpcCode"], -32601);

    // A catalog method whose capability is not built yet: a clear error, never fake data.
    let error = error_of(ws.call("x6", "agents.profile.get", json!({})).await);
    assert_eq!(error["code"], "UNAVAILABLE");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("not implemented yet"));

    // Binary frames are read as UTF-8 text, like upstream.
    let frame = json!({"type":"req","id":"b1","method":"health","params":{}}).to_string();
    ws.send_binary(frame.into_bytes()).await.unwrap();
    match ws.response("b1", WAIT).await {
        Next::Frame(frame) => assert_eq!(frame["ok"], true),
        other => panic!("{other:?}"),
    }

    // Still usable.
    match ws.call("ok", "status", json!({})).await {
        Next::Frame(frame) => assert_eq!(frame["ok"], true),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn oversized_frames_close_only_their_own_connection() {
    let gw = Gateway::local().start().await.unwrap();
    let bystander = gw.client().await.unwrap();

    // After the handshake: over 10 MiB closes with 1009.
    let mut big = RawWs::connected(&gw.ws, &gw.token).await.unwrap();
    let huge = format!(
        r#"{{"type":"req","id":"h","method":"health","params":{{"pad":"{}"}}}}"#,
        "x".repeat(10 * 1024 * 1024 + 16)
    );
    let _ = big.send_text(&huge).await;
    assert!(matches!(big.closed(WAIT).await, Next::Close(1009, _)));

    // Just under the cap is fine.
    let mut fine = RawWs::connected(&gw.ws, &gw.token).await.unwrap();
    let padded = json!({"pad": "y".repeat(9 * 1024 * 1024)});
    match fine.call("p", "system-presence", padded).await {
        Next::Frame(frame) => assert!(frame["ok"].is_boolean()),
        other => panic!("{other:?}"),
    }

    // One frame of 10 MiB + 1 written in one piece: the header alone decides, and the
    // close frame arrives although the gateway never reads the payload as a message.
    let mut one_piece = RawWs::connected(&gw.ws, &gw.token).await.unwrap();
    one_piece
        .send_raw_frame(0x81, &vec![b'x'; 10 * 1024 * 1024 + 1])
        .await
        .unwrap();
    match one_piece.closed(WAIT).await {
        Next::Close(code, _) => assert_eq!(code, 1009),
        other => panic!("10 MiB + 1 in one frame: {other:?}"),
    }

    // Before the handshake the cap is 64 KiB, measured on the frame: exactly 64 KiB is read
    // (and refused as a `connect` it is not), 70,000 bytes close with 1009.
    let connect_of = |len: usize| {
        let frame = r#"{"type":"req","id":"c","method":"connect","params":{"pad":""}}"#;
        let padded = frame.replace(
            r#""pad":"""#,
            &format!(r#""pad":"{}""#, "z".repeat(len - frame.len())),
        );
        assert_eq!(padded.len(), len);
        padded
    };
    let (mut pre, _) = RawWs::open_challenged(&gw.ws).await.unwrap();
    pre.send_raw_frame(0x81, connect_of(64 * 1024).as_bytes())
        .await
        .unwrap();
    match pre.response("c", WAIT).await {
        Next::Frame(frame) => assert_eq!(frame["error"]["code"], "INVALID_REQUEST", "{frame}"),
        other => panic!("64 KiB connect: {other:?}"),
    }
    for len in [64 * 1024 + 1, 70_000] {
        let (mut pre, _) = RawWs::open_challenged(&gw.ws).await.unwrap();
        pre.send_raw_frame(0x81, connect_of(len).as_bytes())
            .await
            .unwrap();
        match pre.closed(WAIT).await {
            Next::Close(code, _) => assert_eq!(code, 1009, "{len} bytes before the handshake"),
            other => panic!("{len} bytes before the handshake: {other:?}"),
        }
    }

    // The bystander noticed nothing.
    assert!(bystander.call("health", json!({})).await.is_ok());
}

/// Protocol violations are answered with their close code (RFC 6455 §7.4.1) after the
/// handshake: reserved bits → 1002, a text frame that is not UTF-8 → 1007.
#[tokio::test]
async fn protocol_violations_close_with_their_codes() {
    let gw = Gateway::local().start().await.unwrap();
    let mut ws = RawWs::connected(&gw.ws, &gw.token).await.unwrap();
    // FIN + RSV1 + text, no extension negotiated.
    ws.send_raw_frame(0x80 | 0x40 | 0x1, b"{}").await.unwrap();
    match ws.closed(WAIT).await {
        Next::Close(code, _) => assert_eq!(code, 1002),
        other => panic!("{other:?}"),
    }
    let mut ws = RawWs::connected(&gw.ws, &gw.token).await.unwrap();
    ws.send_raw_frame(0x80 | 0x1, &[0xff, 0xfe, 0x41])
        .await
        .unwrap();
    match ws.closed(WAIT).await {
        Next::Close(code, _) => assert_eq!(code, 1007),
        other => panic!("{other:?}"),
    }
    // The same before the handshake, as the first frame.
    let violations: [(u8, &[u8], u16); 2] = [
        (0x80 | 0x40 | 0x1, b"{}", 1002),
        (0x81, &[0xff, 0xfe], 1007),
    ];
    for (first, payload, code) in violations {
        let (mut ws, _) = RawWs::open_challenged(&gw.ws).await.unwrap();
        ws.send_raw_frame(first, payload).await.unwrap();
        match ws.closed(WAIT).await {
            Next::Close(got, _) => assert_eq!(got, code, "first frame {first:#x}"),
            other => panic!("first frame {first:#x}: {other:?}"),
        }
    }
}

/// Memory per connection does not depend on past traffic: 16 connections that each sent
/// one 4 MiB message and stay open give the memory back (the WebSocket library's read
/// buffer would otherwise keep each message's capacity for the connection's life: 64 MiB).
#[tokio::test]
async fn a_large_message_leaves_no_memory_behind_on_its_connection() {
    let gw = Gateway::local().start().await.unwrap();
    let pad = "p".repeat(4 << 20);
    let mut sockets = Vec::new();
    for _ in 0..16 {
        sockets.push(RawWs::connected(&gw.ws, &gw.token).await.unwrap());
    }
    let before = gw.proc.rss_kib().unwrap();
    for (i, ws) in sockets.iter_mut().enumerate() {
        let id = format!("big{i}");
        match ws.call(&id, "health", json!({"pad": pad})).await {
            Next::Frame(frame) => assert_eq!(frame["type"], "res"),
            other => panic!("{other:?}"),
        }
    }
    let peak = gw.proc.rss_kib().unwrap();
    // jemalloc gives freed memory back within its 10 s decay (background thread).
    let settled = argent_tests::eventually(Duration::from_secs(25), || async {
        let now = gw.proc.rss_kib().ok()?;
        (now < before + 24 * 1024).then_some(now)
    })
    .await;
    assert!(
        settled.is_some(),
        "RSS before {before} KiB, after 16 x 4 MiB {peak} KiB, still {} KiB after 25 s",
        gw.proc.rss_kib().unwrap()
    );
    // The connections still work, with their fresh buffers.
    for (i, ws) in sockets.iter_mut().enumerate() {
        match ws.call(&format!("after{i}"), "health", json!({})).await {
            Next::Frame(frame) => assert_eq!(frame["ok"], true, "{frame}"),
            other => panic!("{other:?}"),
        }
    }
}
