//! Two gateways and two node-agents on one NATS: presence, status and state across
//! gateways, forwarding with failover, NATS outages, node credentials, SIGTERM drain.

use std::time::Duration;

use serde_json::{json, Value};

use argent_client::{Client, ClientError};
use argent_tests::{eventually, Gateway, Nats, Node, TOKEN};

struct Cluster {
    nats: Nats,
    a: Gateway,
    b: Gateway,
    nodes: Vec<Node>,
}

async fn cluster() -> Cluster {
    let nats = Nats::start().await.unwrap();
    let a = Gateway::cluster(&nats)
        .args(&["--gateway-id", "gw-a"])
        .start()
        .await
        .unwrap();
    let b = Gateway::cluster(&nats)
        .args(&["--gateway-id", "gw-b"])
        .start()
        .await
        .unwrap();
    let nodes = vec![
        Node::start(&nats, "node-1").await.unwrap(),
        Node::start(&nats, "node-2").await.unwrap(),
    ];
    let c = Cluster { nats, a, b, nodes };
    let client = c.a.client().await.unwrap();
    let ready = eventually(Duration::from_secs(10), || async {
        let status = client.call("status", json!({})).await.ok()?;
        let gateways = status["cluster"]["gateways"].as_array()?.len();
        let nodes = status["cluster"]["nodes"].as_array()?.len();
        (gateways == 2 && nodes == 2).then_some(())
    })
    .await;
    assert!(ready.is_some(), "cluster did not form");
    c
}

async fn tracked_client(gw: &Gateway, instance: &str) -> Client {
    gw.client_with(|o| {
        o.client_id = "test".into();
        o.client_mode = "test".into();
        o.instance_id = Some(instance.into());
        o.display_name = Some(format!("client {instance}"));
    })
    .await
    .unwrap()
}

fn instances(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["instanceId"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn presence_is_cluster_wide() {
    let c = cluster().await;
    let mut watcher = tracked_client(&c.b, "watcher").await;
    let visitor = tracked_client(&c.a, "visitor").await;

    // A client of gateway A is listed by gateway B.
    let listed = eventually(Duration::from_secs(5), || async {
        let list = watcher.call("system-presence", json!({})).await.ok()?;
        instances(&list)
            .contains(&"visitor".to_string())
            .then_some(list)
    })
    .await
    .expect("visitor listed on B");
    let gateways: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mode"] == "gateway")
        .collect();
    assert_eq!(
        gateways.len(),
        2,
        "both gateways report themselves: {listed}"
    );

    // A new client of B sees it in its hello-ok snapshot too.
    let late = tracked_client(&c.b, "late").await;
    let snapshot = instances(&late.hello()["snapshot"]["presence"]);
    assert!(snapshot.contains(&"visitor".to_string()), "{snapshot:?}");
    assert!(
        snapshot.contains(&"late".to_string()),
        "a client is listed in its own hello-ok"
    );
    let version_before = late.hello()["snapshot"]["stateVersion"]["presence"]
        .as_u64()
        .unwrap();

    // Disconnecting from A reaches B as a `presence` event.
    visitor.close().await;
    let event = loop {
        let event = watcher
            .wait_event("presence", Duration::from_secs(5))
            .await
            .expect("presence event on B");
        if !instances(&event.payload["presence"]).contains(&"visitor".to_string()) {
            break event;
        }
    };
    let version = event.state_version.expect("stateVersion on presence")["presence"]
        .as_u64()
        .unwrap();
    assert!(
        version > version_before,
        "presence version never goes backwards"
    );
    assert!(event.seq.is_some());
}

#[tokio::test]
async fn forwarded_methods_share_state_across_gateways() {
    let c = cluster().await;
    let on_a = c.a.client().await.unwrap();
    let on_b = c.b.client().await.unwrap();
    let set = on_a
        .call(
            "agents.files.set",
            json!({"agentId":"main","name":"SOUL.md","content":"Be kind."}),
        )
        .await
        .unwrap();
    assert_eq!(set["ok"], true);
    assert_eq!(set["file"]["size"], 8);
    let got = on_b
        .call(
            "agents.files.get",
            json!({"agentId":"main","name":"SOUL.md"}),
        )
        .await
        .unwrap();
    assert_eq!(got["file"]["content"], "Be kind.");
    assert_eq!(got["file"]["missing"], false);
    let list = on_b
        .call("agents.files.list", json!({"agentId":"main"}))
        .await
        .unwrap();
    let names: Vec<&str> = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "AGENTS.md",
            "SOUL.md",
            "TOOLS.md",
            "IDENTITY.md",
            "USER.md",
            "HEARTBEAT.md",
            "BOOTSTRAP.md",
            "MEMORY.md"
        ]
    );
    let agents = on_b.call("agents.list", json!({})).await.unwrap();
    assert_eq!(agents["defaultId"], "main");
    assert_eq!(
        on_a.call(
            "agents.files.get",
            json!({"agentId":"main","name":"../../etc/passwd"})
        )
        .await
        .unwrap_err()
        .to_string(),
        "unsupported file \"../../etc/passwd\" (INVALID_REQUEST)"
    );
    match on_a
        .call(
            "agents.files.get",
            json!({"agentId":"ghost","name":"SOUL.md"}),
        )
        .await
    {
        Err(ClientError::Call(e)) => assert_eq!(e.message, "unknown agent id"),
        other => panic!("{other:?}"),
    }
    let identity = on_b
        .call(
            "agent.identity.get",
            json!({"sessionKey":"agent:main:main"}),
        )
        .await
        .unwrap();
    assert_eq!(identity["agentId"], "main");
}

