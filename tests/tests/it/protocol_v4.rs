//! Protocol 4 beside protocol 3 (PROTOCOL-v4.md): raw clients offering 3..3, 3..4 and 4..4
//! against the same two-gateway cluster; v3 and v2 device signatures; scope failures per
//! version; the v4 `chat` `deltaText`/`replace` stream (also for a slow client that missed
//! deltas); the cron pagination contract; `logs.tail` and `diagnostics.stability`.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use argent_tests::device::{Attempt, Device};
use argent_tests::model_double::ModelDouble;
use argent_tests::raw::{Next, RawWs};
use argent_tests::{Gateway, Nats};

use crate::chat_cluster::{chat_cluster, gateway, node, publish_config, wait_nodes, ChatCluster};
use crate::chat_local::model_config;
use crate::slow_consumer::small_buffer_gateway;

const WAIT: Duration = Duration::from_secs(10);

/// A raw client: opens, reads the challenge, sends a CLI-style `connect` offering
/// `min..=max` with `scopes` (absent when `None`); returns the challenge, the response and
/// the socket.
async fn raw_connect(
    gw: &Gateway,
    (min, max): (u64, u64),
    scopes: Option<&[&str]>,
    tweak: impl FnOnce(&mut Value),
) -> (Value, Value, RawWs) {
    let (mut ws, challenge) = RawWs::open_challenged(&gw.ws).await.unwrap();
    let mut params = json!({"minProtocol": min, "maxProtocol": max,
        "client": {"id": "cli", "version": "2026.9.6", "platform": "linux", "mode": "cli"},
        "auth": {"token": gw.token}});
    if let Some(scopes) = scopes {
        params["scopes"] = json!(scopes);
    }
    tweak(&mut params);
    ws.send_json(&json!({"type": "req", "id": "c", "method": "connect", "params": params}))
        .await
        .unwrap();
    let Next::Frame(response) = ws.response("c", WAIT).await else {
        panic!("no connect response")
    };
    (challenge, response, ws)
}

async fn call(ws: &mut RawWs, id: &str, method: &str, params: Value) -> Value {
    match ws.call(id, method, params).await {
        Next::Frame(frame) => frame,
        other => panic!("{method}: {other:?}"),
    }
}

