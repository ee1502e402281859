//! Device identity, device tokens and pairing (PROTOCOL.md §2.8–§2.10, §5.13, §6.1) against
//! real gateways: clients sign the documented payload with Ed25519, exactly as the upstream
//! clients do.

use std::time::Duration;

use serde_json::{json, Value};

use argent_tests::device::{Attempt, Device, SCOPES};
use argent_tests::raw::Next;
use argent_tests::{Gateway, Nats};

const WAIT: Duration = Duration::from_secs(5);
const TOKEN_MISMATCH: &str = "unauthorized: device token mismatch (provide gateway auth token)";

/// An attempt from a remote address (the Host header is not local, §2.6).
fn remote(token: &str) -> Attempt<'_> {
    Attempt {
        token: Some(token),
        host: Some("gw.example.com:18789"),
        ..Default::default()
    }
}

fn message(frame: &Value) -> &str {
    frame["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn every_bad_proof_has_its_message() {
    let gw = Gateway::local().start().await.unwrap();
    let d = Device::new(9);
    let t = Some(gw.token.as_str());
    let (f, _) = d
        .connect(
            &gw,
            Attempt {
                token: t,
                clock: |_, _| "00000000-0000-4000-8000-000000000000".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(message(&f), "device nonce mismatch", "a replayed signature");
    let (f, _) = d
        .connect(
            &gw,
            Attempt {
                token: t,
                clock: |n, at| {
                    *at -= 660_000;
                    n.into()
                },
                ..Default::default()
            },
        )
        .await;
    assert_eq!(message(&f), "device signature expired");
    let (f, _) = d
        .connect(
            &gw,
            Attempt {
                token: t,
                tamper: |p| p["device"]["id"] = json!("ab".repeat(32)),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(message(&f), "device identity mismatch");
    let (f, _) = d
        .connect(
            &gw,
            Attempt {
                token: t,
                tamper: |p| p["scopes"] = json!(["operator.admin"]),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(message(&f), "device signature invalid");
    assert_eq!(f["error"]["code"], "INVALID_REQUEST");
    assert_eq!(f["error"]["details"]["jsonrpcCode"], -32002);
    // A token this device never held is answered as a wrong shared token (as upstream);
    // `device token mismatch` is for its own revoked or rotated tokens (below).
    let (f, _) = d.with_token(&gw, "wrong").await;
    assert!(
        message(&f).starts_with("unauthorized: gateway token mismatch"),
        "{f}"
    );
}

#[tokio::test]
async fn local_devices_pair_silently_and_then_use_their_device_token() {
    let gw = Gateway::local().start().await.unwrap();
    let d = Device::new(11);
    let mut watcher = gw.client().await.unwrap();

    // First connect with the shared token: paired silently (local), a device token issued.
    let (f, _) = d.with_token(&gw, &gw.token).await;
    let hello = &f["payload"];
    assert_eq!(hello["type"], "hello-ok", "{f}");
    let auth = &hello["auth"];
    let token = auth["deviceToken"].as_str().unwrap().to_string();
    assert_eq!(auth["role"], "operator");
    let mut granted: Vec<&str> = SCOPES.to_vec();
    granted.sort();
    assert_eq!(auth["scopes"], json!(granted));
    let me = hello["snapshot"]["presence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["instanceId"] == "dev-1")
        .unwrap();
    assert_eq!(me["deviceId"], d.id);
    let resolved = watcher
        .wait_event("device.pair.resolved", WAIT)
        .await
        .expect("resolved event");
    assert_eq!(resolved.payload["decision"], "approved");
    assert_eq!(resolved.payload["deviceId"], d.id);

    // Next time: the device token instead of the shared token; the same token comes back.
    let (f, mut live) = d.with_token(&gw, &token).await;
    assert_eq!(f["payload"]["auth"]["deviceToken"], token.as_str(), "{f}");
    // Asking for less is fine; asking for more than the token grants is not.
    let (f, _) = d
        .connect(
            &gw,
            Attempt {
                token: Some(&token),
                scopes: vec!["operator.read"],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        message(&f),
        "unauthorized: device token scope mismatch (provide gateway auth token)"
    );

    // The list shows the device with token summaries, never the token.
    let list = watcher.call("device.pair.list", json!({})).await.unwrap();
    let paired = list["paired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["deviceId"] == d.id.as_str())
        .unwrap();
    assert_eq!(paired["tokens"][0]["role"], "operator");
    assert!(
        !list.to_string().contains(&token),
        "tokens are never listed"
    );
    // Connected right now (the Control UI shows it online), seen now.
    assert_eq!(paired["connected"], true, "{paired}");
    assert!(paired["lastSeenAtMs"].as_u64().unwrap() > 0, "{paired}");

    // Revoked: the live connection is closed with 4001, the token stops working.
    let revoked = watcher
        .call(
            "device.token.revoke",
            json!({"deviceId": d.id, "role": "operator"}),
        )
        .await
        .unwrap();
    assert!(revoked["revokedAtMs"].as_u64().unwrap() > 0);
    assert_eq!(
        live.closed(Duration::from_secs(2)).await,
        Next::Close(4001, "device removed".into())
    );
    let (f, _) = d.with_token(&gw, &token).await;
    assert_eq!(message(&f), TOKEN_MISMATCH);
    // Gone from presence: offline, last seen when its token was last used.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = watcher.call("device.pair.list", json!({})).await.unwrap();
        let row = list["paired"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["deviceId"] == d.id.as_str())
            .cloned()
            .unwrap();
        if row["connected"] == false {
            assert!(row["lastSeenAtMs"].as_u64().is_some(), "{row}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still online: {row}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Rotation mints a new token (shown once) and the old one is gone.
    let (f, _) = d.with_token(&gw, &gw.token).await;
    let fresh = f["payload"]["auth"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_string();
    // A rotation cannot grant more than the pairing did.
    match watcher
        .call(
            "device.token.rotate",
            json!({"deviceId": d.id, "role": "operator", "scopes": ["operator.admin", "operator.read"]}),
        )
        .await
    {
        Err(argent_client::ClientError::Call(e)) => {
            assert_eq!(e.message, "scopes exceed what the device was paired with")
        }
        other => panic!("{other:?}"),
    }
    let rotated = watcher
        .call(
            "device.token.rotate",
            json!({"deviceId": d.id, "role": "operator"}),
        )
        .await
        .unwrap();
    let newest = rotated["token"].as_str().unwrap().to_string();
    assert_ne!(newest, fresh);
    let (f, _) = d.with_token(&gw, &fresh).await;
    assert_eq!(message(&f), TOKEN_MISMATCH);
    let (f, _) = d.with_token(&gw, &newest).await;
    assert_eq!(f["payload"]["type"], "hello-ok");
}

#[tokio::test]
async fn a_remote_device_is_approved_on_another_gateway() {
    let nats = Nats::start().await.unwrap();
    let a = Gateway::cluster(&nats).start().await.unwrap();
    let b = Gateway::cluster(&nats).start().await.unwrap();
    let mut operator = b.client().await.unwrap();
    let d = Device::new(21);

    let (f, mut ws) = d.connect(&a, remote(&a.token)).await;
    assert_eq!(f["error"]["code"], "NOT_PAIRED", "{f}");
    assert_eq!(message(&f), "pairing required");
    let request_id = f["error"]["details"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        ws.closed(WAIT).await,
        Next::Close(1008, "pairing required".into())
    );

    // The operator on gateway B hears of it and approves it there.
    let requested = operator
        .wait_event("device.pair.requested", WAIT)
        .await
        .expect("requested on B");
    assert_eq!(requested.payload["requestId"], request_id.as_str());
    assert_eq!(requested.payload["deviceId"], d.id.as_str());
    let list = operator.call("device.pair.list", json!({})).await.unwrap();
    assert_eq!(list["pending"][0]["requestId"], request_id.as_str());
    // Asking again while pending reuses the request (one per device).
    let (f, _) = d.connect(&a, remote(&a.token)).await;
    assert_eq!(f["error"]["details"]["requestId"], request_id.as_str());
    let approved = operator
        .call("device.pair.approve", json!({"requestId": request_id}))
        .await
        .unwrap();
    assert_eq!(approved["device"]["deviceId"], d.id.as_str());
    let resolved = operator
        .wait_event("device.pair.resolved", WAIT)
        .await
        .expect("resolved");
    assert_eq!(resolved.payload["decision"], "approved");

    // The device reconnects (to gateway A) and is in.
    let (f, mut live) = d.connect(&a, remote(&a.token)).await;
    assert_eq!(f["payload"]["type"], "hello-ok", "{f}");
    // More scopes than it was paired with: a scope upgrade needs a new approval.
    let (f, _) = d
        .connect(
            &a,
            Attempt {
                scopes: vec!["operator.admin", "operator.read"],
                ..remote(&a.token)
            },
        )
        .await;
    assert_eq!(message(&f), "pairing required");
    // Revoked on gateway B: its connection on gateway A is closed within 2 s.
    operator
        .call(
            "device.token.revoke",
            json!({"deviceId": d.id, "role": "operator"}),
        )
        .await
        .unwrap();
    assert_eq!(
        live.closed(Duration::from_secs(2)).await,
        Next::Close(4001, "device removed".into())
    );
    let pending = operator.call("device.pair.list", json!({})).await.unwrap();
    let upgrade_id = pending["pending"][0]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    operator
        .call("device.pair.approve", json!({"requestId": upgrade_id}))
        .await
        .unwrap();
    let (f, _) = d.connect(&a, remote(&a.token)).await;
    assert_eq!(f["payload"]["type"], "hello-ok", "{f}");
    assert!(f["payload"]["auth"]["deviceToken"].is_string());
    match operator
        .call("device.pair.approve", json!({"requestId": request_id}))
        .await
    {
        Err(argent_client::ClientError::Call(e)) => assert_eq!(e.message, "unknown requestId"),
        other => panic!("{other:?}"),
    }

    // A role upgrade (node) is a new request; rejecting it ends it.
    let (f, _) = d
        .connect(
            &a,
            Attempt {
                role: "node",
                scopes: vec![],
                ..remote(&a.token)
            },
        )
        .await;
    assert_eq!(message(&f), "pairing required");
    let upgrade = f["error"]["details"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    let rejected = operator
        .call("device.pair.reject", json!({"requestId": upgrade}))
        .await
        .unwrap();
    assert_eq!(rejected["deviceId"], d.id.as_str());
}

#[tokio::test]
async fn the_device_role_is_narrow() {
    let gw = Gateway::local().start().await.unwrap();
    let d = Device::new(31);
    let (f, mut ws) = d
        .connect(
            &gw,
            Attempt {
                token: Some(&gw.token),
                role: "device",
                scopes: vec![],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(f["payload"]["auth"]["role"], "device", "{f}");
    match ws.call("h", "health", json!({})).await {
        Next::Frame(r) => assert_eq!(r["ok"], true),
        other => panic!("{other:?}"),
    }
    match ws.call("c", "config.get", json!({})).await {
        Next::Frame(r) => assert_eq!(r["error"]["message"], "unauthorized role: device"),
        other => panic!("{other:?}"),
    }
}
