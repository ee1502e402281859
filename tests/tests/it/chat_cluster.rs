//! The agent runtime across a cluster (NATS, two gateways, two node-agents): streams on
//! both gateways, abort from the other gateway, many sessions without cross-talk, a node
//! or a gateway killed mid-run, transcripts surviving a restart of everything but NATS.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use argent_client::Client;
use argent_tests::model_double::ModelDouble;
use argent_tests::{eventually, Gateway, Nats, Node};

use crate::chat_local::{
    agent_seqs, assert_run_seq, final_text, history_texts, model_config, run_events, tool_client,
};

const KEY_ENV: (&str, &str) = ("DOUBLE_KEY", "double-secret");

pub async fn gateway(nats: &Nats, id: &str) -> Gateway {
    Gateway::cluster(nats)
        .args(&["--gateway-id", id])
        .start()
        .await
        .unwrap()
}

pub async fn node(nats: &Nats, id: &str) -> Node {
    Node::start_with_env(nats, id, &[], &[KEY_ENV])
        .await
        .unwrap()
}

/// Publishes the shared config (cluster mode: a KV document).
pub async fn publish_config(nats: &Nats, config: &Value) {
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    let kv = js.get_key_value("argent_config").await.unwrap();
    kv.put("argent.json", config.to_string().into())
        .await
        .unwrap();
}

/// A cluster that answers chats: NATS, gateways A and B, one node-agent on the model
/// double; `client` is a protocol-3 admin client of A, once the node is registered.
pub struct ChatCluster {
    pub a: Gateway,
    pub b: Gateway,
    pub client: Client,
    _node: Node,
    _nats: Nats,
    _double: ModelDouble,
}

pub async fn chat_cluster() -> ChatCluster {
    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let node = node(&nats, "node-1").await;
    publish_config(&nats, &model_config(&double)).await;
    let client = a.client().await.unwrap();
    wait_nodes(&client, 1).await;
    ChatCluster {
        a,
        b,
        client,
        _node: node,
        _nats: nats,
        _double: double,
    }
}

/// Every value of a bucket.
async fn bucket_values(nats: &Nats, bucket: &str) -> Vec<Value> {
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    let kv = js.get_key_value(bucket).await.unwrap();
    let keys: Vec<String> = kv
        .keys()
        .await
        .unwrap()
        .filter_map(|k| async { k.ok() })
        .collect()
        .await;
    let mut out = Vec::new();
    for key in keys {
        if let Ok(Some(value)) = kv.get(&key).await {
            if let Ok(value) = serde_json::from_slice(&value) {
                out.push(value);
            }
        }
    }
    out
}