fn methods(hello: &Value) -> Vec<String> {
    hello["payload"]["features"]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn each_connection_gets_its_own_version_on_one_cluster() {
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let secret_key = "sk-provider-secret-123";
    publish_config(
        &nats,
        &json!({"models": {"providers": {"p": {"api": "openai-completions", "baseUrl": "http://127.0.0.1:9/v1/", "apiKey": secret_key, "models": [{"id": "m"}]}}}}),
    )
    .await;

    for gw in [&a, &b] {
        // 3..3 → 3, the v3 hello-ok exactly as before.
        let (challenge, v3, mut ws3) = raw_connect(gw, (3, 3), None, |_| {}).await;
        assert!(challenge["ts"].is_u64());
        assert_eq!(challenge["capabilities"], json!([]));
        assert_eq!(v3["payload"]["protocol"], 3);
        assert!(
            v3["payload"].get("auth").is_none(),
            "no token issued, no auth"
        );
        assert!(v3["payload"]["features"].get("capabilities").is_none());
        assert!(!methods(&v3).contains(&"chat.startup".to_string()));
        assert!(!methods(&v3).contains(&"chat.message.get".to_string()));
        // 3..4 → 4; 4..4 → 4, `auth` always, with the enforced scopes.
        let (_, mixed, _ws) = raw_connect(gw, (3, 4), Some(&["operator.read"]), |_| {}).await;
        assert_eq!(mixed["payload"]["protocol"], 4);
        let (_, v4, mut ws4) = raw_connect(gw, (4, 4), Some(&["operator.read"]), |_| {}).await;
        assert_eq!(v4["payload"]["protocol"], 4);
        assert_eq!(
            v4["payload"]["auth"],
            json!({"role": "operator", "scopes": ["operator.read"]})
        );
        assert_eq!(v4["payload"]["features"]["capabilities"], json!([]));
        let listed = methods(&v4);
        for m in [
            "chat.startup",
            "chat.message.get",
            "diagnostics.stability",
            "logs.tail",
            "cron.list",
        ] {
            assert!(listed.contains(&m.to_string()), "{m}");
        }
        assert!(v4["payload"]["policy"]["maxPayload"].is_u64());

        // Scope failures per version.
        let refused = call(&mut ws4, "1", "config.set", json!({"raw": "{}"})).await;
        assert_eq!(
            refused["error"],
            json!({"code": "FORBIDDEN", "message": "missing scope: operator.admin",
                   "details": {"code": "MISSING_SCOPE", "missingScope": "operator.admin",
                               "requiredScopes": ["operator.admin"], "jsonrpcCode": -32002}})
        );
        let (_, _, mut ws3_read) = raw_connect(gw, (3, 3), Some(&["operator.read"]), |_| {}).await;
        let refused = call(&mut ws3_read, "1", "config.get", json!({})).await;
        assert_eq!(
            refused["error"],
            json!({"code": "INVALID_REQUEST", "message": "missing scope: operator.admin",
                   "details": {"jsonrpcCode": -32002}})
        );
        // v4 `operator.read` reads the config with every secret masked; v3 admin reads it raw.
        let config = call(&mut ws4, "2", "config.get", json!({})).await;
        assert_eq!(config["ok"], true, "{config}");
        assert!(!config.to_string().contains(secret_key), "{config}");
        assert_eq!(
            config["payload"]["config"]["models"]["providers"]["p"]["apiKey"],
            "__OPENCLAW_REDACTED__"
        );
        let full = call(&mut ws3, "2", "config.get", json!({})).await;
        assert!(full["payload"]["raw"]
            .as_str()
            .unwrap()
            .contains(secret_key));

        // v4 request frames may carry a trace context; v3 ones may not.
        let traced = json!({"type": "req", "id": "t", "method": "health",
                            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
        ws4.send_json(&traced).await.unwrap();
        let Next::Frame(ok) = ws4.response("t", WAIT).await else {
            panic!()
        };
        assert_eq!(ok["ok"], true, "{ok}");
        ws3.send_json(&traced).await.unwrap();
        let Next::Frame(bad) = ws3.response("t", WAIT).await else {
            panic!()
        };
        assert_eq!(
            bad["error"]["message"],
            "invalid request frame: at root: unexpected property 'traceparent'"
        );
        // v4-only methods are unknown to v3 connections.
        let unknown = call(&mut ws3, "3", "diagnostics.stability", json!({})).await;
        assert_eq!(
            unknown["error"]["message"],
            "unknown method: diagnostics.stability"
        );
    }

    // No scopes on v4: none granted (v3 grants admin); `health` needs none.
    let (_, bare, mut ws) = raw_connect(&a, (4, 4), None, |_| {}).await;
    assert_eq!(bare["payload"]["auth"]["scopes"], json!([]));
    assert_eq!(call(&mut ws, "h", "health", json!({})).await["ok"], true);
    let status = call(&mut ws, "s", "status", json!({})).await;
    assert_eq!(status["error"]["details"]["missingScope"], "operator.read");

    // Outside 3..4: mismatch naming 4, close 1002.
    let (_, mismatch, mut ws) = raw_connect(&b, (5, 6), None, |_| {}).await;
    assert_eq!(mismatch["error"]["message"], "protocol mismatch");
    assert_eq!(mismatch["error"]["details"]["expectedProtocol"], 4);
    assert_eq!(mismatch["error"]["details"]["code"], "PROTOCOL_MISMATCH");
    assert_eq!(
        ws.closed(WAIT).await,
        Next::Close(1002, "protocol mismatch".into())
    );

    // Connect failures carry `details.code` on v4 only.
    let wrong = |p: &mut Value| p["auth"]["token"] = json!("wrong");
    let (_, v4, _) = raw_connect(&a, (4, 4), None, wrong).await;
    let details = &v4["error"]["details"];
    assert_eq!(details["code"], "AUTH_TOKEN_MISMATCH");
    assert_eq!(details["recommendedNextStep"], "update_auth_credentials");
    assert_eq!(details["canRetryWithDeviceToken"], false);
    let (_, v3, _) = raw_connect(&a, (3, 3), None, wrong).await;
    assert!(v3["error"]["details"].get("code").is_none());
    assert!(v3["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("unauthorized: gateway token mismatch"));
    // A setup code is not something this gateway issues; the Control UI's origin rule
    // applies to OpenClaw's Control UI too (no Origin header here).
    let (_, refused, _) = raw_connect(&a, (4, 4), None, |p| {
        p["auth"] = json!({"bootstrapToken": "setup-code"});
    })
    .await;
    assert_eq!(
        refused["error"]["details"]["code"],
        "AUTH_BOOTSTRAP_TOKEN_INVALID"
    );
    let (_, refused, _) = raw_connect(&a, (4, 4), None, |p| {
        p["client"] = json!({"id": "openclaw-control-ui", "version": "2026.9.6", "platform": "web", "mode": "webchat"});
    })
    .await;
    assert_eq!(
        refused["error"]["details"]["code"],
        "CONTROL_UI_ORIGIN_NOT_ALLOWED"
    );
    // OpenClaw's client ids, modes and connect additions are accepted.
    let (_, ok, _) = raw_connect(&b, (4, 4), None, |p| {
        p["client"] = json!({"id": "openclaw-tui", "version": "2026.9.6", "platform": "linux",
                             "mode": "worker", "buildId": "b1", "timeZone": "Europe/Berlin"});
        p["modelCatalog"] = json!({"agentId": "main"});
        p["auth"]["approvalRuntimeToken"] = json!("x");
    })
    .await;
    assert_eq!(ok["ok"], true, "{ok}");
}

#[tokio::test]
async fn v3_and_v2_signatures_and_v4_device_tokens() {
    let gw = Gateway::local().start().await.unwrap();
    let device = Device::new(41);
    // The node host / CLI sign v3 on a 4..4 connection; the Control UI signs v2.
    let mut hello = Value::Null;
    for v3_payload in [true, false] {
        let attempt = Attempt {
            token: Some(&gw.token),
            protocol: (4, 4),
            v3_payload,
            ..Default::default()
        };
        hello = device.connect(&gw, attempt).await.0;
        assert_eq!(hello["ok"], true, "{hello}");
        assert_eq!(hello["payload"]["protocol"], 4);
    }
    // Each shared-token connect hands out a fresh token; the latest is the live one.
    let device_token = hello["payload"]["auth"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_string();
    // v4 clients present the stored device token in `auth.deviceToken` alone.
    let (hello, _ws) = device
        .connect(
            &gw,
            Attempt {
                device_token: Some(&device_token),
                protocol: (4, 4),
                v3_payload: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(hello["payload"]["auth"]["deviceToken"], device_token);
    // A v3 payload signed for another platform fails: v4 details on v4 only.
    for (protocol, code) in [
        ((4, 4), json!("DEVICE_AUTH_SIGNATURE_INVALID")),
        ((3, 3), Value::Null),
    ] {
        let attempt = Attempt {
            token: Some(&gw.token),
            protocol,
            v3_payload: true,
            tamper: |p| p["client"]["platform"] = json!("darwin"),
            ..Default::default()
        };
        let (refused, _) = device.connect(&gw, attempt).await;
        assert_eq!(refused["error"]["message"], "device signature invalid");
        assert_eq!(refused["error"]["details"]["code"], code);
    }
}

/// A v4 node calling node-only methods we do not implement hears `unknown method`; an
/// operator calling them is refused by role.
#[tokio::test]
async fn v4_node_only_methods() {
    let gw = Gateway::local().start().await.unwrap();
    let (_, hello, mut node) = raw_connect(&gw, (4, 4), None, |p| {
        p["role"] = json!("node");
        p["client"] =
            json!({"id": "node-host", "version": "2026.9.6", "platform": "linux", "mode": "node"});
    })
    .await;
    assert_eq!(hello["ok"], true, "{hello}");
    let answer = call(&mut node, "1", "node.pending.pull", json!({})).await;
    assert_eq!(
        answer["error"]["message"],
        "unknown method: node.pending.pull"
    );
    let (_, _, mut operator) = raw_connect(&gw, (4, 4), Some(&["operator.admin"]), |_| {}).await;
    let answer = call(&mut operator, "1", "node.pending.pull", json!({})).await;
    assert_eq!(answer["error"]["message"], "unauthorized role: operator");
}

#[tokio::test]
async fn logs_tail_and_stability_report_the_live_process() {
    let gw = Gateway::local().start().await.unwrap();
    let (_, _, mut ws) = raw_connect(&gw, (4, 4), Some(&["operator.read"]), |_| {}).await;
    let logs = call(&mut ws, "1", "logs.tail", json!({"limit": 500})).await;
    let lines = logs["payload"]["lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().unwrap().contains("connected")),
        "{logs}"
    );
    // On v4 every line is a JSON object, as upstream's log file: the Logs page's columns.
    let line: Value = serde_json::from_str(lines.last().unwrap().as_str().unwrap()).unwrap();
    assert!(
        line["time"].as_str().is_some_and(|t| t.contains('T')),
        "{line}"
    );
    assert!(
        ["info", "warn", "debug", "error"].contains(&line["level"].as_str().unwrap()),
        "{line}"
    );
    assert_eq!(line["subsystem"], "gateway");
    assert!(line["message"].is_string());
    let cursor = logs["payload"]["cursor"].as_u64().unwrap();
    // The next read starts after the cursor: only lines logged since (another connect).
    let _other = raw_connect(&gw, (3, 3), None, |_| {}).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = call(&mut ws, "2", "logs.tail", json!({"cursor": cursor})).await;
        if !next["payload"]["lines"].as_array().unwrap().is_empty() {
            assert!(next["payload"]["cursor"].as_u64().unwrap() > cursor);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new lines after the cursor"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tokio::time::sleep(Duration::from_millis(600)).await;
    let report = call(&mut ws, "3", "diagnostics.stability", json!({"limit": 10})).await;
    let report = &report["payload"];
    assert!(
        report["eventLoop"]["probes"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(report["queues"]["connections"].as_u64().unwrap() >= 2);
    assert_eq!(report["capacity"], 500);
    assert!(report["events"].is_array());
}

#[tokio::test]
async fn cron_list_pages_for_v4_and_stays_whole_for_v3() {
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let _node = node(&nats, "node-1").await;
    let client = a.client().await.unwrap();
    wait_nodes(&client, 1).await;
    for i in 0..5 {
        client
            .call(
                "cron.add",
                json!({"name": format!("job {i}"), "schedule": {"kind": "every", "everyMs": 3_600_000},
                       "payload": {"kind": "systemEvent", "text": "tick"}}),
            )
            .await
            .unwrap();
    }
    let (_, _, mut v4) = raw_connect(&a, (4, 4), Some(&["operator.read"]), |_| {}).await;
    let mut seen = Vec::new();
    let mut offset = json!(0);
    let mut revision = None;
    while !offset.is_null() {
        let page = call(
            &mut v4,
            "p",
            "cron.list",
            json!({"limit": 2, "offset": offset}),
        )
        .await;
        let page = page["payload"].clone();
        assert_eq!(page["total"], 5, "{page}");
        assert_eq!(page["limit"], 2);
        let rev = page["snapshotRevision"].as_str().unwrap().to_string();
        assert!(!rev.is_empty());
        assert!(revision.replace(rev.clone()).is_none_or(|r| r == rev));
        seen.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].clone()),
        );
        assert_eq!(page["hasMore"], !page["nextOffset"].is_null());
        offset = page["nextOffset"].clone();
    }
    let distinct: std::collections::HashSet<String> =
        seen.iter().map(|id| id.to_string()).collect();
    assert_eq!(
        (seen.len(), distinct.len()),
        (5, 5),
        "every job once across the pages"
    );
    let bad = call(&mut v4, "b", "cron.list", json!({"limit": 500})).await;
    assert_eq!(bad["ok"], false);
    // v3: the whole list, no pagination keys.
    let whole = client.call("cron.list", json!({})).await.unwrap();
    assert_eq!(
        whole.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["jobs"]
    );
    assert_eq!(whole["jobs"].as_array().unwrap().len(), 5);
}

/// The v4 view of one run's `chat` events: the text rebuilt from `deltaText`/`replace`,
/// the final text, and how many deltas were replacements.
#[derive(Debug, Default)]
struct Rebuilt {
    text: String,
    final_text: Option<String>,
    replaces: usize,
    agent_events: usize,
    seqs: Vec<u64>,
    /// `session.message` payloads and `sessions.changed` keys seen meanwhile.
    messages: Vec<Value>,
    changed: Vec<String>,
}

impl Rebuilt {
    fn take(&mut self, frame: &Value, run_id: &str) -> bool {
        let p = &frame["payload"];
        match frame["event"].as_str() {
            Some("session.message") => self.messages.push(p.clone()),
            Some("sessions.changed") => self.changed.push(p["sessionKey"].as_str().unwrap().into()),
            _ => {}
        }
        if p["runId"] != run_id {
            return false;
        }
        if frame["event"] == "agent" {
            self.agent_events += 1;
            return false;
        }
        match p["state"].as_str() {
            Some("delta") => {
                let delta = p["deltaText"].as_str().expect("v4 deltas carry deltaText");
                if p["replace"] == true {
                    self.replaces += 1;
                    self.text = delta.to_string();
                } else {
                    self.text.push_str(delta);
                }
                let cumulative = p["message"]["content"][0]["text"].as_str().unwrap();
                assert_eq!(self.text, cumulative, "deltaText agrees with message");
                false
            }
            Some(_) => {
                self.final_text = Some(
                    p["message"]["content"][0]["text"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
                true
            }
            None => false,
        }
    }
}

async fn rebuild(ws: &mut RawWs, run_id: &str) -> Rebuilt {
    let mut rebuilt = Rebuilt::default();
    read_until(ws, &mut rebuilt, run_id, |_| false).await;
    rebuilt
}

/// Feeds `run_id`'s events into `rebuilt` until its end state, or until `stop` says so.
async fn read_until(ws: &mut RawWs, rebuilt: &mut Rebuilt, run_id: &str, stop: fn(&Value) -> bool) {
    loop {
        match ws.next(Duration::from_secs(30)).await {
            Next::Frame(frame) if frame["type"] == "event" => {
                // Every broadcast frame's seq: a drop anywhere shows as a gap.
                if let Some(seq) = frame["seq"].as_u64() {
                    rebuilt.seqs.push(seq);
                }
                if rebuilt.take(&frame, run_id) || stop(&frame) {
                    return;
                }
            }
            Next::Frame(_) => {}
            other => panic!("stream ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn delta_text_rebuilds_the_final_text_on_the_other_gateway() {
    let cluster = chat_cluster().await;
    let ChatCluster {
        b, client: sender, ..
    } = &cluster;
    let (_, _, mut v4) = raw_connect(b, (4, 4), Some(&["operator.write"]), |_| {}).await;
    let (_, _, mut v3) = raw_connect(b, (3, 3), None, |_| {}).await;
    // Follow the session list and this session's messages (written by the node, on A's side).
    let subscribed = call(
        &mut v4,
        "sub",
        "sessions.messages.subscribe",
        json!({"key": "v4chat"}),
    )
    .await;
    assert_eq!(
        subscribed["payload"],
        json!({"subscribed": true, "key": "agent:main:v4chat"})
    );
    let subscribed = call(&mut v4, "sub2", "sessions.subscribe", json!({})).await;
    assert_eq!(subscribed["payload"]["subscribed"], true);
    let unknown = call(&mut v3, "sub", "sessions.subscribe", json!({})).await;
    assert_eq!(
        unknown["error"]["message"],
        "unknown method: sessions.subscribe"
    );

    let words = "the quick brown fox jumps over the lazy dog ".repeat(8);
    sender
        .call(
            "chat.send",
            json!({"sessionKey": "v4chat", "message": format!("[[delay:15]] {words}"), "idempotencyKey": "run-v4"}),
        )
        .await
        .unwrap();
    let rebuilt = rebuild(&mut v4, "run-v4").await;
    let expected = format!("echo: {}", words.trim());
    assert_eq!(rebuilt.final_text.as_deref(), Some(expected.as_str()));
    assert_eq!(
        rebuilt.text, expected,
        "the deltaText stream alone rebuilds the final text"
    );
    assert!(rebuilt.agent_events > 0, "agent events still arrive on v4");
    assert_eq!(
        rebuilt.replaces, 1,
        "only the first delta replaces; then suffixes"
    );
    // The user's and the assistant's messages arrived as `session.message`, in order.
    let roles: Vec<&str> = rebuilt
        .messages
        .iter()
        .map(|m| m["message"]["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"], "{:?}", rebuilt.messages);
    assert!(rebuilt
        .messages
        .iter()
        .all(|m| m["sessionKey"] == "agent:main:v4chat"));
    assert_eq!(
        rebuilt.messages[1]["message"]["content"][0]["text"],
        expected.as_str()
    );
    assert!(rebuilt.changed.contains(&"agent:main:v4chat".to_string()));
    // The v3 socket on the same gateway sees the v3 deltas.
    loop {
        let Next::Frame(frame) = v3.next(WAIT).await else {
            panic!("v3 stream ended")
        };
        assert!(frame["event"] != "session.message" && frame["event"] != "sessions.changed");
        if frame["event"] == "chat" && frame["payload"]["runId"] == "run-v4" {
            assert!(frame["payload"].get("deltaText").is_none());
            if frame["payload"]["state"] != "delta" {
                break;
            }
        }
    }
    // `chat.startup` opens the chat like `chat.history`; v4 extras are ignored.
    let startup = call(
        &mut v4,
        "s",
        "chat.startup",
        json!({"sessionKey": "v4chat", "agentId": "main", "maxChars": 1000}),
    )
    .await;
    assert_eq!(
        startup["payload"]["messages"].as_array().unwrap().len(),
        2,
        "{startup}"
    );
    // After unsubscribing, the next run of the session brings no `session.message`.
    let off = call(
        &mut v4,
        "u",
        "sessions.messages.unsubscribe",
        json!({"key": "v4chat"}),
    )
    .await;
    assert_eq!(off["payload"]["subscribed"], false);
    sender
        .call(
            "chat.send",
            json!({"sessionKey": "v4chat", "message": "again", "idempotencyKey": "run-v4b"}),
        )
        .await
        .unwrap();
    let second = rebuild(&mut v4, "run-v4b").await;
    assert_eq!(second.final_text.as_deref(), Some("echo: again"));
    assert!(second.messages.is_empty(), "{:?}", second.messages);
}

/// A v4 client that stops reading misses deltas; afterwards it gets the whole text with
/// `replace:true`, never a suffix that would corrupt its copy.
#[tokio::test]
async fn a_slow_v4_client_that_missed_deltas_is_resynchronised() {
    let (nats, gw) = small_buffer_gateway().await;
    let (_, _, mut slow) = raw_connect(&gw, (4, 4), Some(&["operator.read"]), |_| {}).await;
    let publisher = nats.client().await.unwrap();
    let publish = |run: &str, seq: usize, state: &str, text: String| {
        let payload = json!({"runId": run, "sessionKey": "agent:main:main", "seq": seq, "state": state,
                             "message": {"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": 1}});
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Argent-Droppable", if state == "delta" { "1" } else { "0" });
        publisher.publish_with_headers("argent.evt.chat", headers, Bytes::from(payload.to_string()))
    };
    // Run "r" grows a word at a time, between large deltas of a filler run that overflow
    // the kernel's buffers and the 1 MiB outbox while the client does not read.
    let filler = "f".repeat(32 * 1024);
    // Large too, so that its deltas are dropped along with the filler's.
    let mut text = "r".repeat(40 * 1024);
    for i in 0..1200 {
        publish("filler", i, "delta", format!("{filler}{i}"))
            .await
            .unwrap();
        if i % 10 == 0 {
            text.push_str(&format!("w{i} "));
            publish("r", i, "delta", text.clone()).await.unwrap();
        }
    }
    publisher.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A small marker still fits; the client reads up to it (its buffer drains), then the
    // run goes on and ends.
    publish("marker", 0, "delta", "m".into()).await.unwrap();
    publisher.flush().await.unwrap();
    let mut rebuilt = Rebuilt::default();
    read_until(&mut slow, &mut rebuilt, "r", |f| {
        f["payload"]["runId"] == "marker"
    })
    .await;
    for i in 0..3 {
        text.push_str(&format!("tail{i} "));
        publish("r", 2000 + i, "delta", text.clone()).await.unwrap();
    }
    publish("filler", 3000, "final", "done".into())
        .await
        .unwrap();
    publish("r", 3001, "final", text.clone()).await.unwrap();
    publisher.flush().await.unwrap();

    read_until(&mut slow, &mut rebuilt, "r", |_| false).await;
    assert_eq!(rebuilt.final_text.as_deref(), Some(text.as_str()));
    assert_eq!(
        rebuilt.text, text,
        "rebuilt exactly despite the missed deltas"
    );
    let gaps = rebuilt.seqs.windows(2).filter(|w| w[1] > w[0] + 1).count();
    assert!(gaps > 0, "the slow client missed events");
    assert!(
        rebuilt.replaces >= 2,
        "the first delta and the one after a miss are replacements ({rebuilt:?})"
    );
}

/// `usage.cost` sums the usage the runs recorded in their transcripts, priced from the
/// config; the same answer on both protocol versions.
#[tokio::test]
async fn usage_cost_sums_the_transcripts() {
    let double = ModelDouble::start().await;
    let mut config = model_config(&double);
    config["models"]["providers"]["double"]["models"][0]["cost"] =
        json!({"input": 2.0, "output": 10.0});
    let gw = crate::chat_local::local_gateway(&config).await;
    let client = gw.client().await.unwrap();
    for (i, text) in ["first question", "second, longer question about costs"]
        .iter()
        .enumerate()
    {
        let (_, last) = client
            .request_twice("agent", json!({"message": text, "idempotencyKey": format!("u{i}"), "sessionKey": format!("cost-{i}")}))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), last)
            .await
            .unwrap()
            .unwrap();
    }
    // What the transcripts say.
    let (mut input, mut output) = (0, 0);
    for i in 0..2 {
        let history = client
            .call("chat.history", json!({"sessionKey": format!("cost-{i}")}))
            .await
            .unwrap();
        let answer = history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "assistant")
            .unwrap()
            .clone();
        assert_eq!(answer["model"], "double/double-model");
        input += answer["usage"]["input"].as_u64().unwrap();
        output += answer["usage"]["output"].as_u64().unwrap();
    }
    assert!(input > 0 && output > 0);
    let (_, _, mut v4) = raw_connect(&gw, (4, 4), Some(&["operator.read"]), |_| {}).await;
    let report = call(&mut v4, "u", "usage.cost", json!({"days": 7})).await["payload"].clone();
    let totals = &report["totals"];
    assert_eq!(
        (totals["input"].as_u64(), totals["output"].as_u64()),
        (Some(input), Some(output))
    );
    assert_eq!(totals["messages"], 2);
    assert_eq!(totals["missingCostEntries"], 0);
    let expected = (input as f64 * 2.0 + output as f64 * 10.0) / 1e6;
    assert!(
        (totals["totalCost"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{report}"
    );
    let daily = report["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 1);
    assert_eq!(daily[0]["date"], report["endDate"]);
    assert_eq!(report["days"], 7);
    // A window before today is empty; malformed dates are refused.
    let old = client
        .call(
            "usage.cost",
            json!({"startDate": "2020-01-01", "endDate": "2020-01-31"}),
        )
        .await
        .unwrap();
    assert_eq!(old["daily"], json!([]));
    assert_eq!(old["totals"]["totalTokens"], 0);
    // The dashboard's Usage page: the same transcripts, per session and in aggregate.
    let usage = call(
        &mut v4,
        "s",
        "sessions.usage",
        json!({"agentScope": "all", "mode": "specific", "utcOffset": "UTC+0", "range": "7d",
               "groupBy": "instance", "limit": 1000, "includeContextWeight": false}),
    )
    .await["payload"]
        .clone();
    assert_eq!(usage["totals"]["input"].as_u64(), Some(input), "{usage}");
    assert_eq!(usage["totals"]["output"].as_u64(), Some(output));
    let rows = usage["sessions"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{usage}");
    assert!(rows.iter().all(|r| r["usage"]["messageCounts"]["user"] == 1
        && r["usage"]["messageCounts"]["assistant"] == 1
        && r["agentId"] == "main"));
    let aggregates = &usage["aggregates"];
    assert_eq!(aggregates["sessionCount"], 2);
    assert_eq!(aggregates["messages"]["total"], 4);
    assert_eq!(aggregates["byModel"][0]["model"], "double-model");
    assert_eq!(aggregates["byModel"][0]["count"], 2);
    assert_eq!(aggregates["byProvider"][0]["provider"], "double");
    assert_eq!(aggregates["byAgent"][0]["agentId"], "main");
    assert_eq!(aggregates["daily"].as_array().unwrap().len(), 1);
    assert!((aggregates["costDaily"][0]["totalCost"].as_f64().unwrap() - expected).abs() < 1e-6);
    // One session by key, an empty window, and upstream's refusals.
    let one = ok(&mut v4, "sessions.usage", json!({"key": "cost-1"})).await;
    assert_eq!(one["sessions"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["sessions"][0]["key"], "agent:main:cost-1");
    let old = ok(
        &mut v4,
        "sessions.usage",
        json!({"startDate": "2020-01-01", "endDate": "2020-01-31"}),
    )
    .await;
    assert_eq!(
        (
            old["sessions"].clone(),
            old["totals"]["totalTokens"].clone()
        ),
        (json!([]), json!(0))
    );
    assert_eq!(old["aggregates"]["costDaily"], json!([]));
    for (params, message) in [
        (
            json!({"startDate": "2020-01-01"}),
            "startDate and endDate must be provided together",
        ),
        (
            json!({"agentScope": "all", "key": "x"}),
            "agentScope=all cannot be combined with key or agentId",
        ),
        (
            json!({"mode": "specific", "utcOffset": "UTC+15"}),
            "invalid utcOffset: expected UTC-12:00 through UTC+14:00",
        ),
    ] {
        let refused = call(&mut v4, "r", "sessions.usage", params).await;
        assert_eq!(
            refused["error"]["message"],
            format!("invalid sessions.usage params: {message}")
        );
    }
    let bad = call(
        &mut v4,
        "b",
        "usage.cost",
        json!({"startDate": "yesterday"}),
    )
    .await;
    assert_eq!(
        bad["error"]["message"],
        "invalid usage.cost params: at /startDate: must be a date YYYY-MM-DD"
    );
}

/// Exec approvals across gateways: a request waits on A, a v4 operator on B sees it (event
/// and `exec.approval.list`) and decides; the waiting call answers with the decision.
#[tokio::test]
async fn exec_approvals_are_decided_on_another_gateway() {
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let asker = a.client().await.unwrap();
    let (_, _, mut approver) = raw_connect(&b, (4, 4), Some(&["operator.approvals"]), |_| {}).await;
    let waiting = tokio::spawn(async move {
        asker
            .call(
                "exec.approval.request",
                json!({"id": "ap-1", "command": "rm -rf build", "cwd": "/srv", "timeoutMs": 30000}),
            )
            .await
    });
    // The event reaches the approver on the other gateway.
    let requested = loop {
        match approver.next(WAIT).await {
            Next::Frame(f) if f["event"] == "exec.approval.requested" => {
                break f["payload"].clone()
            }
            Next::Frame(_) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(requested["id"], "ap-1");
    assert_eq!(requested["request"]["command"], "rm -rf build");
    assert_eq!(requested["request"]["host"], Value::Null);
    let list = call(&mut approver, "l", "exec.approval.list", json!({})).await;
    let rows = list["payload"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(
        (rows[0]["id"].as_str(), rows[0]["approvalKind"].as_str()),
        (Some("ap-1"), Some("exec"))
    );
    // The same id while pending is refused; bad decisions too.
    let dup = a
        .client()
        .await
        .unwrap()
        .call(
            "exec.approval.request",
            json!({"id": "ap-1", "command": "x"}),
        )
        .await;
    assert!(
        format!("{dup:?}").contains("approval id already pending"),
        "{dup:?}"
    );
    let bad = call(
        &mut approver,
        "r0",
        "exec.approval.resolve",
        json!({"id": "ap-1", "decision": "maybe"}),
    )
    .await;
    assert_eq!(bad["error"]["message"], "invalid decision");
    let ok = call(
        &mut approver,
        "r1",
        "exec.approval.resolve",
        json!({"id": "ap-1", "decision": "allow-once"}),
    )
    .await;
    assert_eq!(ok["payload"], json!({"ok": true}));
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (answer["id"].as_str(), answer["decision"].as_str()),
        (Some("ap-1"), Some("allow-once"))
    );
    assert!(answer["expiresAtMs"].as_u64().unwrap() > answer["createdAtMs"].as_u64().unwrap());
    let again = call(
        &mut approver,
        "r2",
        "exec.approval.resolve",
        json!({"id": "ap-1", "decision": "deny"}),
    )
    .await;
    assert_eq!(again["error"]["message"], "unknown approval id");
    let list = call(&mut approver, "l2", "exec.approval.list", json!({})).await;
    assert_eq!(list["payload"], json!([]));
    // Nobody decides: the request answers `decision: null` when it expires.
    let expired = b
        .client()
        .await
        .unwrap()
        .call(
            "exec.approval.request",
            json!({"command": "sleep 1", "timeoutMs": 300}),
        )
        .await
        .unwrap();
    assert_eq!(expired["decision"], Value::Null);
}

/// v4 pairing refusals carry their details and the request id in the close reason; a
/// `/reset` through `agent` needs admin on v4.
#[tokio::test]
async fn v4_pairing_details_and_reset_scope() {
    let gw = Gateway::local().start().await.unwrap();
    let attempt = Attempt {
        token: Some(&gw.token),
        protocol: (4, 4),
        v3_payload: true,
        host: Some("gateway.example.com"),
        ..Default::default()
    };
    let (refused, mut ws) = Device::new(43).connect(&gw, attempt).await;
    let error = &refused["error"];
    assert_eq!(error["code"], "NOT_PAIRED", "{refused}");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("pairing required: "));
    let details = &error["details"];
    assert_eq!(details["code"], "PAIRING_REQUIRED");
    assert_eq!(details["requestedRole"], "operator");
    let request_id = details["requestId"].as_str().unwrap().to_string();
    match ws.closed(WAIT).await {
        Next::Close(1008, reason) => assert!(
            reason.ends_with(&format!("(requestId: {request_id})")),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }

    let (_, _, mut writer) = raw_connect(&gw, (4, 4), Some(&["operator.write"]), |_| {}).await;
    let reset = call(
        &mut writer,
        "r",
        "agent",
        json!({"message": "/reset", "sessionKey": "main", "idempotencyKey": "r1"}),
    )
    .await;
    assert_eq!(reset["error"]["code"], "FORBIDDEN", "{reset}");
    assert_eq!(reset["error"]["details"]["missingScope"], "operator.admin");
}

fn ids(history: &Value) -> Vec<(String, u64)> {
    history["payload"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mark = &m["__openclaw"];
            (
                mark["id"].as_str().unwrap().to_string(),
                mark["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn first_text(message: &Value) -> &str {
    message["content"][0]["text"].as_str().unwrap()
}

/// v4 history rows carry ids and positions and cut long texts; `chat.message.get` on the
/// other gateway returns the whole message by that id; v3 history stays as stored.
#[tokio::test]
async fn cut_history_rows_are_expanded_by_id_on_the_other_gateway() {
    const MARK: &str = "\n...(truncated)...";
    let cluster = chat_cluster().await;
    let ChatCluster {
        a, b, client: v3, ..
    } = &cluster;
    let (_, _, mut on_a) = raw_connect(a, (4, 4), Some(&["operator.write"]), |_| {}).await;
    let (_, _, mut on_b) = raw_connect(b, (4, 4), Some(&["operator.read"]), |_| {}).await;
    call(
        &mut on_a,
        "s",
        "sessions.messages.subscribe",
        json!({"key": "long"}),
    )
    .await;

    // A 18,000-character answer, longer than a v4 history row shows.
    call(&mut on_a, "send", "chat.send",
        json!({"sessionKey": "long", "message": "[[long:3000]] tell me", "idempotencyKey": "run-long"}))
        .await;
    let rebuilt = rebuild(&mut on_a, "run-long").await;
    let answer = rebuilt.final_text.clone().unwrap();
    assert!(answer.chars().count() > 17_000, "{}", answer.len());

    let history = call(
        &mut on_b,
        "h",
        "chat.history",
        json!({"sessionKey": "long"}),
    )
    .await;
    let rows = history["payload"]["messages"].as_array().unwrap().clone();
    let marks = ids(&history);
    assert_eq!(rows.len(), 2, "{history}");
    assert_eq!(
        (marks[0].1, marks[1].1),
        (1, 2),
        "positions in the transcript"
    );
    assert_ne!(marks[0].0, marks[1].0);
    assert!(
        first_text(&rows[0]).ends_with("tell me"),
        "short texts whole"
    );
    let cut = first_text(&rows[1]);
    assert_eq!(
        cut,
        format!("{}{MARK}", &answer[..8_000]),
        "cut at upstream's 8,000"
    );
    // The ids are the ones `session.message` announced.
    let announced: Vec<&str> = rebuilt
        .messages
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(announced, [marks[0].0.as_str(), marks[1].0.as_str()]);
    assert_eq!(
        rebuilt.messages[1]["message"]["__openclaw"]["id"],
        marks[1].0.as_str()
    );
    // A caller's own cap, and the agent qualifying a bare key.
    let narrow = call(
        &mut on_b,
        "h2",
        "chat.history",
        json!({"sessionKey": "long", "agentId": "main", "maxChars": 100, "limit": 1}),
    )
    .await;
    let narrow_rows = narrow["payload"]["messages"].as_array().unwrap();
    assert_eq!(narrow_rows.len(), 1, "{narrow}");
    assert_eq!(
        first_text(&narrow_rows[0]),
        format!("{}{MARK}", &answer[..100])
    );
    assert_eq!(ids(&narrow), [marks[1].clone()], "the same id at any cap");

    // The whole message by its id, through the other gateway.
    let whole = call(
        &mut on_b,
        "g",
        "chat.message.get",
        json!({"sessionKey": "long", "messageId": marks[1].0}),
    )
    .await;
    assert_eq!(whole["payload"]["ok"], true, "{whole}");
    assert_eq!(first_text(&whole["payload"]["message"]), answer);
    assert_eq!(whole["payload"]["message"]["__openclaw"]["seq"], 2);
    let capped = call(&mut on_b, "g2", "chat.message.get",
        json!({"sessionKey": "agent:main:long", "agentId": "main", "messageId": marks[1].0, "maxChars": 10})).await;
    assert_eq!(
        first_text(&capped["payload"]["message"]),
        format!("{}{MARK}", &answer[..10])
    );
    for (params, reason) in [
        (
            json!({"sessionKey": "long", "messageId": "0123456789abcdef"}),
            "not_found",
        ),
        (
            json!({"sessionKey": "never-used", "messageId": marks[1].0}),
            "not_found",
        ),
    ] {
        let miss = call(&mut on_b, "m", "chat.message.get", params).await;
        assert_eq!(
            miss["payload"],
            json!({"ok": false, "unavailableReason": reason})
        );
    }
    // Bad input: the exact error shape, the socket stays usable.
    for (method, params, message) in [
        (
            "chat.message.get",
            json!({"sessionKey": "long"}),
            "invalid chat.message.get params: at root: must have required property 'messageId'",
        ),
        (
            "chat.message.get",
            json!({"sessionKey": "long", "messageId": "x", "cursor": "c"}),
            "invalid chat.message.get params: at root: unexpected property 'cursor'",
        ),
        (
            "chat.message.get",
            json!({"sessionKey": "long", "messageId": "x", "maxChars": 0}),
            "invalid chat.message.get params: at /maxChars: must be >= 1",
        ),
        (
            "chat.history",
            json!({"sessionKey": "long", "maxChars": 500_001}),
            "invalid chat.history params: at /maxChars: must be <= 500000",
        ),
        (
            "chat.history",
            json!({"sessionKey": "long", "agentId": "nobody"}),
            "invalid chat.history params: unknown agent id \"nobody\"",
        ),
        (
            "chat.history",
            json!({"sessionKey": "agent:claude:x", "agentId": "main"}),
            "agentId \"main\" does not match session key \"agent:claude:x\"",
        ),
    ] {
        let refused = call(&mut on_b, "bad", method, params).await;
        assert_eq!(refused["error"]["code"], "INVALID_REQUEST", "{refused}");
        assert_eq!(refused["error"]["message"], message);
    }

    // v3: the stored messages, whole and unmarked; no `chat.message.get`, no `maxChars`.
    let stored = v3
        .call("chat.history", json!({"sessionKey": "long"}))
        .await
        .unwrap();
    let stored_rows = stored["messages"].as_array().unwrap();
    assert_eq!(first_text(&stored_rows[1]), answer);
    assert!(stored_rows.iter().all(|m| m.get("__openclaw").is_none()));
    let err = v3
        .call(
            "chat.message.get",
            json!({"sessionKey": "long", "messageId": marks[1].0}),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown method: chat.message.get"),
        "{err}"
    );
    let err = v3
        .call(
            "chat.history",
            json!({"sessionKey": "long", "maxChars": 100}),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unexpected property 'maxChars'"),
        "{err}"
    );
}

/// `chat.startup` opens a chat from a short link: the hex prefix of the UUID its key ends
/// in, among the agent's sessions; a slug of the display name picks among several.
#[tokio::test]
async fn chat_startup_resolves_a_short_id() {
    let cluster = chat_cluster().await;
    let ChatCluster {
        a, client: admin, ..
    } = &cluster;
    let keys = [
        "agent:main:dashboard:5eed0000-1111-4222-8333-000000000001",
        "agent:main:dashboard:5eed0000-1111-4222-8333-000000000002",
        "agent:main:dashboard:abcdef12-1111-4222-8333-000000000003",
    ];
    // The first message names a session (its derived title): the second is "Trip plans".
    for (i, (key, first)) in keys
        .iter()
        .zip(["hello 0", "Trip plans", "hello 2"])
        .enumerate()
    {
        admin
            .call(
                "chat.send",
                json!({"sessionKey": key, "message": first, "idempotencyKey": format!("run-{i}")}),
            )
            .await
            .unwrap();
    }
    let titled = argent_tests::eventually(Duration::from_secs(15), || async {
        let list = admin
            .call("sessions.list", json!({"includeDerivedTitles": true}))
            .await
            .ok()?;
        let titles = list["sessions"]
            .as_array()?
            .iter()
            .filter(|s| s["derivedTitle"].is_string())
            .count();
        (titles == 3).then_some(())
    })
    .await;
    assert!(titled.is_some(), "every run ended");
    let (_, _, mut ws) = raw_connect(a, (4, 4), Some(&["operator.read"]), |_| {}).await;

    let opened = call(
        &mut ws,
        "1",
        "chat.startup",
        json!({"shortId": "ABCDEF12", "agentId": "main"}),
    )
    .await;
    let payload = &opened["payload"];
    assert_eq!(payload["sessionKey"], keys[2], "{opened}");
    assert_eq!(payload["resolution"]["key"], keys[2]);
    assert_eq!(payload["resolution"]["shortId"], "abcdef12");
    assert_eq!(payload["sessionId"], payload["resolution"]["sessionId"]);
    assert_eq!(first_text(&payload["messages"][1]), "echo: hello 2");
    assert!(payload["messages"][0]["__openclaw"]["id"].is_string());

    let ambiguous = call(
        &mut ws,
        "2",
        "chat.startup",
        json!({"shortId": "5eed0000", "agentId": "main"}),
    )
    .await;
    assert_eq!(
        ambiguous["error"]["message"],
        "shortId \"5eed0000\" matches 2 sessions of agent \"main\"; give more of the id or a slugHint"
    );
    let picked = call(
        &mut ws,
        "3",
        "chat.startup",
        json!({"shortId": "5eed0000", "agentId": "main", "slugHint": "trip-plans"}),
    )
    .await;
    assert_eq!(picked["payload"]["resolution"]["key"], keys[1], "{picked}");
    for (params, message) in [
        (
            json!({"shortId": "feedface", "agentId": "main"}),
            "no session of agent \"main\" matches shortId \"feedface\"",
        ),
        (
            json!({"shortId": "abcdef12", "agentId": "claude"}),
            "no session of agent \"claude\" matches shortId \"abcdef12\"",
        ),
        (
            json!({"shortId": "abcdef12"}),
            "invalid chat.startup params: at root: must have required property 'agentId'",
        ),
        (
            json!({"shortId": "xyz", "agentId": "main"}),
            "invalid chat.startup params: at /shortId: must be 8 to 32 hexadecimal digits",
        ),
        (
            json!({"shortId": "abcdef12", "agentId": "main", "sessionKey": "main"}),
            "invalid chat.startup params: at root: sessionKey and shortId exclude each other",
        ),
    ] {
        let refused = call(&mut ws, "x", "chat.startup", params).await;
        assert_eq!(refused["error"]["code"], "INVALID_REQUEST", "{refused}");
        assert_eq!(refused["error"]["message"], message);
    }
}

/// The one-process gateway gives v4 connections the same view (its in-process node-agent
/// learns the version too), and a message too large for one answer is `oversized`.
#[tokio::test]
async fn one_process_v4_view_and_oversized_messages() {
    const MARK: &str = "\n...(truncated)...";
    let double = ModelDouble::start().await;
    let gw = crate::chat_local::local_gateway(&model_config(&double)).await;
    let admin = gw.client().await.unwrap();
    admin
        .call(
            "chat.send",
            json!({"sessionKey": "huge", "message": "hi", "idempotencyKey": "r1"}),
        )
        .await
        .unwrap();
    let answered = argent_tests::eventually(Duration::from_secs(15), || async {
        let texts = crate::chat_local::history_texts(&admin, "huge").await;
        (texts.len() == 2).then_some(())
    })
    .await;
    assert!(answered.is_some());
    // 1.6 million four-byte characters: 6.4 MB of JSON, more than one answer carries.
    let text = "🦀".repeat(1_600_000);
    let injected = admin
        .call(
            "chat.inject",
            json!({"sessionKey": "huge", "message": text}),
        )
        .await
        .unwrap();
    let id = injected["messageId"].as_str().unwrap().to_string();
    let (_, _, mut ws) = raw_connect(&gw, (4, 4), Some(&["operator.read"]), |_| {}).await;

    let history = call(&mut ws, "h", "chat.history", json!({"sessionKey": "huge"})).await;
    let marks = ids(&history);
    assert_eq!(
        marks.len(),
        3,
        "{}",
        history["payload"]["messages"].as_array().unwrap().len()
    );
    assert_eq!(
        marks[2],
        (id.clone(), 3),
        "the injected message keeps its own id"
    );
    let rows = history["payload"]["messages"].as_array().unwrap();
    assert_eq!(
        first_text(&rows[2]),
        format!("{}{MARK}", "🦀".repeat(8_000))
    );

    let too_big = call(
        &mut ws,
        "g",
        "chat.message.get",
        json!({"sessionKey": "huge", "messageId": id, "maxChars": 2_000_000}),
    )
    .await;
    assert_eq!(
        too_big["payload"],
        json!({"ok": false, "unavailableReason": "oversized"})
    );
    let capped = call(
        &mut ws,
        "g2",
        "chat.message.get",
        json!({"sessionKey": "huge", "messageId": id}),
    )
    .await;
    assert_eq!(capped["payload"]["ok"], true);
    assert_eq!(
        first_text(&capped["payload"]["message"]),
        format!("{}{MARK}", "🦀".repeat(1_000_000)),
        "cut at the default 1,000,000 characters"
    );
}

#[tokio::test]
async fn the_control_ui_never_sees_a_secret_and_saving_keeps_it() {
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let secret = "sk-provider-secret-456";
    publish_config(
        &nats,
        &json!({"models": {"providers": {"p": {"api": "openai-completions", "baseUrl": "http://127.0.0.1:9/v1/", "apiKey": secret, "models": [{"id": "m"}]}}}}),
    )
    .await;
    let admin = ["operator.admin"];
    let (_, _, mut on_a) = raw_connect(&a, (4, 4), Some(&admin), |_| {}).await;
    let (_, _, mut on_b) = raw_connect(&b, (4, 4), Some(&admin), |_| {}).await;

    // A v4 admin (the Control UI) reads the marker, never the secret.
    let shown = call(&mut on_a, "1", "config.get", json!({})).await;
    assert!(!shown.to_string().contains(secret), "{shown}");
    let parsed = shown["payload"]["parsed"].clone();
    assert_eq!(
        parsed["models"]["providers"]["p"]["apiKey"],
        "__OPENCLAW_REDACTED__"
    );

    // Saving what it was shown, with an edit, on the other gateway: the secret stays.
    let mut edited = parsed.clone();
    edited["session"] = json!({"mainKey": "home"});
    let saved = call(
        &mut on_b,
        "2",
        "config.set",
        json!({"raw": edited.to_string(), "baseHash": shown["payload"]["hash"]}),
    )
    .await;
    assert_eq!(saved["ok"], true, "{saved}");
    let (_, _, mut v3) = raw_connect(&a, (3, 3), None, |_| {}).await;
    let stored = call(&mut v3, "3", "config.get", json!({})).await;
    assert_eq!(
        stored["payload"]["parsed"]["models"]["providers"]["p"]["apiKey"],
        secret
    );
    assert_eq!(stored["payload"]["parsed"]["session"]["mainKey"], "home");

    // A patch carrying the marker keeps it too; the base-hash rule still holds.
    let stale = call(
        &mut on_a,
        "4",
        "config.patch",
        json!({"raw": r#"{"models": {"providers": {"p": {"apiKey": "__OPENCLAW_REDACTED__"}}}}"#,
               "baseHash": shown["payload"]["hash"]}),
    )
    .await;
    assert_eq!(stale["ok"], false, "a stale base hash is refused: {stale}");
    let current = call(&mut on_a, "5", "config.get", json!({})).await;
    let patched = call(
        &mut on_a,
        "6",
        "config.patch",
        json!({"raw": r#"{"models": {"providers": {"p": {"apiKey": "__OPENCLAW_REDACTED__", "timeoutMs": 5000}}}}"#,
               "baseHash": current["payload"]["hash"]}),
    )
    .await;
    assert_eq!(patched["ok"], true, "{patched}");
    let stored = call(&mut v3, "7", "config.get", json!({})).await;
    let provider = &stored["payload"]["parsed"]["models"]["providers"]["p"];
    assert_eq!(
        (provider["apiKey"].as_str(), provider["timeoutMs"].as_u64()),
        (Some(secret), Some(5000))
    );

    // A marker where nothing is stored is refused, naming the place.
    let latest = call(&mut on_a, "8", "config.get", json!({})).await;
    let refused = call(
        &mut on_a,
        "9",
        "config.patch",
        json!({"raw": r#"{"gateway": {"auth": {"password": "__OPENCLAW_REDACTED__"}}}"#,
               "baseHash": latest["payload"]["hash"]}),
    )
    .await;
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gateway.auth.password"),
        "{refused}"
    );
}

/// A call that must succeed; its payload.
async fn ok(ws: &mut RawWs, method: &str, params: Value) -> Value {
    let answer = call(ws, method, method, params).await;
    assert_eq!(answer["ok"], true, "{method}: {answer}");
    answer["payload"].clone()
}

#[tokio::test]
async fn the_control_ui_methods_answer_with_this_systems_data() {
    use crate::chat_local::{local_gateway, run_events};
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let mut client = gw.client().await.unwrap();
    client
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": "hi", "idempotencyKey": "r1"}),
        )
        .await
        .unwrap();
    run_events(&mut client, "r1", false).await;
    let (_, _, mut ws) = raw_connect(&gw, (4, 4), Some(&["operator.admin"]), |_| {}).await;
    // sessions.describe: the row sessions.list has; null for an unknown key.
    let row = ok(
        &mut ws,
        "sessions.describe",
        json!({"key": "agent:main:main"}),
    )
    .await;
    assert_eq!(row["session"]["key"], "agent:main:main");
    assert!(row["session"]["totalTokens"].as_u64().unwrap() > 0);
    let none = ok(
        &mut ws,
        "sessions.describe",
        json!({"key": "agent:main:nothing"}),
    )
    .await;
    assert_eq!(none["session"], Value::Null);

    // sessions.list: configured agents only; attributes this system lacks select nothing.
    let listed = ok(
        &mut ws,
        "sessions.list",
        json!({"configuredAgentsOnly": true, "offset": 0}),
    )
    .await;
    assert_eq!(listed["sessions"][0]["key"], "agent:main:main");
    let archived = ok(
        &mut ws,
        "sessions.list",
        json!({"archived": true, "hasBoard": true}),
    )
    .await;
    assert_eq!(archived["sessions"], json!([]));

    // system.info: the host; environments.list: this gateway and its embedded node.
    let info = ok(&mut ws, "system.info", json!({})).await;
    assert!(
        info["cpuCount"].as_u64().unwrap() >= 1 && info["memoryTotalBytes"].as_u64().unwrap() > 0
    );
    assert!(info["pid"].as_u64().unwrap() > 0);
    let places = ok(&mut ws, "environments.list", json!({})).await;
    let ids: Vec<&str> = places["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], "gateway");
    assert!(ids.iter().any(|id| id.starts_with("node:")), "{places}");

    // models.authStatus: each configured provider, with how its key is given.
    let auth = ok(&mut ws, "models.authStatus", json!({})).await;
    let of = |id: &str| {
        auth["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(of("double")["profiles"][0]["source"], "external"); // apiKeyEnv
    assert_eq!(of("claude")["profiles"][0]["source"], "config"); // apiKey
    assert_eq!(of("claude")["status"], "static");

    // cron.runs over all jobs of an agent: a job without an agent is the default agent's.
    let job = ok(
        &mut ws,
        "cron.add",
        json!({"name": "daily", "schedule": {"kind": "cron", "expr": "0 9 * * *", "tz": "Europe/Paris"},
               "wakeMode": "now", "payload": {"kind": "audioAlert", "message": "stretch", "urgency": "warning"}}),
    )
    .await;
    let forced = ok(
        &mut ws,
        "cron.run",
        json!({"jobId": job["id"], "mode": "force"}),
    )
    .await;
    assert_eq!(forced, json!({"ok": true, "ran": true}));
    let runs = ok(
        &mut ws,
        "cron.runs",
        json!({"scope": "all", "agentId": "main", "sortDir": "desc"}),
    )
    .await;
    assert_eq!(runs["entries"][0]["jobId"], job["id"], "{runs}");
    assert_eq!(runs["total"], 1);
    let others = ok(
        &mut ws,
        "cron.runs",
        json!({"scope": "all", "agentId": "claude"}),
    )
    .await;
    assert_eq!(others["entries"], json!([]));

    // tasks.list with protocol 4's filters.
    ok(
        &mut ws,
        "tasks.add",
        json!({"agentId": "main", "title": "write the report"}),
    )
    .await;
    let tasks = ok(
        &mut ws,
        "tasks.list",
        json!({"status": ["queued", "running"], "limit": 10}),
    )
    .await;
    assert_eq!(tasks["tasks"][0]["title"], "write the report");
    let elsewhere = ok(
        &mut ws,
        "tasks.list",
        json!({"sessionKey": "agent:main:main"}),
    )
    .await;
    assert_eq!(elsewhere["tasks"], json!([]), "not the worker's session");
}

/// `diagnostics.lanes`: a session whose turn is running with another queued behind it is
/// one lane, active 1, queued 1, blocked by its own limit; once both end no lane is left.
#[tokio::test]
async fn diagnostics_lanes_show_the_run_queues() {
    use crate::chat_local::{local_gateway, run_events};
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let mut client = gw.client().await.unwrap();
    let (_, _, mut ws) = raw_connect(&gw, (4, 4), Some(&["operator.read"]), |_| {}).await;
    let idle = ok(&mut ws, "diagnostics.lanes", json!({})).await;
    assert_eq!(idle["lanes"], json!([]), "{idle}");
    for (key, message) in [("l1", "[[first:3000]] slow"), ("l2", "next")] {
        client
            .call(
                "chat.send",
                json!({"sessionKey": "lanes", "message": message, "idempotencyKey": key}),
            )
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let lane = loop {
        let report = ok(&mut ws, "diagnostics.lanes", json!({})).await;
        if let Some(lane) = report["lanes"].as_array().and_then(|l| l.first()).cloned() {
            if lane["queuedCount"] == 1 {
                assert_eq!(report["dynamic"]["queuedLaneCount"], 1, "{report}");
                break lane;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no queued lane: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lane["lane"], "session:agent:main:lanes");
    assert_eq!(
        (lane["activeCount"].clone(), lane["maxConcurrent"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(lane["blockedBy"], "lane");
    run_events(&mut client, "l2", false).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let report = ok(&mut ws, "diagnostics.lanes", json!({})).await;
        if report["lanes"] == json!([]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lane left: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The exec policy document is one for the cluster: read through one gateway, written
/// through another under the base-hash rule, and its socket token never leaves.
#[tokio::test]
async fn exec_policy_is_shared_and_written_under_the_base_hash_rule() {
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let (_, _, mut on_a) = raw_connect(&a, (4, 4), Some(&["operator.admin"]), |_| {}).await;
    let (_, _, mut on_b) = raw_connect(&b, (4, 4), Some(&["operator.admin"]), |_| {}).await;
    let empty = ok(&mut on_a, "exec.approvals.get", json!({})).await;
    assert_eq!(empty["exists"], false);
    assert_eq!(empty["file"], json!({"version": 1}));
    let policy = json!({"version": 1, "defaults": {"security": "allowlist", "ask": "on-miss",
        "askFallback": "deny"}, "socket": {"path": "/run/argent-exec.sock", "token": "forged"},
        "agents": {"main": {"allowlist": [{"pattern": "/usr/bin/git"}]}}});
    let first = ok(&mut on_a, "exec.approvals.set", json!({"file": policy})).await;
    assert_eq!(first["exists"], true);
    assert_eq!(
        first["file"]["socket"],
        json!({"path": "/run/argent-exec.sock"})
    );
    // Gateway B sees it; a write there needs the hash, and a stale hash loses.
    let seen = ok(&mut on_b, "exec.approvals.get", json!({})).await;
    assert_eq!(
        (seen["hash"].clone(), seen["file"].clone()),
        (first["hash"].clone(), first["file"].clone())
    );
    let mut changed = seen["file"].clone();
    changed["defaults"]["security"] = json!("deny");
    for (params, message) in [
        (json!({"file": changed}), "exec approvals base hash required; re-run exec.approvals.get and retry"),
        (json!({"file": changed, "baseHash": empty["hash"]}), "exec approvals changed since last load; re-run exec.approvals.get and retry"),
        (json!({"file": {"defaults": {"ask": "sometimes"}}, "baseHash": seen["hash"]}),
         "invalid exec.approvals.set params: at /file/defaults/ask: must be one of off, on-miss, always"),
    ] {
        let refused = call(&mut on_b, "x", "exec.approvals.set", params).await;
        assert_eq!(refused["error"]["code"], "INVALID_REQUEST", "{refused}");
        assert_eq!(refused["error"]["message"], message);
    }
    let second = ok(
        &mut on_b,
        "exec.approvals.set",
        json!({"file": changed, "baseHash": seen["hash"]}),
    )
    .await;
    assert_ne!(second["hash"], first["hash"]);
    let back = ok(&mut on_a, "exec.approvals.get", json!({})).await;
    assert_eq!(back["file"]["defaults"]["security"], "deny");
    // A reader without admin is refused.
    let (_, _, mut reader) = raw_connect(&a, (4, 4), Some(&["operator.read"]), |_| {}).await;
    let denied = call(&mut reader, "r", "exec.approvals.get", json!({})).await;
    assert_eq!(
        denied["error"]["details"]["missingScope"], "operator.admin",
        "{denied}"
    );
}

/// The dashboard's model and thinking pickers (`sessions.patch`): the session's next turn
/// runs on the picked model and asks it for the picked reasoning effort; the rows say so;
/// what a user may not change is refused by name, and configuring needs admin.
#[tokio::test]
async fn sessions_patch_picks_the_model_and_thinking_of_the_next_turn() {
    use crate::chat_local::{local_gateway, run_events};
    use argent_tests::model_double::Api;
    let double = ModelDouble::start().await;
    let mut config = model_config(&double);
    // Claude's model here does not reason: it offers only `off`.
    config["models"]["providers"]["claude"]["models"][0]["reasoning"] = json!(false);
    let gw = local_gateway(&config).await;
    let mut client = gw.client().await.unwrap();
    let (_, _, mut ws) = raw_connect(&gw, (4, 4), Some(&["operator.write"]), |_| {}).await;
    let hello = ok(
        &mut ws,
        "sessions.patch",
        json!({"key": "main", "model": "claude-double", "label": "Picked"}),
    )
    .await;
    assert_eq!(hello["key"], "agent:main:main");
    assert_eq!(
        (
            hello["resolved"]["modelProvider"].clone(),
            hello["resolved"]["model"].clone()
        ),
        (json!("claude"), json!("claude-double"))
    );
    assert_eq!(hello["entry"]["modelOverrideSource"], "user");
    let send =
        |text: &str, id: &str| json!({"sessionKey": "main", "message": text, "idempotencyKey": id});
    client
        .call("chat.send", send("which model answers", "p1"))
        .await
        .unwrap();
    run_events(&mut client, "p1", false).await;
    let asked = |needle: &str| {
        double
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.last_user.contains(needle))
            .unwrap()
    };
    assert_eq!(asked("which model answers").api, Api::Anthropic);

    // Back to the agent's model, with a thinking level typed as users type it.
    let back = ok(
        &mut ws,
        "sessions.patch",
        json!({"key": "main", "model": null, "thinkingLevel": "Think Harder"}),
    )
    .await;
    assert_eq!(back["resolved"]["model"], "double-model");
    assert_eq!(back["resolved"]["thinkingLevel"], "medium");
    assert!(back["resolved"]["thinkingLevels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["id"] == "high"));
    client
        .call("chat.send", send("think about it", "p2"))
        .await
        .unwrap();
    run_events(&mut client, "p2", false).await;
    let request = asked("think about it");
    assert_eq!(request.api, Api::OpenAi);
    assert_eq!(
        request.body["reasoning_effort"], "medium",
        "{}",
        request.body
    );
    let rows = ok(&mut ws, "sessions.list", json!({})).await;
    let row = rows["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "agent:main:main")
        .unwrap()
        .clone();
    assert_eq!(
        (row["label"].clone(), row["thinkingLevel"].clone()),
        (json!("Picked"), json!("medium"))
    );
    assert_eq!(
        (row["modelProvider"].clone(), row["model"].clone()),
        (json!("double"), json!("double-model"))
    );
    assert_eq!(row.get("modelOverride"), None);

    // Refusals: an unknown model or level, a setting this system lacks (admin first), a
    // runtime.
    for (params, message) in [
        (json!({"key": "main", "model": "nope/x"}), "invalid model: nope/x"),
        (json!({"key": "main", "thinkingLevel": "lots"}), "invalid thinkingLevel (use off|minimal|low|medium|high|xhigh|max|adaptive)"),
        (json!({"key": "main", "agentRuntime": "codex"}), "invalid sessions.patch params: agent runtimes cannot be chosen here: every session runs on the built-in runtime"),
    ] {
        let refused = call(&mut ws, "r", "sessions.patch", params).await;
        assert_eq!(refused["error"]["message"], message, "{refused}");
    }
    // Moving to a model that does not reason drops the level it cannot honour; asking it
    // for one is refused; a patch for a session that was reset meanwhile is refused.
    let moved = ok(
        &mut ws,
        "sessions.patch",
        json!({"key": "main", "model": "claude-double"}),
    )
    .await;
    assert_eq!(moved["entry"].get("thinkingLevel"), None, "{moved}");
    assert_eq!(
        moved["resolved"]["thinkingLevels"],
        json!([{"id": "off", "label": "Off"}])
    );
    let refused = call(
        &mut ws,
        "t",
        "sessions.patch",
        json!({"key": "main", "thinkingLevel": "high"}),
    )
    .await;
    assert_eq!(
        refused["error"]["message"],
        "invalid sessions.patch params: thinkingLevel \"high\" is not supported for claude/claude-double (use off)"
    );
    let stale = call(
        &mut ws,
        "s",
        "sessions.patch",
        json!({"key": "main", "label": "x", "expectedSessionId": "gone"}),
    )
    .await;
    assert_eq!(
        stale["error"]["message"],
        "invalid sessions.patch params: session agent:main:main is no longer gone (it was reset or removed); reload and retry"
    );
    let renamed = ok(
        &mut ws,
        "sessions.patch",
        json!({"key": "main", "label": "Renamed",
        "expectedSessionId": moved["entry"]["sessionId"]}),
    )
    .await;
    assert_eq!(renamed["entry"]["label"], "Renamed");
    let needs_admin = call(
        &mut ws,
        "a",
        "sessions.patch",
        json!({"key": "main", "contextWindow": "1m"}),
    )
    .await;
    assert_eq!(
        needs_admin["error"]["details"]["missingScope"], "operator.admin",
        "{needs_admin}"
    );
    let (_, _, mut admin) = raw_connect(&gw, (4, 4), Some(&["operator.admin"]), |_| {}).await;
    let lacking = call(
        &mut admin,
        "a",
        "sessions.patch",
        json!({"key": "main", "contextWindow": "1m", "pinned": true}),
    )
    .await;
    assert_eq!(
        lacking["error"]["message"],
        "invalid sessions.patch params: this system's sessions have no pinned, contextWindow; only label, model and thinkingLevel can be patched"
    );
}

/// The settings pages of features this system lacks get upstream's empty answers, in the
/// exact shapes the UI checks (targets echoed, required objects present); the config schema
/// is one the settings forms can render, and `config.schema.lookup` walks it.
#[tokio::test]
async fn the_settings_pages_get_honest_empty_answers() {
    let double = ModelDouble::start().await;
    let gw = crate::chat_local::local_gateway(&model_config(&double)).await;
    let (_, _, mut ws) = raw_connect(&gw, (4, 4), Some(&["operator.admin"]), |_| {}).await;
    // No params at all, as the Usage page sends it.
    let usage = call(&mut ws, "u", "usage.status", Value::Null).await;
    assert_eq!(usage["payload"]["providers"], json!([]), "{usage}");
    let themes = ok(&mut ws, "themes.list", json!({})).await;
    assert_eq!(
        (
            themes["current"]["id"].clone(),
            themes["theme"]["id"].clone()
        ),
        (json!("claw"), json!("claw"))
    );
    let github = ok(
        &mut ws,
        "tools.github.status",
        json!({"agentId": "claude", "selectedScope": "agent"}),
    )
    .await;
    assert_eq!(
        (
            github["agentId"].clone(),
            github["selectedScope"].clone(),
            github["selected"]["scope"].clone()
        ),
        (json!("claude"), json!("agent"), json!("agent"))
    );
    assert_eq!(github["effective"]["credentialState"], "unavailable");
    let unknown = call(
        &mut ws,
        "g",
        "tools.github.status",
        json!({"agentId": "nobody", "selectedScope": "system"}),
    )
    .await;
    assert_eq!(unknown["error"]["message"], "unknown agent id \"nobody\"");
    let memory = ok(&mut ws, "doctor.memory.status", json!({"agentId": "main"})).await;
    assert_eq!(
        memory["embedding"],
        json!({"ok": false, "error": "memory plugin unavailable"})
    );
    let skills = ok(&mut ws, "skills.status", json!({"agentId": "main"})).await;
    assert_eq!(
        (skills["skills"].clone(), skills["workspaceDir"].clone()),
        (json!([]), json!("argent_agents/main"))
    );
    let search = ok(&mut ws, "webSearch.status", json!({})).await;
    assert_eq!(
        (
            search["model"]["provider"].clone(),
            search["model"]["id"].clone()
        ),
        (json!("double"), json!("double-model"))
    );
    assert_eq!(search["route"]["kind"], "unavailable");
    for (method, params, field, empty) in [
        ("approval.history", json!({"limit": 50}), "items", json!([])),
        ("exec.approval.grants.list", json!({}), "grants", json!([])),
        ("worktrees.list", json!({}), "worktrees", json!([])),
        (
            "transcripts.list",
            json!({"limit": 50}),
            "sessions",
            json!([]),
        ),
        (
            "artifacts.list",
            json!({"sessionKey": "main"}),
            "artifacts",
            json!([]),
        ),
        (
            "migrations.memory.plan",
            json!({"agentId": "main", "overwrite": false}),
            "providers",
            json!([]),
        ),
    ] {
        assert_eq!(ok(&mut ws, method, params).await[field], empty, "{method}");
    }
    let unscoped = call(&mut ws, "a", "artifacts.list", json!({})).await;
    assert_eq!(
        unscoped["error"]["details"]["type"], "artifact_query_unsupported",
        "{unscoped}"
    );

    // The config schema: inlined, typed, dated as upstream dates it.
    let schema = ok(&mut ws, "config.schema", json!({})).await;
    let text = schema["schema"].to_string();
    assert!(!text.contains("$ref") && !text.contains("$defs"), "{text}");
    assert_eq!(schema["schema"]["properties"]["gateway"]["type"], "object");
    assert!(
        schema["generatedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{schema}"
    );
    let port = ok(
        &mut ws,
        "config.schema.lookup",
        json!({"path": "gateway.port"}),
    )
    .await;
    assert_eq!(port["schema"]["type"], "integer");
    let providers = ok(
        &mut ws,
        "config.schema.lookup",
        json!({"path": "models.providers.openai"}),
    )
    .await;
    assert!(
        providers["children"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["key"] == "baseUrl"),
        "{providers}"
    );
    let missing = call(
        &mut ws,
        "l",
        "config.schema.lookup",
        json!({"path": "plugins.entries.memory.config"}),
    )
    .await;
    assert_eq!(missing["error"]["message"], "config schema path not found");
}

/// Presence per protocol version, as upstream: on protocol 4 backends and probes are not
/// people at a screen and stay out of presence; protocol 3 leaves out only the CLI.
#[tokio::test]
async fn presence_leaves_out_tools_per_protocol_version() {
    let nats = Nats::start().await.unwrap();
    let gw = gateway(&nats, "gw-a").await;
    let as_mode = |mode: &'static str, instance: &'static str| {
        move |params: &mut Value| {
            params["client"] = json!({"id": "gateway-client", "version": "1", "platform": "linux",
                                      "mode": mode, "instanceId": instance});
        }
    };
    let mut held = Vec::new();
    for (version, mode, instance) in [
        (4, "backend", "v4-backend"),
        (4, "probe", "v4-probe"),
        (4, "ui", "v4-ui"),
        (3, "backend", "v3-backend"),
        (3, "cli", "v3-cli"),
    ] {
        let (_, hello, ws) =
            raw_connect(&gw, (version, version), None, as_mode(mode, instance)).await;
        assert_eq!(hello["ok"], true, "{hello}");
        held.push(ws);
    }
    let (_, _, mut reader) = raw_connect(&gw, (4, 4), Some(&["operator.read"]), |_| {}).await;
    let list = call(&mut reader, "p", "system-presence", json!({})).await["payload"].clone();
    let present: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["instanceId"].as_str())
        .collect();
    for tracked in ["v4-ui", "v3-backend"] {
        assert!(present.contains(&tracked), "{tracked} missing: {list}");
    }
    for untracked in ["v4-backend", "v4-probe", "v3-cli"] {
        assert!(!present.contains(&untracked), "{untracked} tracked: {list}");
    }
}
