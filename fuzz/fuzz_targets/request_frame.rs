//! `parse_request` — the gateway's reading of every text frame after the handshake
//! (gateway/src/ws/connection.rs, with `session.protocol.extra_request_keys()`) — over
//! arbitrary UTF-8, with protocol 3's keys (none) and protocol 4's (`traceparent`,
//! `expectedProfileId`).
//!
//! Why: this is the one parser every authenticated byte goes through, and its answers are
//! the protocol (PROTOCOL.md §1.2–§1.3, PROTOCOL-v4.md §2). Checked, beyond "no panic":
//! * a request it accepts has a non-empty `id` and `method`, only the allowed top-level
//!   keys, and re-encoded as a plain frame it parses again (even strictly) to the same
//!   request; the `res` frame answering it echoes its id;
//! * the two entry points (`parse_request` on text, `request_from_value` on a value) agree;
//! * protocol 4 accepts everything protocol 3 does, as the same request, and more only
//!   when one of its two extra keys is present;
//! * every refusal is `INVALID_REQUEST` / -32600 `invalid request frame: …`, answered to the
//!   client's own id whenever it sent a usable one, as a well-formed `res` frame; `NotJson`
//!   only for text that is not JSON, `NotRequest` only for JSON that is not a `req` object.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

use argent_fuzz::{check_error_frame, json_eq};
use argent_proto::errors::{jsonrpc, ErrorCode};
use argent_proto::frames::{encode_ok, parse_request, request_from_value, FrameError, Request};
use argent_proto::version::Protocol;

const BASE_KEYS: [&str; 4] = ["type", "id", "method", "params"];
const PREFIX: &str = "invalid request frame: ";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let value = serde_json::from_str::<Value>(text).ok();
    let v3 = check(text, value.as_ref(), Protocol::V3.extra_request_keys());
    let v4 = check(text, value.as_ref(), Protocol::V4.extra_request_keys());
    match (&v3, &v4) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{text:?}"),
        (Ok(_), Err(e)) => panic!("protocol 4 refuses what protocol 3 accepts: {e:?} for {text:?}"),
        (Err(_), Ok(_)) => {
            let obj = value
                .as_ref()
                .and_then(Value::as_object)
                .expect("accepted: an object");
            assert!(
                Protocol::V4
                    .extra_request_keys()
                    .iter()
                    .any(|key| obj.contains_key(*key)),
                "protocol 4 accepted more without its extra keys: {text:?}"
            );
        }
        (Err(_), Err(_)) => {}
    }
});

fn check(text: &str, value: Option<&Value>, extra: &[&str]) -> Result<Request, FrameError> {
    let result = parse_request(text, extra);
    if let Some(value) = value {
        assert_eq!(request_from_value(value.clone(), extra), result, "{text:?}");
    }
    match &result {
        Ok(request) => accepted(request, value.expect("accepted text is JSON"), extra),
        Err(err) => refused(err, value),
    }
    result
}

fn accepted(request: &Request, value: &Value, extra: &[&str]) {
    assert!(!request.id.is_empty() && !request.method.is_empty());
    let obj = value.as_object().expect("a request is an object");
    assert_eq!(obj.get("type"), Some(&json!("req")));
    assert_eq!(obj.get("id"), Some(&json!(request.id)));
    assert_eq!(obj.get("method"), Some(&json!(request.method)));
    assert_eq!(obj.get("params"), request.params.as_ref());
    for (key, v) in obj {
        if extra.contains(&key.as_str()) {
            let chars = v.as_str().map(|s| s.chars().count());
            assert!(matches!(chars, Some(1..=128)), "{key}: {v}");
        } else {
            assert!(
                BASE_KEYS.contains(&key.as_str()),
                "unexpected key {key} accepted"
            );
        }
    }
    if request.params.is_none() {
        assert_eq!(request.params_or_empty(), json!({}));
    }

    // Re-encoded without the optional keys, it reads back the same, even strictly.
    let mut frame = json!({"type": "req", "id": request.id, "method": request.method});
    if let Some(params) = &request.params {
        frame["params"] = params.clone();
    }
    let again = parse_request(&frame.to_string(), &[]).expect("a re-encoded request parses");
    assert_eq!(again.id, request.id);
    assert_eq!(again.method, request.method);
    match (&again.params, &request.params) {
        (Some(a), Some(b)) => assert!(json_eq(a, b), "{a} != {b}"),
        (None, None) => {}
        (a, b) => panic!("params changed: {a:?} vs {b:?}"),
    }

    // The answer echoes the id, whatever characters it holds.
    let reply: Value = serde_json::from_str(&encode_ok(&request.id, &json!({}))).expect("JSON");
    assert_eq!(reply["id"], request.id.as_str());
    assert_eq!(reply["type"], "res");
    assert_eq!(reply["ok"], true);
}

fn refused(err: &FrameError, value: Option<&Value>) {
    let id = err.reply_id();
    assert!(!id.is_empty());
    let error = err.to_error();
    assert_eq!(error.code, ErrorCode::InvalidRequest);
    assert_eq!(error.jsonrpc_code(), jsonrpc::INVALID_REQUEST);
    assert!(
        error.message.starts_with(PREFIX) && error.message.len() > PREFIX.len(),
        "{:?}",
        error.message
    );
    check_error_frame(id, &error);

    // The client's own id, whenever it sent a usable one and the frame is JSON.
    if let Some(sent) = value
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if !matches!(err, FrameError::NotRequest { .. }) {
            assert_eq!(id, sent);
        }
    }

    match err {
        FrameError::NotJson => assert!(value.is_none(), "JSON text reported as not JSON"),
        FrameError::NotRequest { id } => {
            let value = value.expect("NotRequest is for JSON text");
            let is_req = value
                .as_object()
                .is_some_and(|o| o.get("type").and_then(Value::as_str) == Some("req"));
            assert!(!is_req, "a req object reported as not a request");
            if let Some(id) = id {
                assert_eq!(value["id"], id.as_str());
            }
        }
        FrameError::Invalid { id, detail } => {
            assert!(!detail.trim().is_empty());
            if let Some(id) = id {
                assert!(!id.is_empty());
            }
            if value.is_none() {
                // Not JSON as a value, answered only because the id could still be read.
                assert!(id.is_some(), "{detail}");
                assert!(detail.starts_with("frame is not valid JSON"), "{detail}");
            }
        }
    }
}
