//! Shared config, cron, heartbeat and the execution worker across a cluster (PROTOCOL.md
//! §5.3, §5.5, §5.8): concurrent config writes, live reload, exactly-once cron occurrences on
//! three node-agents, a node killed mid-job, one heartbeat and one worker cycle per agent.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use argent_client::Client;
use argent_tests::call_error;
use argent_tests::model_double::ModelDouble;
use argent_tests::{eventually, Nats};

use crate::chat_cluster::{gateway, node, publish_config, wait_nodes};
use crate::chat_local::{local_gateway, model_config};
use argent_tests::Gateway;

async fn config_hash(client: &Client) -> String {
    client.call("config.get", json!({})).await.unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn config_writes_race_safely_and_apply_live_everywhere() {
    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    // The first gateway seeds the shared config from a file; a later seed would not replace it.
    let seed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(seed.path(), "{session: {mainKey: 'main'}} // seeded\n").unwrap();
    let a = Gateway::cluster(&nats)
        .args(&[
            "--gateway-id",
            "gw-a",
            "--config-seed",
            seed.path().to_str().unwrap(),
        ])
        .start()
        .await
        .unwrap();
    let b = gateway(&nats, "gw-b").await;
    let _node = node(&nats, "node-1").await;
    let on_a = a.client().await.unwrap();
    let on_b = b.client().await.unwrap();
    wait_nodes(&on_a, 1).await;

    let got = on_a.call("config.get", json!({})).await.unwrap();
    assert_eq!(
        (got["exists"].clone(), got["valid"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(got["path"], "nats://argent_config/argent.json");
    assert_eq!(got["raw"], "{session: {mainKey: 'main'}} // seeded\n");
    assert_eq!(got["parsed"], json!({"session": {"mainKey": "main"}}));
    let base = got["hash"].as_str().unwrap().to_string();

    // The same baseHash through two gateways at once: exactly one write wins.
    let patch =
        |port: u64| json!({"raw": format!("{{gateway: {{port: {port}}}}}"), "baseHash": base});
    let (first, second) = tokio::join!(
        on_a.call("config.patch", patch(1001)),
        on_b.call("config.patch", patch(1002))
    );
    let results = [first, second];
    let won: Vec<&Value> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert_eq!(won[0]["restart"]["ok"], true);
    let lost = results.into_iter().find(|r| r.is_err()).unwrap();
    let lost = call_error(lost);
    assert_eq!(lost.code, "INVALID_REQUEST");
    assert_eq!(
        lost.message,
        "config changed since last load; re-run config.get and retry"
    );

    // The baseHash rules and validation, with the exact messages.
    let missing = call_error(on_b.call("config.set", json!({"raw": "{}"})).await);
    assert_eq!(
        missing.message,
        "config base hash required; re-run config.get and retry"
    );
    let hash = config_hash(&on_b).await;
    let invalid = call_error(
        on_b.call(
            "config.set",
            json!({"raw": "{gateway: {tickIntervalMs: 'fast'}}", "baseHash": hash}),
        )
        .await,
    );
    assert!(
        invalid
            .message
            .starts_with("invalid config: gateway.tickIntervalMs: "),
        "{}",
        invalid.message
    );
    assert_eq!(
        invalid.details.unwrap()["issues"][0]["path"],
        "gateway.tickIntervalMs"
    );
    let not_object = call_error(
        on_b.call("config.patch", json!({"raw": "[1]", "baseHash": hash}))
            .await,
    );
    assert_eq!(not_object.message, "config.patch raw must be an object");
    let schema = on_b.call("config.schema", json!({})).await.unwrap();
    assert!(schema["schema"].to_string().contains("tickIntervalMs"));
    assert_eq!(
        schema["uiHints"]["models.providers.*.apiKey"]["sensitive"],
        true
    );

    // A change is picked up by gateways and node-agents without a restart.
    assert_eq!(on_b.hello()["policy"]["tickIntervalMs"], 30000);
    let models = on_a.call("models.list", json!({})).await.unwrap();
    assert_eq!(models["models"].as_array().unwrap().len(), 0);
    let mut patch = model_config(&double);
    patch["gateway"] = json!({"tickIntervalMs": 2000});
    on_a.call(
        "config.patch",
        json!({"raw": patch.to_string(), "baseHash": hash}),
    )
    .await
    .unwrap();
    let reloaded = eventually(Duration::from_secs(5), || async {
        let fresh = b.client().await.ok()?;
        (fresh.hello()["policy"]["tickIntervalMs"] == 2000).then_some(())
    })
    .await;
    assert!(
        reloaded.is_some(),
        "gateway B did not apply the new tickIntervalMs"
    );
    let models = on_b.call("models.list", json!({})).await.unwrap();
    assert!(models.to_string().contains("double-model"), "{models}");
    // The secret stays in the raw config only.
    assert!(!models.to_string().contains("anthropic-test-key"));
}

/// `cron.runs` of a job.
async fn runs(client: &Client, id: &str) -> Vec<Value> {
    client
        .call("cron.runs", json!({"id": id, "limit": 5000}))
        .await
        .unwrap()["entries"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn every_second_for_ten_seconds_on_three_nodes_runs_each_occurrence_once() {
    let nats = Nats::start().await.unwrap();
    let gw = gateway(&nats, "gw-a").await;
    let _nodes = [
        node(&nats, "node-1").await,
        node(&nats, "node-2").await,
        node(&nats, "node-3").await,
    ];
    let client = gw.client().await.unwrap();
    wait_nodes(&client, 3).await;
    let anchor = argent_proto::now_ms() + 1000;
    let job = client
        .call(
            "cron.add",
            json!({"name": "tick", "schedule": {"kind": "every", "everyMs": 1000, "anchorMs": anchor},
                   "payload": {"kind": "systemEvent", "text": "tick"}}),
        )
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["sessionTarget"], "main");
    assert_eq!(job["state"]["nextRunAtMs"], anchor);
    tokio::time::sleep(Duration::from_millis(
        anchor + 9_700 - argent_proto::now_ms(),
    ))
    .await;
    let removed = client.call("cron.remove", json!({"id": id})).await.unwrap();
    assert_eq!(removed, json!({"ok": true, "removed": true}));

    let entries = runs(&client, &id).await;
    let occurrences: Vec<u64> = entries
        .iter()
        .map(|e| e["runAtMs"].as_u64().unwrap())
        .collect();
    let unique: HashSet<u64> = occurrences.iter().copied().collect();
    assert_eq!(
        unique.len(),
        occurrences.len(),
        "an occurrence ran twice: {occurrences:?}"
    );
    assert!(
        (9..=11).contains(&occurrences.len()),
        "{} runs: {occurrences:?}",
        occurrences.len()
    );
    assert!(entries.iter().all(|e| e["status"] == "ok"), "{entries:?}");
    let nodes: HashSet<&str> = entries.iter().filter_map(|e| e["node"].as_str()).collect();
    assert!(!nodes.is_empty());
    let gone = call_error(
        client
            .call(
                "cron.update",
                json!({"id": id, "patch": {"enabled": false}}),
            )
            .await,
    );
    assert_eq!(gone.message, format!("Error: unknown cron job id: {id}"));
}

#[tokio::test]
async fn a_node_killed_mid_job_marks_the_occurrence_failed_once() {
    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let gw = gateway(&nats, "gw-a").await;
    let mut nodes = [node(&nats, "node-1").await, node(&nats, "node-2").await];
    publish_config(&nats, &model_config(&double)).await;
    let client = gw.client().await.unwrap();
    wait_nodes(&client, 2).await;
    let anchor = argent_proto::now_ms() + 1000;
    let job = client
        .call(
            "cron.add",
            json!({"name": "long", "schedule": {"everyMs": 3_600_000, "anchorMs": anchor},
                   "payload": {"kind": "agentTurn", "message": "think long [[hang]]"}}),
        )
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let holder = eventually(Duration::from_secs(10), || async {
        let list = client.call("cron.list", json!({})).await.ok()?;
        list["jobs"][0]["state"]["claim"]["node"]
            .as_str()
            .map(str::to_string)
    })
    .await
    .expect("the job started");
    // Mid-run: the model has been asked and is still answering.
    let asking = eventually(Duration::from_secs(10), || async {
        double
            .requests()
            .iter()
            .any(|r| r.last_user.contains("think long"))
            .then_some(())
    })
    .await;
    assert!(
        asking.is_some(),
        "the job's agent turn did not reach the model"
    );
    let index = nodes.iter().position(|n| n.id == holder).unwrap();
    nodes[index].proc.kill();

    let entries = eventually(Duration::from_secs(20), || async {
        let entries = runs(&client, &id).await;
        (!entries.is_empty()).then_some(entries)
    })
    .await
    .expect("the occurrence was settled");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["status"], "error");
    assert_eq!(entries[0]["runAtMs"], anchor);
    assert!(
        entries[0]["error"].as_str().unwrap().contains(&holder),
        "{entries:?}"
    );
    // Never run twice, never lost: one model request, the job waits for its next occurrence.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = double
        .requests()
        .iter()
        .filter(|r| r.last_user.contains("think long"))
        .count();
    assert_eq!(asked, 1);
    let list = client.call("cron.list", json!({})).await.unwrap();
    let state = &list["jobs"][0]["state"];
    assert_eq!(state["lastStatus"], "error");
    assert_eq!(state["nextRunAtMs"], anchor + 3_600_000);
    assert!(state.get("claim").is_none(), "{state}");
}

#[tokio::test]
async fn an_at_job_runs_once_and_deletes_itself() {
    let gw = local_gateway(&json!({})).await;
    let mut client = gw.client().await.unwrap();
    let at = argent_proto::now_ms() + 800;
    let job = client
        .call(
            "cron.add",
            json!({"data": {"name": "once", "schedule": {"atMs": at},
                   "payload": {"kind": "systemEvent", "text": "stand up"}, "enabled": "true"}}),
        )
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            job["schedule"]["kind"].clone(),
            job["deleteAfterRun"].clone()
        ),
        (json!("at"), json!(true))
    );
    let not_due = client.call("cron.run", json!({"id": id})).await.unwrap();
    assert_eq!(
        not_due,
        json!({"ok": true, "ran": false, "reason": "not-due"})
    );
    let mut actions = Vec::new();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = client.next_event().await {
            if event.name == "cron" && event.payload["jobId"] == id {
                actions.push(event.payload["action"].as_str().unwrap_or("").to_string());
                if actions.last().map(String::as_str) == Some("removed") {
                    return;
                }
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "{actions:?}");
    assert_eq!(actions, ["added", "started", "finished", "removed"]);
    let list = client
        .call("cron.list", json!({"includeDisabled": true}))
        .await
        .unwrap();
    assert_eq!(list["jobs"], json!([]));
    let entries = runs(&client, &id).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["status"], "ok");
    let status = client.call("cron.status", json!({})).await.unwrap();
    assert_eq!(
        (status["enabled"].clone(), status["jobs"].clone()),
        (json!(true), json!(0))
    );

    // `force` runs a job that is not due, and answers once it ran.
    let daily = client
        .call("cron.add", json!({"name": "daily", "schedule": {"kind": "cron", "expr": "0 9 * * *", "tz": "Europe/Paris"},
                                 "wakeMode": "now", "payload": {"kind": "audioAlert", "message": "stretch", "urgency": "warning"}}))
        .await
        .unwrap();
    let daily_id = daily["id"].as_str().unwrap();
    let forced = client
        .call("cron.run", json!({"jobId": daily_id, "mode": "force"}))
        .await
        .unwrap();
    assert_eq!(forced, json!({"ok": true, "ran": true}));
    let entries = runs(&client, daily_id).await;
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0]["summary"]
            .as_str()
            .unwrap()
            .contains("heartbeat of main woken"),
        "{entries:?}"
    );
    assert_eq!(
        client.call("cron.list", json!({})).await.unwrap()["jobs"][0]["state"]["nextRunAtMs"],
        daily["state"]["nextRunAtMs"],
        "a forced run leaves the schedule alone"
    );
    // The woken heartbeat runs at once; without a model provider it is skipped, saying why.
    client
        .call("wake", json!({"mode": "now", "text": "check the oven"}))
        .await
        .unwrap();
    let beat = eventually(Duration::from_secs(5), || async {
        let last = client.call("last-heartbeat", json!({})).await.ok()?;
        (!last.is_null()).then_some(last)
    })
    .await
    .expect("a heartbeat ran");
    assert_eq!(beat["status"], "skipped");
    assert!(
        beat["reason"]
            .as_str()
            .unwrap()
            .contains("no model provider"),
        "{beat}"
    );
    // Rule violations are thrown (UNAVAILABLE), schema errors are INVALID_REQUEST.
    let thrown = call_error(
        client
            .call(
                "cron.add",
                json!({"name": "x", "schedule": {"everyMs": 1000}, "sessionTarget": "main",
                                     "payload": {"kind": "agentTurn", "message": "m"}}),
            )
            .await,
    );
    assert_eq!(thrown.code, "UNAVAILABLE");
    let bad = call_error(
        client
            .call("cron.add", json!({"name": "x", "schedule": {"kind": "cron", "expr": "0 9 * * *", "tz": "Nowhere/City"},
                                     "payload": {"kind": "systemEvent", "text": "t"}}))
            .await,
    );
    assert_eq!(bad.code, "INVALID_REQUEST");
    assert!(bad.message.contains("IANA"), "{}", bad.message);
}

