//! `channels`: chat messages through the signed generic webhook (the path every webhook
//! platform takes: a gateway's port, a node-agent's check and create-once record, the
//! account's receiver, an agent turn on the model double, the signed reply POSTed back),
//! and `send` out on the same channel. Latency one message at a time (POST → reply
//! received), throughput with many senders at once, and CPU per message of the gateway and
//! the node-agent.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::join_all;
use serde_json::{json, Value};

use argent_client::Client;
use argent_tests::channel_doubles::{webhook_signature, WebhookReceiver};
use argent_tests::model_double::ModelDouble;
use argent_tests::{http_request, Gateway, Nats, Node};

use super::{cpu_seconds, percentiles, set_config, Settings};

const SECRET: &str = "bench-secret";
const PATH: &str = "/channels/webhook/bench/webhook";
/// Senders writing at once in the throughput part.
const SENDERS: usize = 16;

/// Posts one signed message; the gateway's status.
async fn post(gateway: &Gateway, id: &str, from: &str, text: &str) -> anyhow::Result<u16> {
    let body = json!({"id": id, "from": from, "text": text}).to_string();
    let signature = webhook_signature(SECRET, body.as_bytes());
    let (status, said) = http_request(
        &gateway.ws,
        "POST",
        PATH,
        &[("X-Argent-Signature", &signature)],
        body.as_bytes(),
    )
    .await?;
    anyhow::ensure!(status == 200, "webhook answered {status}: {said}");
    Ok(status)
}

/// Waits until the receiver holds `n` replies.
async fn replies(receiver: &WebhookReceiver, n: usize) {
    receiver.wait_received(n, Duration::from_secs(60)).await;
}

fn per_message(before: f64, pid: u32, messages: usize) -> anyhow::Result<f64> {
    Ok(((cpu_seconds(pid)? - before) * 1e6 / messages as f64).round())
}

pub async fn bench(settings: &Settings) -> anyhow::Result<Value> {
    let nats = Nats::start().await?;
    let model = ModelDouble::start().await;
    let receiver = WebhookReceiver::start().await;
    let gateway = Gateway::cluster(&nats)
        .args(&["--gateway-id", "bench-channels"])
        .start()
        .await?;
    let node = Node::start(&nats, "bench-channels-node").await?;
    let client = Client::connect(&gateway.options()).await?;
    set_config(
        &client,
        json!({
            "models": {"providers": {"double": {"api": "openai-completions",
                "baseUrl": model.openai_base(), "apiKey": "bench", "models": [{"id": "double-model"}]}}},
            "channels": {"webhook": {"accounts": {"bench": {"secret": SECRET, "url": receiver.url(),
                "dmPolicy": "open", "allowFrom": ["*"]}}}},
        }),
    )
    .await?;
    argent_tests::eventually(Duration::from_secs(30), || async {
        let status = client.call("channels.status", json!({})).await.ok()?;
        (status["channels"]["webhook"]["running"] == true).then_some(())
    })
    .await
    .context("the webhook account did not start")?;
    let pids = (gateway.proc.pid(), node.proc.pid());
    let messages = settings.count(200, 10);

    // One at a time: a person writing, the reply back.
    let cpu = (cpu_seconds(pids.0)?, cpu_seconds(pids.1)?);
    let mut samples = Vec::with_capacity(messages);
    for i in 0..messages {
        let started = Instant::now();
        post(&gateway, &format!("one-{i}"), &format!("p{i}"), "hello").await?;
        replies(&receiver, i + 1).await;
        samples.push(started.elapsed().as_nanos() as u64);
    }
    let mut one_at_a_time = percentiles(&mut samples);
    one_at_a_time["gateway_cpu_us_per_message"] = json!(per_message(cpu.0, pids.0, messages)?);
    one_at_a_time["node_cpu_us_per_message"] = json!(per_message(cpu.1, pids.1, messages)?);

    // Many senders at once.
    let before = receiver.received().len();
    let started = Instant::now();
    let mut sent = 0;
    while sent < messages {
        let wave = SENDERS.min(messages - sent);
        let posted = join_all((0..wave).map(|k| {
            let (id, from) = (format!("many-{}", sent + k), format!("s{k}"));
            let gateway = &gateway;
            async move { post(gateway, &id, &from, "hi").await }
        }))
        .await;
        for p in posted {
            p?;
        }
        sent += wave;
    }
    replies(&receiver, before + messages).await;
    let secs = started.elapsed().as_secs_f64();
    let throughput = json!({"messages": messages, "senders": SENDERS, "seconds": secs,
                            "messages_per_second": (messages as f64 / secs).round()});

    // `send`, one at a time.
    let cpu = (cpu_seconds(pids.0)?, cpu_seconds(pids.1)?);
    let mut samples = Vec::with_capacity(messages);
    for i in 0..messages {
        let started = Instant::now();
        client
            .call(
                "send",
                json!({"channel": "webhook", "accountId": "bench", "to": "ops",
                                 "message": "deploy done", "idempotencyKey": format!("bench-{i}")}),
            )
            .await?;
        samples.push(started.elapsed().as_nanos() as u64);
    }
    let mut send = percentiles(&mut samples);
    send["gateway_cpu_us_per_send"] = json!(per_message(cpu.0, pids.0, messages)?);
    send["node_cpu_us_per_send"] = json!(per_message(cpu.1, pids.1, messages)?);
    client.close().await;
    Ok(json!({
        "inbound_one_at_a_time": one_at_a_time,
        "inbound_throughput": throughput,
        "send_one_at_a_time": send,
    }))
}
