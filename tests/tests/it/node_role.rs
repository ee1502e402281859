//! The `node` role across gateways (PROTOCOL.md §3.5, §5.13, §6.2, §6.3): a node pairs with
//! its device identity alone, is listed cluster-wide with its allowlisted commands, and
//! answers `node.invoke` from an operator connected to another gateway.

use std::time::Duration;

use serde_json::{json, Value};

use argent_tests::call_error;
use argent_tests::device::{Attempt, Device};
use argent_tests::raw::{Next, RawWs};
use argent_tests::{eventually, Gateway, Nats};

const WAIT: Duration = Duration::from_secs(5);

/// A node's connect attempt: role node, no token, a linux platform, three commands.
fn as_node<'a>() -> Attempt<'a> {
    Attempt {
        role: "node",
        scopes: vec![],
        tamper: |p| {
            p["commands"] = json!(["system.which", "camera.snap", "custom.thing"]);
            p["caps"] = json!(["system"]);
            p["client"]["displayName"] = json!("build box");
        },
        ..Default::default()
    }
}

/// Runs the `argent` CLI against `gw`; returns its stdout (and asserts success).
fn argent(gw: &Gateway, args: &[&str]) -> String {
    let out = std::process::Command::new(argent_tests::bin_dir().join("argent"))
        .args(args)
        .args(["--url", &gw.ws, "--token", &gw.token])
        .output()
        .expect("argent runs");
    assert!(
        out.status.success(),
        "argent {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads the node socket until a `node.invoke.request` arrives.
async fn next_invoke(ws: &mut RawWs) -> Value {
    loop {
        match ws.next(WAIT).await {
            Next::Frame(f) if f["event"] == "node.invoke.request" => {
                assert!(f.get("seq").is_none(), "targeted events carry no seq");
                return f["payload"].clone();
            }
            Next::Frame(_) => continue,
            other => panic!("no invoke request: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_node_pairs_is_listed_and_answers_invokes_across_gateways() {
    let nats = Nats::start().await.unwrap();
    let a = Gateway::cluster(&nats).start().await.unwrap();
    let b = Gateway::cluster(&nats).start().await.unwrap();
    let operator = b.client().await.unwrap();
    let node = Device::new(41);

    // No token, proven device: a pending request (nodes are never approved silently).
    let (f, _) = node.connect(&a, as_node()).await;
    assert_eq!(f["error"]["message"], "pairing required", "{f}");
    let request_id = f["error"]["details"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    // The operator approves it from the command line, against gateway B.
    let pending = argent(&b, &["nodes", "pending"]);
    assert!(pending.contains(&request_id), "{pending}");
    let approved = argent(&b, &["nodes", "approve", &request_id]);
    assert!(approved.contains(&node.id), "{approved}");
    let (f, mut ws) = node.connect(&a, as_node()).await;
    assert_eq!(f["payload"]["auth"]["role"], "node", "{f}");
    assert!(f["payload"]["auth"]["deviceToken"].is_string());

    // Listed on the other gateway, with only the commands its platform allows.
    let listed = eventually(WAIT, || async {
        let list = operator.call("node.list", json!({})).await.ok()?;
        list["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["nodeId"] == node.id.as_str() && n["connected"] == true)
            .cloned()
    })
    .await
    .expect("node listed as connected on B");
    assert_eq!(listed["paired"], true);
    assert_eq!(listed["commands"], json!(["system.which"]));
    assert_eq!(listed["displayName"], "build box");
    assert!(argent(&b, &["nodes", "list"]).contains("build box"));
    assert!(argent(&b, &["devices", "list"]).contains(&node.id));
    let described = operator
        .call("node.describe", json!({"nodeId": node.id}))
        .await
        .unwrap();
    assert_eq!(described["connected"], true);
    assert_eq!(
        call_error(
            operator
                .call("node.describe", json!({"nodeId": "ghost"}))
                .await
        )
        .message,
        "unknown nodeId"
    );

    // An invoke from gateway B reaches the node on gateway A and its answer comes back.
    let invoke = operator.call(
        "node.invoke",
        json!({"nodeId": node.id, "command": "system.which", "params": {"name": "ls"},
               "idempotencyKey": "k1"}),
    );
    let answer = async {
        let request = next_invoke(&mut ws).await;
        assert_eq!(request["command"], "system.which");
        assert_eq!(request["paramsJSON"], r#"{"name":"ls"}"#);
        let result = json!({"id": request["id"], "nodeId": node.id, "ok": true,
                            "payloadJSON": r#"{"path":"/bin/ls"}"#});
        match ws.call("r1", "node.invoke.result", result).await {
            Next::Frame(f) => assert_eq!(f["payload"], json!({"ok": true})),
            other => panic!("{other:?}"),
        }
    };
    let (invoked, ()) = tokio::join!(invoke, answer);
    let invoked = invoked.unwrap();
    assert_eq!(invoked["ok"], true);
    assert_eq!(invoked["payload"], json!({"path": "/bin/ls"}));
    assert_eq!(invoked["command"], "system.which");

    // Late or unknown results are ignored, not errors.
    match ws
        .call(
            "r2",
            "node.invoke.result",
            json!({"id": "nope", "nodeId": node.id, "ok": true}),
        )
        .await
    {
        Next::Frame(f) => assert_eq!(f["payload"], json!({"ok": true, "ignored": true})),
        other => panic!("{other:?}"),
    }
    // Subscriptions for chat events are kept per node connection.
    match ws
        .call(
            "e1",
            "node.event",
            json!({"event": "chat.subscribe", "payload": {"sessionKey": "agent:main:main"}}),
        )
        .await
    {
        Next::Frame(f) => assert_eq!(f["payload"], json!({"ok": true})),
        other => panic!("{other:?}"),
    }

    // Commands outside the allowlist, and unknown nodes, are refused.
    let refused = call_error(
        operator
            .call(
                "node.invoke",
                json!({"nodeId": node.id, "command": "camera.snap", "idempotencyKey": "k2"}),
            )
            .await,
    );
    assert_eq!(refused.message, "node command not allowed");
    let missing = call_error(
        operator
            .call(
                "node.invoke",
                json!({"nodeId": "ghost", "command": "system.which", "idempotencyKey": "k3"}),
            )
            .await,
    );
    assert_eq!(missing.message, "node not connected");
    assert_eq!(missing.details.unwrap()["code"], "NOT_CONNECTED");

    // The node disconnects in the middle of an invoke: the caller hears it at once.
    let invoke = operator.call(
        "node.invoke",
        json!({"nodeId": node.id, "command": "system.which", "idempotencyKey": "k4"}),
    );
    let vanish = async {
        next_invoke(&mut ws).await;
        drop(ws);
    };
    let (invoked, ()) = tokio::join!(invoke, vanish);
    let error = call_error(invoked);
    assert_eq!(error.code, "UNAVAILABLE");
    assert_eq!(error.message, "node disconnected (system.which)");
}