#[tokio::test]
async fn heartbeat_and_worker_cycles_run_once_per_agent_across_two_nodes() {
    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let _nodes = [node(&nats, "node-1").await, node(&nats, "node-2").await];
    let mut config = model_config(&double);
    config["agents"]["list"] = json!([{"id": "main", "default": true}]);
    config["agents"]["defaults"]["heartbeat"] = json!({"every": "1s", "prompt": "HB-PROMPT"});
    config["agents"]["defaults"]["executionWorker"] =
        json!({"enabled": true, "every": "1h", "maxTasksPerCycle": 2});
    publish_config(&nats, &config).await;
    let mut on_a = a.client().await.unwrap();
    let on_b = b.client().await.unwrap();
    wait_nodes(&on_a, 2).await;

    // Heartbeats: about one a second, never two for one due time.
    let started = std::time::Instant::now();
    let mut beats = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(500), on_a.next_event()).await
        {
            if event.name == "heartbeat" {
                beats.push(event.payload);
            }
        }
    }
    on_b.call("set-heartbeats", json!({"enabled": false}))
        .await
        .unwrap();
    let turns = double
        .requests()
        .iter()
        .filter(|r| r.last_user.starts_with("HB-PROMPT"))
        .count();
    assert!((2..=6).contains(&beats.len()), "{beats:?}");
    assert!(beats.iter().all(|b| b["status"] == "sent"), "{beats:?}");
    assert!(
        turns <= beats.len() + 1,
        "{turns} heartbeat turns for {} heartbeats",
        beats.len()
    );
    let last = on_b.call("last-heartbeat", json!({})).await.unwrap();
    assert_eq!(last["agentId"], "main");

    // The worker: tasks queued through one gateway, run by one cycle, two per cycle.
    for title in ["first task", "second task", "third task"] {
        on_a.call("tasks.add", json!({"title": title}))
            .await
            .unwrap();
    }
    let paused = on_a
        .call("execution.worker.pause", json!({"agentId": "main"}))
        .await
        .unwrap();
    assert_eq!(
        paused["control"],
        json!({"ok": true, "scope": "agent", "agentId": "main", "paused": true})
    );
    let status = on_b
        .call("execution.worker.status", json!({}))
        .await
        .unwrap();
    assert_eq!(status["agents"][0]["paused"], true);
    assert_eq!(status["agents"][0]["statusHint"]["kind"], "paused");
    let refused = on_b
        .call("execution.worker.runNow", json!({"agentId": "main"}))
        .await
        .unwrap();
    assert_eq!(refused["dispatch"]["dispatched"], false);
    on_b.call("execution.worker.resume", json!({"agentId": "main"}))
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(15), || async {
        let status = on_a
            .call("execution.worker.status", json!({"agentId": "main"}))
            .await
            .ok()?;
        let metrics = status["agents"][0]["metrics"].clone();
        (metrics["totalCompleted"] == 2).then_some(metrics)
    })
    .await;
    let Some(done) = done else {
        let status = on_a
            .call("execution.worker.status", json!({}))
            .await
            .unwrap();
        let tasks = on_a.call("tasks.list", json!({})).await.unwrap();
        panic!("no cycle completed two tasks: {status} {tasks}");
    };
    assert_eq!(
        (done["totalRuns"].clone(), done["lastAttempted"].clone()),
        (json!(1), json!(2))
    );
    let tasks = on_a
        .call("tasks.list", json!({"status": "completed"}))
        .await
        .unwrap();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2);
    let asked = double
        .requests()
        .iter()
        .filter(|r| r.last_user.contains("Execution worker task"))
        .count();
    assert_eq!(asked, 2, "each task ran once");
    let reset = on_b
        .call("execution.worker.metrics.reset", json!({}))
        .await
        .unwrap();
    assert_eq!(
        reset["control"],
        json!({"ok": true, "scope": "global", "resetCount": 1})
    );
    assert_eq!(reset["status"]["agents"][0]["metrics"]["totalRuns"], 0);
    let unknown = call_error(
        on_a.call("execution.worker.status", json!({"agentId": "ghost"}))
            .await,
    );
    assert_eq!(unknown.message, "unknown execution worker agent: ghost");
    let wrong = call_error(
        on_a.call("execution.worker.pause", json!({"agentId": 7}))
            .await,
    );
    assert_eq!(wrong.message, "agentId must be a string");
}