pub async fn wait_nodes(client: &Client, count: usize) {
    let ready = eventually(Duration::from_secs(15), || async {
        let status = client.call("status", json!({})).await.ok()?;
        (status["cluster"]["nodes"].as_array()?.len() == count).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{count} nodes did not register");
}

/// Waits until `client`'s gateway lists the node `id` (a killed node's record may linger
/// until its heartbeat expires, so a count is not enough after a restart).
async fn wait_node(client: &Client, id: &str) {
    let ready = eventually(Duration::from_secs(15), || async {
        let status = client.call("status", json!({})).await.ok()?;
        let nodes = status["cluster"]["nodes"].as_array()?.clone();
        nodes.iter().any(|n| n["id"] == id).then_some(())
    })
    .await;
    assert!(ready.is_some(), "node {id} did not register");
}

/// Waits for the run's lifecycle `start` on `client`.
async fn started(client: &mut Client, run_id: &str) {
    let seen = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = client.next_event().await {
            if event.name == "agent"
                && event.payload["runId"] == run_id
                && event.payload["data"]["phase"] == "start"
            {
                return;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "run {run_id} did not start");
}

#[tokio::test]
async fn streams_reach_every_gateway_and_sessions_never_mix() {
    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let _nodes = [node(&nats, "node-1").await, node(&nats, "node-2").await];
    publish_config(&nats, &model_config(&double)).await;
    let mut on_a = tool_client(&a).await;
    let mut on_b = b.client().await.unwrap();
    wait_nodes(&on_a, 2).await;

    // Control-UI style: chat.send through A, the stream on both gateways.
    on_a.call("chat.send", json!({"sessionKey": "shared", "message": "cluster hello [[delay:30]]", "idempotencyKey": "c1"}))
        .await
        .unwrap();
    let seen_a = run_events(&mut on_a, "c1", false).await;
    let seen_b = run_events(&mut on_b, "c1", false).await;
    assert_run_seq(&seen_a);
    assert_run_seq(&seen_b);
    assert_eq!(final_text(&seen_a), "echo: cluster hello");
    assert_eq!(final_text(&seen_b), "echo: cluster hello");
    // A repeated key through the other gateway: the cached outcome.
    let again = on_b
        .call("chat.send", json!({"sessionKey": "shared", "message": "cluster hello [[delay:30]]", "idempotencyKey": "c1"}))
        .await
        .unwrap();
    assert_eq!(again["status"], "ok");

    // Dashboard style: `agent` through B, ack then final; the history on A has it.
    let (ack, last) = on_b
        .request_twice("agent", json!({"message": "from the dashboard", "idempotencyKey": "msg-b", "sessionKey": "shared"}))
        .await
        .unwrap();
    assert_eq!(ack.payload.unwrap()["status"], "accepted");
    let done = tokio::time::timeout(Duration::from_secs(30), last)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        done.payload.unwrap()["result"]["payloads"][0]["text"],
        "echo: from the dashboard"
    );
    let history = on_a
        .call("chat.history", json!({"sessionKey": "shared"}))
        .await
        .unwrap();
    assert_eq!(history["messages"].as_array().unwrap().len(), 4);

    // Abort from the other gateway, whichever node runs it.
    on_a.call(
        "chat.send",
        json!({"sessionKey": "abortme", "message": "[[hang]] forever", "idempotencyKey": "c2"}),
    )
    .await
    .unwrap();
    started(&mut on_b, "c2").await;
    let aborted = on_b
        .call("chat.abort", json!({"sessionKey": "abortme"}))
        .await
        .unwrap();
    assert_eq!(
        aborted,
        json!({"ok": true, "aborted": true, "runIds": ["c2"]})
    );
    let events = run_events(&mut on_a, "c2", false).await;
    let last = events.last().unwrap();
    assert_eq!(
        (
            last.payload["state"].clone(),
            last.payload["stopReason"].clone()
        ),
        (json!("aborted"), json!("rpc"))
    );
    let waited = on_b
        .call("agent.wait", json!({"runId": "c2", "timeoutMs": 10000}))
        .await
        .unwrap();
    assert_eq!(waited["aborted"], true);

    // 20 sessions at once through both gateways: each gets its own answer.
    let mut sent = Vec::new();
    for i in 0..20 {
        let (client, gw) = if i % 2 == 0 {
            (&on_a, "a")
        } else {
            (&on_b, "b")
        };
        let run_id = format!("many-{i}");
        client
            .call("chat.send", json!({"sessionKey": format!("s{i}"), "message": format!("sess {i} via {gw} [[delay:10]]"), "idempotencyKey": run_id}))
            .await
            .unwrap();
        sent.push((run_id, format!("s{i}"), format!("echo: sess {i} via {gw}")));
    }
    let mut finals = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while finals.len() < sent.len() {
        let event = tokio::time::timeout_at(deadline, on_a.next_event())
            .await
            .expect("all runs end")
            .unwrap();
        if event.name == "chat" && event.payload["state"] == "final" {
            finals.insert(
                event.payload["runId"].as_str().unwrap().to_string(),
                event.payload.clone(),
            );
        }
    }
    for (run_id, session, text) in &sent {
        let payload = &finals[run_id];
        assert_eq!(payload["sessionKey"], session.as_str());
        assert_eq!(payload["message"]["content"][0]["text"], text.as_str());
    }
    // Both node-agents took sessions.
    let runners: std::collections::HashSet<String> = bucket_values(&nats, "argent_runs")
        .await
        .into_iter()
        .filter(|r| {
            r["runId"]
                .as_str()
                .is_some_and(|id| id.starts_with("many-"))
        })
        .filter_map(|r| r["nodeId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(runners.len(), 2, "{runners:?}");
    // Every session's lease was released once its runs ended.
    let released = eventually(Duration::from_secs(5), || async {
        bucket_values(&nats, "argent_leases")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(released.is_some(), "leases left behind");
}

/// The provider double, NATS, one gateway and two node-agents, configured and ready.
struct OneGatewayTwoNodes {
    double: ModelDouble,
    nats: Nats,
    _gateway: Gateway,
    nodes: [Node; 2],
    client: Client,
}

async fn one_gateway_two_nodes() -> OneGatewayTwoNodes {
    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let gateway = gateway(&nats, "gw-a").await;
    let nodes = [node(&nats, "node-1").await, node(&nats, "node-2").await];
    publish_config(&nats, &model_config(&double)).await;
    let client = gateway.client().await.unwrap();
    wait_nodes(&client, 2).await;
    OneGatewayTwoNodes {
        double,
        nats,
        _gateway: gateway,
        nodes,
        client,
    }
}

/// Index in `nodes` of the node holding the session's run lease.
async fn lease_holder(nats: &Nats, session_key: &str, nodes: &[Node]) -> usize {
    let lease = bucket_values(nats, "argent_leases")
        .await
        .into_iter()
        .find(|l| l["sessionKey"] == session_key)
        .expect("the session's lease");
    nodes
        .iter()
        .position(|n| lease["nodeId"] == n.id.as_str())
        .expect("held by one of the nodes")
}

#[tokio::test]
async fn a_node_killed_mid_run_fails_the_run_and_the_session_goes_on() {
    let OneGatewayTwoNodes {
        double,
        nats,
        _gateway,
        mut nodes,
        mut client,
    } = one_gateway_two_nodes().await;
    let (ack, last) = client
        .request_twice(
            "agent",
            json!({"message": "[[hang]] stuck", "idempotencyKey": "k1", "sessionKey": "fragile"}),
        )
        .await
        .unwrap();
    assert!(ack.ok);
    started(&mut client, "k1").await;
    let victim = lease_holder(&nats, "agent:main:fragile", &nodes).await;
    let holder = nodes[victim].id.clone();
    nodes[victim].proc.kill();

    // Within a few seconds: chat error, lifecycle error, run_complete; no hang.
    let events = run_events(&mut client, "k1", true).await;
    let chat_end = events
        .iter()
        .find(|e| e.name == "chat" && e.payload["state"] != "delta")
        .unwrap();
    assert_eq!(chat_end.payload["state"], "error");
    assert!(chat_end.payload["errorMessage"]
        .as_str()
        .unwrap()
        .contains(&holder));
    assert!(events.iter().any(|e| e.payload["data"]["phase"] == "error"));
    // The dead node published `start` (1), and perhaps the first text, under a claim of 64
    // numbers (SEQ_BLOCK); the surviving node numbers after the claim, so no number is ever
    // used twice: error, run_complete. The gap shows where the dead holder stopped.
    let seqs = agent_seqs(&events);
    assert!(seqs.ends_with(&[65, 66]), "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let final_frame = tokio::time::timeout(Duration::from_secs(30), last)
        .await
        .unwrap()
        .unwrap();
    assert!(!final_frame.ok);
    assert_eq!(final_frame.payload.unwrap()["status"], "error");
    assert_eq!(final_frame.error.unwrap().code, "UNAVAILABLE");
    let waited = client
        .call("agent.wait", json!({"runId": "k1", "timeoutMs": 0}))
        .await
        .unwrap();
    assert_eq!(waited["status"], "error");

    // The next message runs on the live node with the whole transcript.
    client
        .call(
            "chat.send",
            json!({"sessionKey": "fragile", "message": "after the crash", "idempotencyKey": "k2"}),
        )
        .await
        .unwrap();
    let events = run_events(&mut client, "k2", false).await;
    assert_eq!(final_text(&events), "echo: after the crash");
    let request = double.request_for("after the crash");
    assert_eq!(
        request.message_count, 3,
        "system, the interrupted user message, this one"
    );
}

#[tokio::test]
async fn a_gateway_killed_mid_run_and_a_full_restart_lose_nothing() {
    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let mut a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let node_1 = node(&nats, "node-1").await;
    publish_config(&nats, &model_config(&double)).await;
    let mut on_a = a.client().await.unwrap();
    wait_nodes(&on_a, 1).await;
    on_a.call("chat.send", json!({"sessionKey": "durable", "message": "slow answer here [[delay:150]]", "idempotencyKey": "g1"}))
        .await
        .unwrap();
    started(&mut on_a, "g1").await;
    a.proc.kill();

    // The client reconnects elsewhere: the run finished, the history has both messages.
    let on_b = b.client().await.unwrap();
    let waited = on_b
        .call("agent.wait", json!({"runId": "g1", "timeoutMs": 20000}))
        .await
        .unwrap();
    assert_eq!(waited["status"], "ok");
    let texts = history_texts(&on_b, "durable").await;
    assert_eq!(
        texts,
        ["slow answer here [[delay:150]]", "echo: slow answer here"]
    );

    // Everything but NATS restarts: the transcript is still there and the agent sees it.
    drop(on_b);
    drop(b);
    drop(node_1);
    let c = gateway(&nats, "gw-c").await;
    let _node_3 = node(&nats, "node-3").await;
    let mut on_c = c.client().await.unwrap();
    wait_node(&on_c, "node-3").await;
    let history = on_c
        .call("chat.history", json!({"sessionKey": "durable"}))
        .await
        .unwrap();
    assert_eq!(history["messages"].as_array().unwrap().len(), 2);
    on_c.call(
        "chat.send",
        json!({"sessionKey": "durable", "message": "still there?", "idempotencyKey": "g2"}),
    )
    .await
    .unwrap();
    let events = run_events(&mut on_c, "g2", false).await;
    assert_eq!(final_text(&events), "echo: still there?");
    let request = double.request_for("still there?");
    assert_eq!(
        request.message_count, 4,
        "system + the restored conversation + this message"
    );

    // Compaction on the JetStream transcript: archive, summary, the last two kept.
    let compacted = on_c
        .call("sessions.compact", json!({"key": "durable", "maxLines": 2}))
        .await
        .unwrap();
    assert_eq!(
        (
            compacted["compacted"].clone(),
            compacted["summarized"].clone()
        ),
        (json!(true), json!(true))
    );
    assert!(compacted["archived"]
        .as_str()
        .unwrap()
        .starts_with("nats://ARGENT_TRANSCRIPTS/"));
    let texts = history_texts(&on_c, "durable").await;
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts[0].starts_with("SUMMARY("));
    assert_eq!(&texts[1..], ["still there?", "echo: still there?"]);
}

#[tokio::test]
async fn a_node_stopping_mid_run_hands_its_queue_to_another() {
    let OneGatewayTwoNodes {
        double: _double,
        nats,
        _gateway,
        mut nodes,
        mut client,
    } = one_gateway_two_nodes().await;
    let send = |key: &str, message: &str| json!({"sessionKey": "handover", "message": message, "idempotencyKey": key});
    client
        .call("chat.send", send("t1", "[[hang]] long job"))
        .await
        .unwrap();
    started(&mut client, "t1").await;
    client
        .call("chat.send", send("t2", "next please"))
        .await
        .unwrap();
    let holder = lease_holder(&nats, "agent:main:handover", &nodes).await;
    // SIGTERM: the running turn ends with an error saying so, at once; the exit is clean.
    let status = nodes[holder]
        .proc
        .terminate(Duration::from_secs(10))
        .unwrap();
    assert!(status.success());
    let events = run_events(&mut client, "t1", false).await;
    let last = events.last().unwrap();
    assert_eq!(last.payload["state"], "error");
    assert!(
        last.payload["errorMessage"]
            .as_str()
            .unwrap()
            .contains("stopped"),
        "{}",
        last.payload
    );
    // The queued message runs on the other node.
    let events = run_events(&mut client, "t2", false).await;
    assert_eq!(final_text(&events), "echo: next please");
}

/// Frames as large as the protocol allows cross the gateway → node gRPC hop both ways (tonic
/// refuses messages over 4 MiB unless told): a `chat.send` with a 4.5 MB image, one with a
/// 2 MB text attachment, and a `chat.history` answer of 5.4 MB.
#[tokio::test]
async fn large_requests_and_answers_cross_the_grpc_hop() {
    use base64::Engine;
    let cluster = chat_cluster().await;
    let mut client = cluster.a.client().await.unwrap();

    let image = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 4_500_000]);
    let ack = client
        .call("chat.send", json!({"sessionKey": "big", "message": "look", "idempotencyKey": "run-big",
               "attachments": [{"fileName": "big.png", "mimeType": "image/png", "content": image}]}))
        .await
        .unwrap();
    assert_eq!(ack["status"], "started", "{ack}");
    let events = run_events(&mut client, "run-big", false).await;
    assert!(final_text(&events).starts_with("echo: look"), "{events:?}");

    // A 2 MB text attachment is transcribed into the user message, which is then over one
    // NATS message (the harness's servers keep the 1 MiB default): stored through the
    // object store, and read back whole.
    let notes = "n".repeat(2 * 1024 * 1024);
    let ack = client
        .call("chat.send", json!({"sessionKey": "big-text", "message": "read this", "idempotencyKey": "run-text",
               "attachments": [{"fileName": "notes.txt", "mimeType": "text/plain",
                                "content": base64::engine::general_purpose::STANDARD.encode(&notes)}]}))
        .await
        .unwrap();
    assert_eq!(ack["status"], "started", "{ack}");
    let events = run_events(&mut client, "run-text", false).await;
    assert!(
        final_text(&events).starts_with("echo: read this"),
        "{events:?}"
    );
    let history = client
        .call("chat.history", json!({"sessionKey": "big-text"}))
        .await
        .unwrap();
    let user = history["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        user.contains(notes.as_str()),
        "the attachment is not in the transcript"
    );

    // Six injected messages of 900,000 characters: each fits a NATS message, together they
    // are more than 4 MiB.
    let text = "y".repeat(900_000);
    for _ in 0..6 {
        let injected = client
            .call("chat.inject", json!({"sessionKey": "big", "message": text}))
            .await
            .unwrap();
        assert_eq!(injected["ok"], true);
    }
    let history = client
        .call("chat.history", json!({"sessionKey": "big"}))
        .await
        .unwrap();
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 8, "user, answer, six injected");
    assert!(messages[2..]
        .iter()
        .all(|m| m["content"][0]["text"] == text.as_str()));
}

/// The JetStream log keeps the rules of conditional appends that the node's transcript
/// cache relies on (the embedded log runs the same check in its unit tests).
#[tokio::test]
async fn jetstream_transcripts_append_on_condition() {
    use argent_planes::transcripts::{conformance, ensure_stream, NatsTranscripts};
    let nats = Nats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    ensure_stream(&async_nats::jetstream::new(client.clone()), 1)
        .await
        .unwrap();
    let log = NatsTranscripts::new(client);
    conformance::conditional_appends(&log, "fresh-session")
        .await
        .unwrap();
}

/// A nats-server with the cluster's buckets, and the state store on it.
async fn jetstream_store() -> (
    Nats,
    async_nats::jetstream::Context,
    argent_planes::state_nats::NatsStore,
) {
    let nats = Nats::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    argent_planes::cluster::ensure_buckets(&js, 1)
        .await
        .unwrap();
    (nats, js, argent_planes::state_nats::NatsStore::new(client))
}

/// A released lease is created again over its delete in one conditional write, which is
/// refused once anything else was written to the key (then the caller creates it plainly).
#[tokio::test]
async fn jetstream_recreates_a_deleted_key_only_over_that_delete() {
    use argent_planes::state::{StateError, StateStore};
    let (_nats, js, store) = jetstream_store().await;
    let bucket = argent_proto::subjects::BUCKET_LEASES;
    let deleted_revision = |key: &'static str| {
        let js = js.clone();
        async move {
            let kv = js.get_key_value(bucket).await.unwrap();
            let entry = kv.entry(key).await.unwrap().unwrap();
            assert_ne!(entry.operation, async_nats::jetstream::kv::Operation::Put);
            entry.revision
        }
    };
    store.create(bucket, "l.k", "1".into()).await.unwrap();
    store.delete(bucket, "l.k").await.unwrap();
    let released = deleted_revision("l.k").await;
    store
        .recreate(bucket, "l.k", "2".into(), released)
        .await
        .unwrap();
    for (value, what) in [
        ("3", "a live value is never overwritten"),
        ("4", "an older delete is not the last change"),
    ] {
        if value == "4" {
            store.delete(bucket, "l.k").await.unwrap();
        }
        let refused = store.recreate(bucket, "l.k", value.into(), released).await;
        assert_eq!(refused, Err(StateError::WrongRevision), "{what}");
    }
    let released = deleted_revision("l.k").await;
    store
        .recreate(bucket, "l.k", "5".into(), released)
        .await
        .unwrap();
    assert_eq!(
        store.get(bucket, "l.k").await.unwrap().unwrap().value,
        bytes::Bytes::from("5")
    );
}

/// The node keeps a session's log between turns; a message written to it by anyone else
/// (here: straight into JetStream) is in the next turn's conversation all the same.
#[tokio::test]
async fn a_turn_sees_what_others_wrote_to_its_transcript() {
    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let gateway = gateway(&nats, "gw-a").await;
    // One node, so both turns run where the log is cached; its debug line shows the cache
    // noticed the foreign write.
    let logging = (
        "ARGENT_LOG",
        "info,argent_node_agent::runtime::transcript_cache=debug",
    );
    let node = Node::start_with_env(&nats, "node-1", &[], &[KEY_ENV, logging])
        .await
        .unwrap();
    publish_config(&nats, &model_config(&double)).await;
    let mut client = gateway.client().await.unwrap();
    wait_nodes(&client, 1).await;
    let send = |id: &'static str, text: &'static str| json!({"sessionKey": "shared-log", "message": text, "idempotencyKey": id});
    client.call("chat.send", send("c1", "first")).await.unwrap();
    assert_eq!(
        final_text(&run_events(&mut client, "c1", false).await),
        "echo: first"
    );
    let history = client
        .call("chat.history", json!({"sessionKey": "shared-log"}))
        .await
        .unwrap();
    let session_id = history["sessionId"].as_str().unwrap().to_string();
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    let elsewhere = json!({"role": "user", "content": [{"type": "text", "text": "written elsewhere"}], "timestamp": 1});
    js.publish(
        argent_proto::subjects::transcript_subject(&session_id),
        elsewhere.to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    client
        .call("chat.send", send("c2", "second"))
        .await
        .unwrap();
    assert_eq!(
        final_text(&run_events(&mut client, "c2", false).await),
        "echo: second"
    );
    let request = double.request_for("second");
    assert_eq!(
        request.message_count, 5,
        "system, first, its answer, the message written elsewhere, second"
    );
    assert!(request.body.to_string().contains("written elsewhere"));
    assert_eq!(
        history_texts(&client, "shared-log").await,
        [
            "first",
            "echo: first",
            "written elsewhere",
            "second",
            "echo: second"
        ]
    );
    assert!(
        node.proc
            .log_tail()
            .contains("transcript written elsewhere"),
        "the second turn found its cached log stale: {}",
        node.proc.log_tail()
    );
}

/// Fencing without a store write per event (events are numbered from claimed blocks): a
/// lease holder frozen mid-stream, whose lease another node took over meanwhile, publishes
/// nothing more when it wakes up, and no number of the run is used twice.
#[tokio::test]
async fn a_frozen_lease_holder_publishes_nothing_after_a_takeover() {
    let OneGatewayTwoNodes {
        double: _double,
        nats,
        _gateway,
        nodes,
        mut client,
    } = one_gateway_two_nodes().await;
    client
        .call(
            "chat.send",
            json!({"sessionKey": "frozen", "message": "[[delay:20]][[long:2000]]", "idempotencyKey": "f1"}),
        )
        .await
        .unwrap();
    // Streaming: wait for a few deltas, then freeze the holder.
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e: &&argent_client::Event| e.name == "chat")
        .count()
        < 3
    {
        let event = tokio::time::timeout(Duration::from_secs(10), client.next_event())
            .await
            .unwrap()
            .unwrap();
        if event.payload["runId"] == "f1" {
            seen.push(event);
        }
    }
    let holder = &nodes[lease_holder(&nats, "agent:main:frozen", &nodes).await];
    argent_tests::signal(holder.proc.pid(), "STOP");

    // The other node takes over (≥ 5 s of silence) and ends the run with an error.
    let ended = run_events(&mut client, "f1", false).await;
    argent_tests::signal(holder.proc.pid(), "CONT");
    assert_eq!(ended.last().unwrap().payload["state"], "error");
    seen.extend(ended);
    // Awake again: it must notice the loss before publishing anything of the run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, client.next_event()).await {
        assert_ne!(
            event.payload["runId"], "f1",
            "the frozen holder published after losing its lease: {event:?}"
        );
    }
    let seqs = agent_seqs(&seen);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "every number once, in order: {seqs:?}"
    );
}

