//! The agent runtime in the one-process default, against the model-provider test double:
//! streaming and `seq` rules, the `agent` method's two answers, tool events, idempotency,
//! retries, queueing, steering, Agent Busy, sessions and models.

use std::time::Duration;

use serde_json::{json, Value};

use argent_client::{Client, ClientError, Event};
use argent_tests::model_double::ModelDouble;
use argent_tests::Gateway;

/// A config with two providers served by the double: OpenAI-compatible (default) and
/// Anthropic (used by agent `claude`).
pub fn model_config(double: &ModelDouble) -> Value {
    json!({
        "models": {"providers": {
            "double": {"api": "openai-completions", "baseUrl": double.openai_base(), "apiKeyEnv": "DOUBLE_KEY",
                       "maxRetries": 3, "models": [{"id": "double-model", "name": "Double", "contextWindow": 32000}]},
            "claude": {"api": "anthropic-messages", "baseUrl": double.anthropic_base(), "apiKey": "anthropic-test-key",
                       "models": [{"id": "claude-double"}]}
        }},
        "agents": {
            "defaults": {"model": {"primary": "double/double-model"}},
            "list": [{"id": "main", "default": true}, {"id": "claude", "model": "claude/claude-double"}]
        }
    })
}

pub async fn local_gateway(config: &Value) -> Gateway {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("argent.json"), config.to_string()).unwrap();
    Gateway::local()
        .state_dir(&dir)
        .env("DOUBLE_KEY", "double-secret")
        .start()
        .await
        .unwrap()
}

pub async fn tool_client(gw: &Gateway) -> Client {
    gw.client_with(|o| o.caps = vec!["tool-events".into()])
        .await
        .unwrap()
}

/// Events of one run until (and including) its `chat` end state (and, for `agent` runs,
/// until `run_complete`).
pub async fn run_events(client: &mut Client, run_id: &str, until_run_complete: bool) -> Vec<Event> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut chat_done, mut complete) = (false, !until_run_complete);
    while !(chat_done && complete) {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("run {run_id} did not end; got {:?}", names(&out)))
            .expect("connection open");
        if event.payload["runId"] != run_id {
            continue;
        }
        if event.name == "chat" && event.payload["state"] != "delta" {
            chat_done = true;
        }
        if event.name == "agent" && event.payload["data"]["phase"] == "run_complete" {
            complete = true;
        }
        out.push(event);
    }
    out
}

fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e.name,
                e.payload["state"]
                    .as_str()
                    .or(e.payload["stream"].as_str())
                    .unwrap_or("")
            )
        })
        .collect()
}

/// The text of each message of a session's history.
pub async fn history_texts(client: &Client, session: &str) -> Vec<String> {
    let history = client
        .call("chat.history", json!({"sessionKey": session}))
        .await
        .unwrap();
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The per-run `seq` of each `agent` event, in arrival order.
pub fn agent_seqs(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.name == "agent")
        .map(|e| e.payload["seq"].as_u64().unwrap())
        .collect()
}

/// Per-run `seq` of the broadcast `agent` events is strictly +1 from 1 (tool events aside).
pub fn assert_run_seq(events: &[Event]) {
    let seqs = agent_seqs(events);
    assert!(!seqs.is_empty());
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "agent seq"
    );
}