#[tokio::test]
async fn idempotent_calls_fail_over_when_a_node_dies() {
    let mut c = cluster().await;
    let client = c.a.client().await.unwrap();
    let params = json!({"agentId":"main","name":"SOUL.md"});
    // Written through the node that owns the routing key "main" …
    client
        .call(
            "agents.files.set",
            json!({"agentId":"main","name":"SOUL.md","content":"kept in shared state"}),
        )
        .await
        .unwrap();

    // Kill the node that owns the routing key "main", as a crash (no deregistration).
    let owner = argent_tests::route_owner("agents", "main", &["node-1", "node-2"]);
    let index = c.nodes.iter().position(|n| n.id == owner).unwrap();
    c.nodes[index].proc.kill();
    // The gateways still believe it is alive. Gateway B never opened a connection to it, so
    // its call is refused before anything is sent: even a call that is not idempotent moves
    // on. (Through A, whose pooled connection just broke, such a call may have been sent and
    // is not repeated.)
    let on_b = c.b.client().await.unwrap();
    let reset = on_b
        .call("sessions.reset", json!({"key": "main"}))
        .await
        .expect("a refused connection fails over");
    assert_eq!(reset["ok"], true);
    // … and idempotent calls keep working.
    for _ in 0..5 {
        let got = client
            .call("agents.files.get", params.clone())
            .await
            .expect("failover to the survivor");
        // … read back through the other node: the file lives in the state plane.
        assert_eq!(got["file"]["content"], "kept in shared state");
    }
    // The dead node leaves the registry within a few seconds.
    let gone = eventually(Duration::from_secs(6), || async {
        let status = client.call("status", json!({})).await.ok()?;
        (status["cluster"]["nodes"].as_array()?.len() == 1).then_some(())
    })
    .await;
    assert!(gone.is_some(), "stale node still listed");

    // With no node left: a clear, retryable UNAVAILABLE.
    c.nodes.iter_mut().for_each(|n| n.proc.kill());
    let error = eventually(Duration::from_secs(6), || async {
        match client.call("agents.files.get", params.clone()).await {
            Err(ClientError::Call(e)) if e.message.contains("no live node-agent") => Some(e),
            _ => None,
        }
    })
    .await
    .expect("no-node error");
    assert_eq!(error.code, "UNAVAILABLE");
    assert_eq!(error.retryable, Some(true));
}