#[tokio::test]
async fn one_process_config_edits_the_file_and_reaches_the_embedded_node() {
    let double = ModelDouble::start().await;
    let gw = local_gateway(&json!({"session": {"mainKey": "main"}})).await;
    let client = gw.client().await.unwrap();
    let got = client.call("config.get", json!({})).await.unwrap();
    assert!(got["path"].as_str().unwrap().ends_with("argent.json"));
    let raw = got["raw"].as_str().unwrap().to_string();
    assert_eq!(got["hash"], argent_proto::config::hash(&raw));
    let patch = json!({"models": model_config(&double)["models"], "agents": model_config(&double)["agents"]});
    let patched = client
        .call(
            "config.patch",
            json!({"raw": patch.to_string(), "baseHash": got["hash"]}),
        )
        .await
        .unwrap();
    assert_eq!(patched["restart"]["mode"], "live-reload");
    let file = std::fs::read_to_string(patched["path"].as_str().unwrap()).unwrap();
    assert!(file.contains("double-model"));
    let models = eventually(Duration::from_secs(5), || async {
        let models = client.call("models.list", json!({})).await.ok()?;
        models
            .to_string()
            .contains("double-model")
            .then_some(models)
    })
    .await;
    assert!(
        models.is_some(),
        "the embedded node did not see the patched config"
    );
    // The old hash is stale now.
    let stale = call_error(
        client
            .call("config.set", json!({"raw": "{}", "baseHash": got["hash"]}))
            .await,
    );
    assert_eq!(
        stale.message,
        "config changed since last load; re-run config.get and retry"
    );
}