pub fn final_text(events: &[Event]) -> String {
    let end = events
        .iter()
        .rev()
        .find(|e| e.name == "chat" && e.payload["state"] != "delta")
        .expect("a chat end event");
    end.payload["message"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn chat_send_streams_deltas_and_keeps_the_transcript() {
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let mut client = gw.client().await.unwrap();
    let ack = client
        .call("chat.send", json!({"sessionKey": "main", "message": "hello there [[delay:40]]", "idempotencyKey": "run-1"}))
        .await
        .unwrap();
    assert_eq!(ack, json!({"runId": "run-1", "status": "started"}));
    let events = run_events(&mut client, "run-1", false).await;
    assert_run_seq(&events);
    let start = &events[0];
    assert_eq!(start.payload["data"]["phase"], "start");
    assert_eq!(start.payload["sessionKey"], "agent:main:main");
    // Deltas carry the whole text so far, at most one per 150 ms; chat reuses the agent seq.
    let deltas: Vec<&Event> = events
        .iter()
        .filter(|e| e.payload["state"] == "delta")
        .collect();
    assert!(!deltas.is_empty());
    assert!(deltas.len() < 8, "deltas are throttled: {}", deltas.len());
    for delta in &deltas {
        assert_eq!(delta.payload["sessionKey"], "main");
        let text = delta.payload["message"]["content"][0]["text"]
            .as_str()
            .unwrap();
        assert!("echo: hello there".starts_with(text), "{text}");
    }
    let last = events.last().unwrap();
    assert_eq!(last.payload["state"], "final");
    assert_eq!(final_text(&events), "echo: hello there");
    let end = events
        .iter()
        .find(|e| e.payload["data"]["phase"] == "end")
        .unwrap();
    assert_eq!(last.payload["seq"], end.payload["seq"]);
    // The frame seq of the connection is +1 per event it got.
    let frame: Vec<u64> = events.iter().filter_map(|e| e.seq).collect();
    assert!(frame.windows(2).all(|w| w[1] > w[0]));
    // The key of the provider came from the environment variable named in the config.
    let request = double.requests().pop().unwrap();
    assert_eq!(request.auth.as_deref(), Some("Bearer double-secret"));

    let history = client
        .call("chat.history", json!({"sessionKey": "main"}))
        .await
        .unwrap();
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{history}");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[1]["content"][0]["text"], "echo: hello there");

    let sessions = client
        .call("sessions.list", json!({"includeLastMessage": true}))
        .await
        .unwrap();
    let row = &sessions["sessions"][0];
    assert_eq!(row["key"], "agent:main:main");
    assert_eq!(row["kind"], "direct");
    assert!(row["totalTokens"].as_u64().unwrap() > 0, "{row}");
    assert_eq!(row["lastMessagePreview"], "echo: hello there");
    assert_eq!(sessions["defaults"]["contextTokens"], 32000);
    // Filters: kind, case-insensitive search, agent.
    let filtered = |params: Value| {
        let client = &client;
        async move { client.call("sessions.list", params).await.unwrap()["count"].clone() }
    };
    assert_eq!(filtered(json!({"kinds": ["group"]})).await, 0);
    assert_eq!(
        filtered(json!({"search": "MAIN:MA", "limit": 1, "agentId": "main"})).await,
        1
    );
    assert_eq!(filtered(json!({"search": "nothing like it"})).await, 0);
    assert_eq!(filtered(json!({"agentId": "claude"})).await, 0);

    let preview = client
        .call("sessions.preview", json!({"keys": ["main", "nope"]}))
        .await
        .unwrap();
    assert_eq!(preview["previews"][0]["status"], "ok");
    assert_eq!(preview["previews"][0]["items"][1]["role"], "assistant");
    assert_eq!(preview["previews"][1]["status"], "missing");

    // Configured models plus the provider's own listing; no key anywhere.
    let models = client.call("models.list", json!({})).await.unwrap();
    let ids: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"double-model")
            && ids.contains(&"double-mini")
            && ids.contains(&"claude-double"),
        "{models}"
    );
    assert!(!models.to_string().contains("secret") && !models.to_string().contains("test-key"));
}

#[tokio::test]
async fn without_a_provider_chat_send_says_how_to_configure_one() {
    let gw = local_gateway(&json!({})).await;
    let client = gw.client().await.unwrap();
    let err = client
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": "hi", "idempotencyKey": "k"}),
        )
        .await
        .unwrap_err();
    let ClientError::Call(err) = err else {
        panic!("{err}")
    };
    assert_eq!(err.code, "UNAVAILABLE");
    assert!(
        err.message.contains("models.providers") && err.message.contains("README"),
        "{}",
        err.message
    );
    // Bad params keep the protocol's shape.
    let err = client
        .call("chat.send", json!({"sessionKey": "main", "message": "hi"}))
        .await
        .unwrap_err();
    let ClientError::Call(err) = err else {
        panic!("{err}")
    };
    assert_eq!(
        err.message,
        "invalid chat.send params: at root: must have required property 'idempotencyKey'"
    );
    assert_eq!(err.details.unwrap()["jsonrpcCode"], -32602);
}