#[tokio::test]
async fn nats_outage_degrades_then_recovers() {
    let mut c = cluster().await;
    let client = c.a.client().await.unwrap();
    let params = json!({"agentId":"main","name":"SOUL.md"});
    c.nats.stop();

    // Connections stay, health answers and says why the cluster is degraded.
    let degraded = eventually(Duration::from_secs(8), || async {
        let health = client.call("health", json!({"probe": true})).await.ok()?;
        (health["cluster"]["degraded"] == true
            && health["cluster"]["reasons"].to_string().contains("NATS"))
        .then_some(health)
    })
    .await
    .expect("health reports the outage");
    assert!(!degraded["criticalAlerts"].as_array().unwrap().is_empty());
    assert_eq!(c.a.http_get("/readyz").await.unwrap().0, 503);
    assert_eq!(c.a.http_get("/healthz").await.unwrap().0, 200);

    // State methods fail fast with a retryable UNAVAILABLE.
    let started = std::time::Instant::now();
    match client.call("agents.files.get", params.clone()).await {
        Err(ClientError::Call(e)) => {
            assert_eq!(e.code, "UNAVAILABLE");
            assert_eq!(e.retryable, Some(true), "{e:?}");
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
    // Once the node records go stale, the reason given is still NATS, not missing
    // node-agents (both are running).
    let named = eventually(Duration::from_secs(10), || async {
        match client.call("agents.files.get", params.clone()).await {
            Err(ClientError::Call(e)) => {
                assert!(!e.message.contains("argent-node run"), "{e:?}");
                e.message.contains("NATS is unreachable").then_some(e)
            }
            _ => None,
        }
    })
    .await
    .expect("the outage is named");
    assert_eq!(named.details.unwrap()["reason"], "nats_unreachable");

    // Everything reconnects by itself.
    c.nats.restart().unwrap();
    let back = eventually(Duration::from_secs(20), || async {
        client.call("agents.files.get", params.clone()).await.ok()
    })
    .await;
    assert!(back.is_some(), "forwarding works again after NATS is back");
    let ready = eventually(Duration::from_secs(10), || async {
        (c.a.http_get("/readyz").await.ok()?.0 == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready again once NATS is back");
    let health = client.call("health", json!({"probe": true})).await.unwrap();
    assert_eq!(health["cluster"]["degraded"], false, "{health}");
}

#[tokio::test]
async fn in_cluster_mode_the_shared_environment_token_wins_over_a_local_file() {
    let nats = Nats::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let local_token = "1".repeat(48);
    std::fs::write(
        state.path().join("argent.json"),
        format!(r#"{{"gateway":{{"auth":{{"token":"{local_token}"}}}}}}"#),
    )
    .unwrap();
    let gw = Gateway::cluster(&nats)
        .state_dir(state.path())
        .start()
        .await
        .unwrap();
    assert!(
        gw.client().await.is_ok(),
        "the cluster token (environment) is accepted"
    );
    let mut options = gw.options();
    options.token = Some(local_token);
    assert!(
        Client::connect(&options).await.is_err(),
        "the file's token is not"
    );
}

#[tokio::test]
async fn node_agents_refuse_calls_without_the_credential() {
    use argent_proto::grpc::node_agent_client::NodeAgentClient;
    use argent_proto::grpc::{InvokeRequest, PingRequest};
    let c = cluster().await;
    let address = c.nodes[0].grpc.clone();
    let mut client = NodeAgentClient::connect(address).await.unwrap();

    let status = client.ping(PingRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let mut wrong = tonic::Request::new(InvokeRequest {
        method: "agents.list".into(),
        params_json: "{}".into(),
        ..Default::default()
    });
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        client.invoke(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    // Not even the cluster secret itself: gateways present a credential derived per node.
    let mut raw = tonic::Request::new(PingRequest {});
    raw.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    assert_eq!(
        client.ping(raw).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    let mut right = tonic::Request::new(PingRequest {});
    right.metadata_mut().insert(
        "authorization",
        format!(
            "Bearer {}",
            argent_planes::calls::node_call_secret(TOKEN, "node-1")
        )
        .parse()
        .unwrap(),
    );
    let pong = client.ping(right).await.unwrap().into_inner();
    assert_eq!(pong.node_id, "node-1");
    assert_eq!(
        pong.capabilities,
        ["agents", "knowledge", "tts", "channels"]
            .map(String::from)
            .to_vec()
    );
}

#[tokio::test]
async fn sigterm_sends_shutdown_closes_1012_and_deregisters() {
    let mut c = cluster().await;
    let mut client = tracked_client(&c.a, "leaving").await;
    let observer = c.b.client().await.unwrap();
    let status = c.a.proc.terminate(Duration::from_secs(10)).unwrap();
    let shutdown = client
        .wait_event("shutdown", Duration::from_secs(5))
        .await
        .expect("shutdown event");
    assert_eq!(shutdown.payload["restartExpectedMs"], 1500);
    let closed = client.closed(Duration::from_secs(5)).await.expect("closed");
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1012, "service restart")
    );
    assert!(status.success(), "exit status {status:?}");
    // Gateway B stops listing A at once (clean deregistration).
    let gone = eventually(Duration::from_secs(3), || async {
        let status = observer.call("status", json!({})).await.ok()?;
        (status["cluster"]["gateways"].as_array()?.len() == 1).then_some(())
    })
    .await;
    assert!(gone.is_some());
    let list = observer.call("system-presence", json!({})).await.unwrap();
    assert!(!instances(&list).contains(&"leaving".to_string()));
}

/// A node-agent that hangs (SIGSTOP) with calls in flight: those calls fail over to the
/// other node within the registry's liveness bound, instead of waiting on the transport.
#[tokio::test]
async fn calls_in_flight_to_a_hung_node_move_on_within_seconds() {
    let c = cluster().await;
    let client = std::sync::Arc::new(c.a.client().await.unwrap());
    // Warm both nodes' connections (a hang is only seen on an open connection).
    for agent in ["a1", "a2", "a3", "a4", "a5", "a6"] {
        let _ = client
            .call(
                "agents.files.get",
                json!({"agentId": agent, "name": "SOUL.md"}),
            )
            .await;
    }
    let hung = c.nodes[0].proc.pid();
    argent_tests::signal(hung, "STOP");
    // Routed by agent id: some of these go to the hung node.
    let calls: Vec<_> = ["a1", "a2", "a3", "a4", "a5", "a6"]
        .into_iter()
        .map(|agent| {
            let client = client.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let answer = client
                    .call(
                        "agents.files.get",
                        json!({"agentId": agent, "name": "SOUL.md"}),
                    )
                    .await;
                (agent, started.elapsed(), answer)
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (agent, took, answer) = call.await.unwrap();
        // An answer from a node (a file, or the node's own error about the agent), never
        // the transport giving up.
        if let Err(ClientError::Call(e)) = &answer {
            assert_ne!(e.code, "UNAVAILABLE", "{agent}: {e:?}");
        }
        slowest = slowest.max(took);
    }
    argent_tests::signal(hung, "CONT");
    assert!(
        slowest > Duration::from_millis(500),
        "no call met the hung node (pick other agent ids): {slowest:?}"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "the slowest call took {slowest:?}"
    );
}

/// Sizes are those of the one-process default although NATS keeps its 1 MiB `max_payload`
/// (the harness's servers do): what one NATS message cannot hold — a 5 MB workspace file,
/// 1.75 MB chat messages, the `chat` events carrying them, a 5.25 MB `chat.history` (its
/// budget is 6 MiB, PROTOCOL.md §1.7) — goes through
/// the JetStream object store, written on one gateway and read on the other.
#[tokio::test]
async fn large_payloads_pass_a_nats_at_its_1_mib_default() {
    let c = cluster().await;
    let client = c.a.client().await.unwrap();
    let other = c.b.client().await.unwrap();
    assert_eq!(argent_tests::NATS_MAX_PAYLOAD, 1024 * 1024);
    assert_eq!(
        client.hello()["policy"]["maxPayload"],
        argent_proto::limits::MAX_PAYLOAD
    );

    let file = |content: &str| json!({"agentId": "main", "name": "MEMORY.md", "content": content});
    let read_file = || async {
        let got = other
            .call(
                "agents.files.get",
                json!({"agentId": "main", "name": "MEMORY.md"}),
            )
            .await
            .unwrap();
        got["file"]["content"].as_str().unwrap().to_string()
    };
    let five_mb = "x".repeat(5 * 1024 * 1024);
    client
        .call("agents.files.set", file(&five_mb))
        .await
        .unwrap();
    assert!(
        read_file().await == five_mb,
        "the 5 MB file read back differs"
    );
    // Replaced by a small value, then by another large one: each read sees the latest.
    client
        .call("agents.files.set", file("small"))
        .await
        .unwrap();
    assert_eq!(read_file().await, "small");
    let six_mb = "w".repeat(6 * 1024 * 1024);
    client
        .call("agents.files.set", file(&six_mb))
        .await
        .unwrap();
    assert!(
        read_file().await == six_mb,
        "the 6 MB file read back differs"
    );

    // Three 1.75 MB chat messages: stored, their `chat` events delivered on the other
    // gateway, and the whole 5.25 MB history read back there.
    client
        .call("sessions.patch", json!({"key": "big", "label": "big"}))
        .await
        .unwrap();
    let mut watcher = c.b.client().await.unwrap();
    let texts: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|c| c.repeat(1_750_000))
        .collect();
    for text in &texts {
        client
            .call("chat.inject", json!({"sessionKey": "big", "message": text}))
            .await
            .unwrap();
        let delivered = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let event = watcher.next_event().await.expect("open");
                if event.name == "chat" && event.payload["state"] == "final" {
                    return event;
                }
            }
        })
        .await
        .expect("the chat event of a stored 1.75 MB message is delivered");
        assert!(
            delivered.payload.to_string().contains(text.as_str()),
            "the chat event lacks the message"
        );
    }
    let history = other
        .call("chat.history", json!({"sessionKey": "big", "limit": 1000}))
        .await
        .unwrap();
    let history = history["messages"].to_string();
    assert!(history.len() > 5_250_000, "{} bytes", history.len());
    for text in &texts {
        assert!(
            history.contains(text.as_str()),
            "a 1.75 MB message is missing"
        );
    }
}