/// Values over one NATS message live in the object store behind a reference: read back
/// whole (by `get` and by a watch), a conditional write keeps its meaning, a refused one
/// leaves no blob behind, and a small value that happens to look like a reference is stored
/// as a blob too, so it is never mistaken for one.
#[tokio::test]
async fn jetstream_store_keeps_large_values_in_the_object_store() {
    use argent_planes::state::{StateError, StateStore};
    use futures_util::StreamExt;
    let (_nats, js, store) = jetstream_store().await;
    let bucket = argent_proto::subjects::BUCKET_AGENTS;
    let mut watch = store.watch(bucket).await.unwrap();
    let blob_count = || {
        let js = js.clone();
        async move {
            let objects = js
                .get_object_store(argent_planes::blobs::BLOBS)
                .await
                .unwrap();
            objects.list().await.unwrap().count().await
        }
    };

    let big = bytes::Bytes::from(vec![b'b'; 3 * 1024 * 1024]);
    let revision = store.create(bucket, "k", big.clone()).await.unwrap();
    assert_eq!(store.get(bucket, "k").await.unwrap().unwrap().value, big);
    let seen = tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen.value.as_ref(),
        Some(&big),
        "the watch sees the value itself"
    );
    assert_eq!(blob_count().await, 1);

    // A conditional write on a stale revision is refused, and its blob is removed.
    let bigger = bytes::Bytes::from(vec![b'c'; 4 * 1024 * 1024]);
    store
        .update(bucket, "k", bigger.clone(), revision)
        .await
        .unwrap();
    let refused = store.update(bucket, "k", big.clone(), revision).await;
    assert_eq!(refused, Err(StateError::WrongRevision));
    assert_eq!(store.get(bucket, "k").await.unwrap().unwrap().value, bigger);
    let settled = argent_tests::eventually(Duration::from_secs(10), || async {
        (blob_count().await == 2).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "the refused write's blob was not removed"
    );

    // Bytes that start like a reference are a value like any other.
    let lookalike = bytes::Bytes::from_static(b"\0argent-blob\0kv/not/a/blob");
    store.put(bucket, "l", lookalike.clone()).await.unwrap();
    assert_eq!(
        store.get(bucket, "l").await.unwrap().unwrap().value,
        lookalike
    );
}