#[tokio::test]
async fn agent_answers_twice_and_tool_events_reach_only_their_starter() {
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let mut starter = tool_client(&gw).await;
    let mut watcher = gw.client().await.unwrap();
    starter
        .call(
            "agents.files.set",
            json!({"agentId": "main", "name": "IDENTITY.md", "content": "I am Argent the tester."}),
        )
        .await
        .unwrap();
    let (ack, last) = starter
        .request_twice(
            "agent",
            json!({"message": "who are you [[tool:IDENTITY.md]]", "idempotencyKey": "msg-1"}),
        )
        .await
        .unwrap();
    assert!(ack.ok);
    let ack = ack.payload.unwrap();
    assert_eq!(ack["status"], "accepted");
    assert_eq!(ack["runId"], "msg-1");
    let final_frame = tokio::time::timeout(Duration::from_secs(30), last)
        .await
        .unwrap()
        .unwrap();
    assert!(final_frame.ok);
    let payload = final_frame.payload.unwrap();
    assert_eq!(payload["status"], "ok");
    assert_eq!(payload["summary"], "completed");
    let text = payload["result"]["payloads"][0]["text"].as_str().unwrap();
    assert_eq!(text, "tool said: I am Argent the tester.");
    // The workspace document is in the system prompt of every request.
    assert!(double
        .requests()
        .iter()
        .all(|r| r.system.contains("I am Argent the tester.")));

    let mine = run_events(&mut starter, "msg-1", true).await;
    let tools: Vec<&Event> = mine
        .iter()
        .filter(|e| e.payload["stream"] == "tool")
        .collect();
    assert_eq!(tools.len(), 2, "{:?}", names(&mine));
    assert!(
        tools.iter().all(|e| e.seq.is_none()),
        "tool events carry no frame seq"
    );
    assert_eq!(tools[0].payload["data"]["phase"], "start");
    assert_eq!(
        tools[1].payload["data"]["result"],
        "I am Argent the tester."
    );
    assert_eq!(
        mine.last().unwrap().payload["data"]["phase"],
        "run_complete"
    );
    let all = agent_seqs(&mine);
    assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>());

    // The watcher sees the same run with gaps exactly where the tool events were.
    let theirs = run_events(&mut watcher, "msg-1", true).await;
    assert!(theirs.iter().all(|e| e.payload["stream"] != "tool"));
    let seqs = agent_seqs(&theirs);
    assert_eq!(seqs.len() + 2, all.len());

    // Same key again: the cached final payload, at once.
    let again = starter
        .call(
            "agent",
            json!({"message": "who are you [[tool:IDENTITY.md]]", "idempotencyKey": "msg-1"}),
        )
        .await
        .unwrap();
    assert_eq!(again["status"], "ok");
    let waited = starter
        .call("agent.wait", json!({"runId": "msg-1", "timeoutMs": 0}))
        .await
        .unwrap();
    assert_eq!(waited["status"], "ok");
    assert!(waited["endedAt"].as_u64().is_some());
    let unknown = starter
        .call("agent.wait", json!({"runId": "nope", "timeoutMs": 100}))
        .await
        .unwrap();
    assert_eq!(unknown, json!({"runId": "nope", "status": "timeout"}));

    // An unknown agent is refused like upstream.
    let err = starter
        .call(
            "agent",
            json!({"message": "x", "idempotencyKey": "k2", "agentId": "ghost"}),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown agent id \"ghost\""),
        "{err}"
    );
}

