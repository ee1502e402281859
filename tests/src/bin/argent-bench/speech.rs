//! `speech`: `tts.convert` through a cluster gateway to a node-agent, against the speech
//! double of OpenAI's API (network cost on loopback only: what is measured is our own
//! path — the hop, the provider call, base64, the audio file) and against a local command
//! (`sh` writing a WAV header and the text, standing in for an engine: the cost of running
//! a process per conversion).
//! Latency one call at a time, then throughput with calls in flight, and CPU per
//! conversion of the gateway and the node-agent.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::join_all;
use serde_json::{json, Value};

use argent_client::Client;
use argent_tests::speech_double::SpeechDouble;
use argent_tests::{Gateway, Nats, Node};

use super::{cpu_seconds, percentiles, set_config, Settings};

/// Calls in flight for the throughput part.
const IN_FLIGHT: usize = 8;
/// A sentence of a typical spoken reply (about 200 characters).
const TEXT: &str = "The build finished green on every platform. Three tests were slower than last week; the report is in your inbox, and the release notes are ready for a last look before you publish them.";

/// Latencies of `calls` conversions one after the other, and the CPU both processes used.
async fn one_at_a_time(client: &Client, calls: usize, pids: (u32, u32)) -> anyhow::Result<Value> {
    let cpu = (cpu_seconds(pids.0)?, cpu_seconds(pids.1)?);
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls {
        let started = Instant::now();
        let answer = client
            .call("tts.convert", json!({"text": format!("{TEXT} ({i})")}))
            .await?;
        samples.push(started.elapsed().as_nanos() as u64);
        anyhow::ensure!(answer["audio"].is_string(), "no audio: {answer}");
    }
    let per_call = |before: f64, pid: u32| -> anyhow::Result<f64> {
        Ok((cpu_seconds(pid)? - before) * 1e6 / calls as f64)
    };
    let mut out = percentiles(&mut samples);
    out["gateway_cpu_us_per_call"] = json!(per_call(cpu.0, pids.0)?.round());
    out["node_cpu_us_per_call"] = json!(per_call(cpu.1, pids.1)?.round());
    Ok(out)
}

/// Conversions per second with [`IN_FLIGHT`] calls outstanding.
async fn throughput(client: &Client, calls: usize) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut done = 0;
    while done < calls {
        let wave = IN_FLIGHT.min(calls - done);
        let answers = join_all((0..wave).map(|i| {
            client.call(
                "tts.convert",
                json!({"text": format!("{TEXT} [{}]", done + i), "includeAudio": false}),
            )
        }))
        .await;
        for answer in answers {
            answer?;
        }
        done += wave;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(
        json!({"calls": calls, "in_flight": IN_FLIGHT, "seconds": secs,
              "conversions_per_second": (calls as f64 / secs).round()}),
    )
}

pub async fn bench(settings: &Settings) -> anyhow::Result<Value> {
    let nats = Nats::start().await?;
    let double = SpeechDouble::start().await;
    let gateway = Gateway::cluster(&nats)
        .args(&["--gateway-id", "bench-speech"])
        .start()
        .await?;
    let node = Node::start(&nats, "bench-speech-node").await?;
    let client = Client::connect(&gateway.options()).await?;
    set_config(
        &client,
        json!({"messages": {"tts": {"provider": "openai",
            "openai": {"baseUrl": double.openai_base(), "apiKey": "bench", "model": "tts-1"}}}}),
    )
    .await?;
    argent_tests::eventually(Duration::from_secs(20), || async {
        client.call("tts.status", json!({})).await.ok()
    })
    .await
    .context("no node-agent speaks")?;
    let pids = (gateway.proc.pid(), node.proc.pid());
    let calls = settings.count(500, 20);
    let openai = one_at_a_time(&client, calls, pids).await?;
    let openai_throughput = throughput(&client, calls).await?;
    anyhow::ensure!(
        double.requests().len() >= 2 * calls,
        "the double saw {} requests",
        double.requests().len()
    );

    set_config(
        &client,
        json!({"messages": {"tts": {"provider": "cli",
            "cli": {"command": ["sh", "-c", r#"printf 'RIFF\000\000\000\000WAVE' > "$1"; cat "$0" >> "$1""#,
                                "{{TEXT_FILE}}", "{{OUTPUT_FILE}}"]}}}}),
    )
    .await?;
    let command = one_at_a_time(&client, calls, pids).await?;
    client.close().await;
    Ok(json!({
        "text_chars": TEXT.len(),
        "openai_compatible": openai,
        "openai_compatible_throughput": openai_throughput,
        "local_command": command,
    }))
}
