//! A node-agent joins the cluster by pairing (issue 3, §6.2 [EXT]): it asks a gateway with
//! its device identity alone, an operator approves on another gateway, it takes forwarded
//! calls with its own credential, rejoins after a restart without a new approval, and a
//! revocation takes it out of routing within seconds.

use std::time::Duration;

use serde_json::json;

use argent_client::ClientError;
use argent_tests::raw::{connect_frame, Next, RawWs};
use argent_tests::{eventually, Gateway, JoiningNode, Nats, TOKEN};

#[tokio::test]
async fn a_node_agent_joins_by_pairing_and_leaves_by_revocation() {
    let nats = Nats::start().await.unwrap();
    let a = Gateway::cluster(&nats)
        .args(&["--auth-failures-per-minute", "2"])
        .start()
        .await
        .unwrap();
    let b = Gateway::cluster(&nats).start().await.unwrap();
    let operator = b.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // No credential: it asks to be paired and says how to approve it.
    let mut node = JoiningNode::start(&nats, &a.ws, dir.path()).await.unwrap();
    assert_eq!(node.first["event"], "pairing", "{}", node.first);
    let request_id = node.first["requestId"].as_str().unwrap().to_string();
    let node_id = node.first["nodeId"].as_str().unwrap().to_string();
    assert_eq!(
        node.first["approve"],
        format!("argent nodes approve {request_id}")
    );
    // Calls have nowhere to go yet.
    let params = json!({"agentId":"main","name":"SOUL.md"});
    assert!(operator
        .call("agents.files.get", params.clone())
        .await
        .is_err());

    operator
        .call("device.pair.approve", json!({"requestId": request_id}))
        .await
        .unwrap();
    let listening = node
        .proc
        .next_line(Duration::from_secs(20))
        .expect("the node starts serving once approved");
    assert_eq!(listening["event"], "listening");
    assert_eq!(listening["nodeId"], node_id.as_str());
    let grpc = listening["grpc"].as_str().unwrap().to_string();
    let served = eventually(Duration::from_secs(10), || async {
        operator.call("agents.files.get", params.clone()).await.ok()
    })
    .await;
    assert!(served.is_some(), "the paired node takes forwarded calls");
    let list = operator.call("node.list", json!({})).await.unwrap();
    let listed = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == node_id.as_str())
        .expect("listed");
    assert_eq!(
        (listed["paired"].clone(), listed["connected"].clone()),
        (json!(true), json!(true))
    );

    // The cluster secret is not its credential: only gateways, with its derived one, get in.
    {
        use argent_proto::grpc::node_agent_client::NodeAgentClient;
        use argent_proto::grpc::PingRequest;
        let mut client = NodeAgentClient::connect(grpc).await.unwrap();
        let mut ping = tonic::Request::new(PingRequest {});
        ping.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        assert_eq!(
            client.ping(ping).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
    // Its secrets are private files.
    #[cfg(unix)]
    for file in ["node-identity.json", "node-credentials.json"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }

    // A restart rejoins with the stored token: no new approval. Even while someone at the
    // same address keeps typing a wrong token (the limiter refuses only failures).
    node.proc.terminate(Duration::from_secs(10)).unwrap();
    for _ in 0..4 {
        let (mut ws, _) = RawWs::open_challenged(&a.ws).await.unwrap();
        ws.send_json(&connect_frame("c", "wrong-token"))
            .await
            .unwrap();
        assert!(matches!(
            ws.next(Duration::from_secs(5)).await,
            Next::Frame(_)
        ));
    }
    let node = JoiningNode::start(&nats, &a.ws, dir.path()).await.unwrap();
    assert_eq!(node.first["event"], "listening", "{}", node.first);
    assert_eq!(node.first["nodeId"], node_id.as_str());
    let served = eventually(Duration::from_secs(10), || async {
        operator.call("agents.files.get", params.clone()).await.ok()
    })
    .await;
    assert!(served.is_some());

    // Revoked: out of routing within a few seconds, whichever gateway is asked.
    let revoked_at = std::time::Instant::now();
    operator
        .call(
            "device.token.revoke",
            json!({"deviceId": node_id, "role": "node"}),
        )
        .await
        .unwrap();
    let on_a = a.client().await.unwrap();
    let refused = eventually(Duration::from_secs(5), || async {
        match on_a.call("agents.files.get", params.clone()).await {
            Err(ClientError::Call(e)) if e.message.contains("no live node-agent") => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(refused.is_some(), "a revoked node takes no more calls");
    assert!(
        revoked_at.elapsed() < Duration::from_secs(3),
        "within 2 s or so"
    );
}