#[tokio::test]
async fn anthropic_retries_and_broken_streams() {
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let mut client = gw.client().await.unwrap();
    // Anthropic Messages for agent `claude`.
    client
        .call(
            "agent",
            json!({"message": "bonjour", "idempotencyKey": "c1", "agentId": "claude"}),
        )
        .await
        .unwrap();
    let events = run_events(&mut client, "c1", true).await;
    assert_eq!(final_text(&events), "echo: bonjour");
    assert_eq!(events[0].payload["sessionKey"], "agent:claude:main");
    let anthropic = double
        .requests()
        .into_iter()
        .find(|r| r.last_user.contains("bonjour"))
        .unwrap();
    assert_eq!(anthropic.auth.as_deref(), Some("anthropic-test-key"));

    // 429 twice, then fine: retried with backoff, one answer.
    client
        .call("chat.send", json!({"sessionKey": "s429", "message": "[[status:429:2]] patience", "idempotencyKey": "r429"}))
        .await
        .unwrap();
    let events = run_events(&mut client, "r429", false).await;
    assert_eq!(final_text(&events), "echo: patience");
    assert_eq!(double.count_matching("patience"), 3);

    // A stream cut after some text: the run ends with a chat error (no hang, no retry).
    client
        .call("chat.send", json!({"sessionKey": "cut", "message": "[[cut:2]] a long answer", "idempotencyKey": "rcut"}))
        .await
        .unwrap();
    let events = run_events(&mut client, "rcut", false).await;
    let last = events.last().unwrap();
    assert_eq!(last.payload["state"], "error", "{:?}", last.payload);
    assert!(
        last.payload["errorMessage"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{}",
        last.payload
    );
    assert!(events.iter().any(|e| e.payload["data"]["phase"] == "error"));
    let waited = client
        .call("agent.wait", json!({"runId": "rcut"}))
        .await
        .unwrap();
    assert_eq!(waited["status"], "error");
}

#[tokio::test]
async fn queue_steer_abort_busy_and_idempotency() {
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let mut client = gw.client().await.unwrap();
    let send = |key: &str, message: &str| json!({"sessionKey": "work", "message": message, "idempotencyKey": key});
    // A slow first run; a second message queues behind it (cue is the default).
    assert_eq!(
        client
            .call("chat.send", send("q1", "first [[delay:150]]"))
            .await
            .unwrap()["status"],
        "started"
    );
    assert_eq!(
        client
            .call("chat.send", send("q2", "second"))
            .await
            .unwrap()["status"],
        "started"
    );
    assert_eq!(
        client
            .call("chat.send", send("q1", "first [[delay:150]]"))
            .await
            .unwrap()["status"],
        "in_flight"
    );
    // Steering goes into the active run.
    let steered = client
        .call("chat.send", json!({"sessionKey": "work", "message": "also this", "idempotencyKey": "st", "busyMode": "steer"}))
        .await
        .unwrap();
    assert_eq!(steered["status"], "steered");
    assert_eq!(steered["targetRunId"], "q1");
    let first = run_events(&mut client, "q1", false).await;
    let first_text = final_text(&first);
    // Steered before or during the first model turn: either way the run answers it.
    assert!(first_text.ends_with("echo: also this"), "{first_text}");
    let second = run_events(&mut client, "q2", false).await;
    assert_eq!(final_text(&second), "echo: second");
    // The queued run saw the whole conversation, steering included.
    let request = double.request_for("second");
    // system prompt, user, steered user, the reply to both (one transcript message), user.
    assert_eq!(request.message_count, 5);
    assert!(double.requests().iter().any(|r| r.last_user == "also this"));
    assert_eq!(
        client
            .call("chat.send", send("q2", "second"))
            .await
            .unwrap()["status"],
        "ok"
    );

    // Fill the queue behind a hanging run: the next message is Agent Busy.
    assert_eq!(
        client
            .call("chat.send", send("h0", "[[hang]] hold"))
            .await
            .unwrap()["status"],
        "started"
    );
    for i in 1..=8 {
        client
            .call("chat.send", send(&format!("h{i}"), "waiting"))
            .await
            .unwrap();
    }
    let err = client
        .call("chat.send", send("h9", "one too many"))
        .await
        .unwrap_err();
    let ClientError::Call(err) = err else {
        panic!("{err}")
    };
    assert_eq!(err.code, "UNAVAILABLE");
    assert_eq!(err.retryable, Some(true));
    assert!(err.retry_after_ms.is_some());
    let details = err.details.unwrap();
    assert_eq!(
        (details["jsonrpcCode"].clone(), details["reason"].clone()),
        (json!(-32000), json!("agent_busy"))
    );
    // A run id of another session, and steering where nothing runs.
    let err = client
        .call(
            "chat.abort",
            json!({"sessionKey": "elsewhere", "runId": "h0"}),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("runId does not match sessionKey"),
        "{err}"
    );
    let idle = client
        .call("chat.send", json!({"sessionKey": "idle", "message": "hey", "idempotencyKey": "s1", "busyMode": "steer"}))
        .await
        .unwrap();
    assert_eq!(idle, json!({"runId": "s1", "status": "not_active"}));
    // reset and compact refuse a running session the same way.
    let err = client
        .call("sessions.reset", json!({"key": "work"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("agent busy"), "{err}");

    // A stop command aborts everything in the session.
    let stopped = client
        .call("chat.send", send("stop-1", "/stop"))
        .await
        .unwrap();
    assert_eq!(stopped["aborted"], true);
    assert_eq!(stopped["runIds"].as_array().unwrap().len(), 9);
    let hung = run_events(&mut client, "h0", false).await;
    let last = hung.last().unwrap();
    assert_eq!(
        (
            last.payload["state"].clone(),
            last.payload["stopReason"].clone()
        ),
        (json!("aborted"), json!("stop"))
    );
    let waited = client
        .call("agent.wait", json!({"runId": "h5", "timeoutMs": 5000}))
        .await
        .unwrap();
    assert_eq!(waited["aborted"], true);
    // The session is free again: the busy key can be used now.
    assert_eq!(
        client.call("chat.send", send("h9", "now")).await.unwrap()["status"],
        "started"
    );
    run_events(&mut client, "h9", false).await;
    // The lease is released just after the final event: a retry (as the error invites) works.
    let reset = argent_tests::eventually(Duration::from_secs(5), || async {
        client
            .call("sessions.reset", json!({"key": "work"}))
            .await
            .ok()
    })
    .await
    .expect("reset once the run ended");
    assert_eq!(reset["key"], "agent:main:work");
    let history = client
        .call("chat.history", json!({"sessionKey": "work"}))
        .await
        .unwrap();
    assert_eq!(history["messages"], json!([]));
}

#[tokio::test]
async fn inject_and_compaction() {
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let mut client = gw.client().await.unwrap();
    let err = client
        .call(
            "chat.inject",
            json!({"sessionKey": "notes", "message": "x"}),
        )
        .await
        .unwrap_err();
    let ClientError::Call(err) = err else {
        panic!("{err}")
    };
    assert_eq!(
        (
            err.message.as_str(),
            err.details.unwrap()["jsonrpcCode"].clone()
        ),
        ("session not found", json!(-32001))
    );
    for i in 0..4 {
        let key = format!("n{i}");
        client
            .call("chat.send", json!({"sessionKey": "notes", "message": format!("note {i}"), "idempotencyKey": key}))
            .await
            .unwrap();
        run_events(&mut client, &key, false).await;
    }
    let injected = client
        .call(
            "chat.inject",
            json!({"sessionKey": "notes", "message": "reminder", "label": "cron"}),
        )
        .await
        .unwrap();
    let run_id = format!("inject-{}", injected["messageId"].as_str().unwrap());
    let event = client
        .wait_event("chat", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (
            event.payload["runId"].as_str(),
            event.payload["seq"].as_u64()
        ),
        (Some(run_id.as_str()), Some(0))
    );
    assert_eq!(
        event.payload["message"]["content"][0]["text"],
        "[cron] reminder"
    );

    // 9 messages; keep 3, the rest becomes a model-written summary.
    let compacted = client
        .call("sessions.compact", json!({"key": "notes", "maxLines": 3}))
        .await
        .unwrap();
    assert_eq!(
        (
            compacted["compacted"].clone(),
            compacted["kept"].clone(),
            compacted["summarized"].clone()
        ),
        (json!(true), json!(3), json!(true))
    );
    // Archived in the state dir's database (argent.fjall#tx/archive/<session>/<n>).
    assert!(compacted["archived"]
        .as_str()
        .unwrap()
        .contains("argent.fjall#tx/archive/"));
    let history = client
        .call("chat.history", json!({"sessionKey": "notes"}))
        .await
        .unwrap();
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0]["role"], "system");
    // The double counts the messages it summarized (system prompt + the conversation).
    assert_eq!(messages[0]["content"][0]["text"], "SUMMARY(2)");
    let short = client
        .call("sessions.compact", json!({"key": "notes", "maxLines": 10}))
        .await
        .unwrap();
    assert_eq!(
        (short["compacted"].clone(), short["kept"].clone()),
        (json!(false), json!(4))
    );
    let none = client
        .call("sessions.compact", json!({"key": "never"}))
        .await
        .unwrap();
    assert_eq!(none["reason"], "no sessionId");
    // The next turn gets the summary in its system prompt.
    client
        .call(
            "chat.send",
            json!({"sessionKey": "notes", "message": "after", "idempotencyKey": "after"}),
        )
        .await
        .unwrap();
    run_events(&mut client, "after", false).await;
    let request = double.request_for("after");
    assert!(request.system.contains("SUMMARY(2)"), "{}", request.system);
    let command = client
        .call("commands.compact", json!({"sessionKey": "notes"}))
        .await
        .unwrap();
    assert_eq!(command["compacted"], true);
    assert!(command["tokensAfter"].as_u64() < command["tokensBefore"].as_u64());
}

#[tokio::test]
async fn argent_chat_streams_the_reply_to_the_terminal() {
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let state_dir = gw.state_dir.clone();
    let url = gw.ws.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(argent_tests::bin_dir().join("argent"))
            .args([
                "chat",
                "hello from the terminal [[delay:20]]",
                "--url",
                &url,
            ])
            .arg("--state-dir")
            .arg(&state_dir)
            .env_remove("ARGENT_GATEWAY_TOKEN")
            .output()
            .expect("argent runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "echo: hello from the terminal"
    );
}

#[tokio::test]
async fn a_message_sent_during_compaction_waits_for_it_and_is_kept() {
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let mut client = gw.client().await.unwrap();
    for (key, message) in [("m1", "[[first:800]] slow note"), ("m2", "second note")] {
        client
            .call(
                "chat.send",
                json!({"sessionKey": "maint", "message": message, "idempotencyKey": key}),
            )
            .await
            .unwrap();
        run_events(&mut client, key, false).await;
    }
    // The summary request carries the first note's directive: it takes 0.8 s, and a message
    // sent meanwhile must neither run on the old transcript nor be purged with it.
    let compacting = client.call("sessions.compact", json!({"key": "maint", "maxLines": 1}));
    let sending = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client
            .call(
                "chat.send",
                json!({"sessionKey": "maint", "message": "during", "idempotencyKey": "m3"}),
            )
            .await
    };
    let (compacted, sent) = tokio::join!(compacting, sending);
    assert_eq!(compacted.unwrap()["summarized"], true);
    assert_eq!(sent.unwrap()["status"], "started");
    run_events(&mut client, "m3", false).await;
    let texts = history_texts(&client, "maint").await;
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert!(texts[0].starts_with("SUMMARY("));
    assert_eq!(&texts[1..], ["echo: second note", "during", "echo: during"]);
}

#[tokio::test]
async fn agents_list_names_the_model_each_agent_runs_on() {
    let double = ModelDouble::start().await;
    let gw = local_gateway(&model_config(&double)).await;
    let client = gw.client().await.unwrap();
    let list = client.call("agents.list", json!({})).await.unwrap();
    let model_of = |id: &str| {
        list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .map(|a| a["model"].clone())
    };
    // The dashboard enables sending for an agent whose model it knows.
    assert_eq!(
        model_of("main"),
        Some(json!({"primary": "double/double-model"}))
    );
    assert_eq!(
        model_of("claude"),
        Some(json!({"primary": "claude/claude-double"}))
    );

    // Without a provider no run could start: no model is claimed.
    let bare = local_gateway(&json!({})).await;
    let list = bare
        .client()
        .await
        .unwrap()
        .call("agents.list", json!({}))
        .await
        .unwrap();
    assert_eq!(list["agents"][0].get("model"), None, "{list}");
}
