//! `argent-bench`: measures a real cluster on this machine and prints JSON.
//!
//! Scenarios (all against processes started here, on loopback only, bounded in time):
//! * `handshake` — full handshakes per second (challenge → connect → hello-ok → close);
//! * `rtt` — round trip of a gateway-local method, of a forwarded method, and of the same
//!   method called on the node-agent directly over gRPC, paced at a fixed call rate; the
//!   gateway hop's added latency is forwarded − direct;
//! * `idle` — gateway RSS per idle authenticated connection, with thousands held;
//! * `fanout` — events published on NATS and delivered to 1,000 clients of two gateways
//!   at rising rates: the highest rate every client receives everything at, gateway CPU
//!   per delivery, and publish → receive latency at each rate (the first is 100,000
//!   deliveries/s);
//! * `chat` — against the model-provider double: the latency the cluster adds to the first
//!   streamed token (time to the first `agent` assistant event through a gateway, minus the
//!   double's own time to its first token), and `chat`/`agent` delta events delivered per
//!   second to 1,000 watching clients on two gateways while sessions stream;
//! * `burst` — gateway and node-agent RSS before, right after and 5 / 10 / 30 s after 200
//!   writes and reads of 1 MiB files from 8 clients (memory must come back after bursts);
//! * `connect_curve` — handshakes per second with 0, 5,000 and 15,000 tracked dashboards
//!   already held (O(1) connects), and gateway CPU per handshake;
//! * `store` — the embedded state store alone (no cluster): a durable bucket of 100,000
//!   keys on a temporary state dir, then single-key `put`s from 16 tasks (each fsynced
//!   before it returns), the same from one task, and `get`s from 16 tasks: rates, latency
//!   and CPU per operation.
//!
//! * `knowledge` — the knowledge library (`knowledge.rs`): ingest throughput of a 50 MB
//!   corpus (~100,000 chunks), keyword and hybrid search latency, index size, and a fresh
//!   node-agent's catch-up time.
//! * `speech` — `tts.convert` through a gateway to a node-agent (`speech.rs`): against the
//!   OpenAI speech double and a local command; latency, throughput, CPU per conversion.
//! * `channels` — chat messages through the signed generic webhook to an agent turn and the
//!   reply back, and `send` (`channels.rs`): latency, throughput, CPU per message.
//!
//! Usage: `argent-bench [all|handshake|rtt|idle|idle_tracked|connect_curve|fanout|chat|burst|store|knowledge|speech|channels]
//! [--quick]`.

mod channels;
mod knowledge;
mod speech;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use argent_client::Client;
use argent_planes::calls::node_call_secret;
use argent_planes::state::StateStore;
use argent_planes::state_embedded::EmbeddedStore;
use argent_proto::grpc::node_agent_client::NodeAgentClient;
use argent_proto::grpc::InvokeRequest;
use argent_tests::model_double::ModelDouble;
use argent_tests::raw::connect_frame;
use argent_tests::{rss_kib, Gateway, Nats, Node, TOKEN};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Settings {
    quick: bool,
}

impl Settings {
    fn secs(&self, full: u64) -> Duration {
        Duration::from_secs(if self.quick { 1 } else { full })
    }

    fn count(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

fn percentiles(samples: &mut [u64]) -> Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    json!({"samples": samples.len(), "p50_us": at(0.50), "p90_us": at(0.90), "p99_us": at(0.99), "max_us": at(1.0)})
}

/// Opens a socket and completes a CLI handshake (protocol 3); returns the socket.
async fn handshake(url: &str, token: &str) -> anyhow::Result<Ws> {
    handshake_as(url, token, 3).await
}

/// The same handshake offering only `protocol` (3, or 4 for OpenClaw clients).
async fn handshake_as(url: &str, token: &str, protocol: u64) -> anyhow::Result<Ws> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true).await?;
    ws.next().await.context("no challenge")??;
    let mut connect = connect_frame("c", token);
    connect["params"]["minProtocol"] = json!(protocol);
    connect["params"]["maxProtocol"] = json!(protocol);
    ws.send(Message::text(connect.to_string())).await?;
    loop {
        let msg = ws.next().await.context("closed during handshake")??;
        if let Message::Text(text) = msg {
            if text.contains("\"hello-ok\"") {
                return Ok(ws);
            }
            anyhow::bail!("handshake refused: {text}");
        }
    }
}

async fn bench_handshake(s: &Settings, gw: &Gateway) -> anyhow::Result<Value> {
    let duration = s.secs(5);
    let concurrency = 16;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    let started = Instant::now();
    let cpu_before = cpu_seconds(gw.proc.pid())?;
    for _ in 0..concurrency {
        let (url, token, done) = (gw.ws.clone(), gw.token.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut ws = handshake(&url, &token).await?;
                latencies.push(t.elapsed().as_nanos() as u64);
                done.fetch_add(1, Ordering::Relaxed);
                let _ = ws.close(None).await;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(gw.proc.pid())? - cpu_before;
    let total = done.load(Ordering::Relaxed);
    Ok(json!({
        "concurrency": concurrency,
        "handshakes": total,
        "seconds": elapsed,
        "per_sec": (total as f64 / elapsed).round(),
        "gateway_cpu_us_per_handshake": (cpu * 1e6 / total.max(1) as f64).round(),
        "latency": percentiles(&mut latencies),
    }))
}

/// One caller of the RTT benchmark: a WebSocket client of a gateway, or a gRPC client of a
/// node-agent (the baseline without the gateway hop).
enum Caller {
    Ws(Ws),
    Grpc(NodeAgentClient<tonic::transport::Channel>),
}

impl Caller {
    async fn call(&mut self, n: u64, method: &str, params: &Value) -> anyhow::Result<()> {
        match self {
            Caller::Ws(ws) => {
                let frame =
                    json!({"type":"req","id":format!("r{n}"),"method":method,"params":params});
                ws.send(Message::text(frame.to_string())).await?;
                loop {
                    let Message::Text(text) = ws.next().await.context("closed")?? else {
                        continue;
                    };
                    if text.starts_with("{\"type\":\"res\"") {
                        anyhow::ensure!(text.contains("\"ok\":true"), "{method} failed: {text}");
                        return Ok(());
                    }
                }
            }
            Caller::Grpc(client) => {
                let mut request = tonic::Request::new(InvokeRequest {
                    method: method.to_string(),
                    params_json: params.to_string(),
                    ..Default::default()
                });
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {}", node_call_secret(TOKEN, "bench-node")).parse()?,
                );
                client.invoke(request).await?;
                Ok(())
            }
        }
    }
}

/// Calls `method` from every caller, paced to `rate` calls/s in total, for `duration`;
/// returns the round-trip times in nanoseconds.
async fn paced(
    callers: Vec<Caller>,
    method: &str,
    params: Value,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Vec<u64>> {
    let count = callers.len() as u64;
    let interval = Duration::from_nanos(1_000_000_000 * count / rate);
    let mut tasks = Vec::new();
    for (c, mut caller) in callers.into_iter().enumerate() {
        let (method, params) = (method.to_string(), params.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Spread the callers' sends over one interval.
            tokio::time::sleep(interval * c as u32 / count as u32).await;
            let deadline = Instant::now() + duration;
            let mut n = 0;
            while Instant::now() < deadline {
                ticker.tick().await;
                n += 1;
                let t = Instant::now();
                caller.call(n, &method, &params).await?;
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

async fn ws_callers(gw: &Gateway, count: usize) -> anyhow::Result<Vec<Caller>> {
    let mut callers = Vec::with_capacity(count);
    for _ in 0..count {
        callers.push(Caller::Ws(handshake(&gw.ws, &gw.token).await?));
    }
    Ok(callers)
}

async fn grpc_callers(address: &str, count: usize) -> anyhow::Result<Vec<Caller>> {
    let channel = tonic::transport::Endpoint::from_shared(address.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok((0..count)
        .map(|_| Caller::Grpc(NodeAgentClient::new(channel.clone())))
        .collect())
}

fn p(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// One RTT run at a given total call rate.
async fn rtt_at(
    gw: &Gateway,
    node: &Node,
    rate: u64,
    duration: Duration,
    idle_cpu_per_sec: f64,
) -> anyhow::Result<Value> {
    let connections = 16;
    let files = json!({"agentId":"main","name":"SOUL.md"});
    let get = "agents.files.get";
    let pid = gw.proc.pid();
    let cpu = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut local = paced(
        ws_callers(gw, connections).await?,
        "health",
        json!({}),
        rate,
        duration,
    )
    .await?;
    // Net of what the gateway spends anyway (heartbeats, watches, refreshes).
    let local_cpu = cpu_seconds(pid)? - cpu - idle_cpu_per_sec * started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut forwarded = paced(
        ws_callers(gw, connections).await?,
        get,
        files.clone(),
        rate,
        duration,
    )
    .await?;
    let forwarded_cpu =
        cpu_seconds(pid)? - cpu - idle_cpu_per_sec * started.elapsed().as_secs_f64();
    let mut direct = paced(
        grpc_callers(&node.grpc, connections).await?,
        get,
        files,
        rate,
        duration,
    )
    .await?;
    let per_call = |cpu: f64, calls: usize| (cpu * 1e7 / calls.max(1) as f64).round() / 10.0;
    let cpu_local = per_call(local_cpu, local.len());
    let cpu_forwarded = per_call(forwarded_cpu, forwarded.len());
    let local = percentiles(&mut local);
    let forwarded = percentiles(&mut forwarded);
    let direct = percentiles(&mut direct);
    Ok(json!({
        "rate_per_sec": rate,
        "connections": connections,
        "local_method_health": local,
        "forwarded_agents_files_get": forwarded,
        "direct_grpc_agents_files_get": direct,
        "gateway_hop_added_us": {
            "p50": p(&forwarded, "p50_us") - p(&direct, "p50_us"),
            "p99": p(&forwarded, "p99_us") - p(&direct, "p99_us"),
        },
        // Stable on a noisy machine: what the gateway process spent per call (its
        // WebSocket side, and for forwarded calls its gRPC client too).
        "gateway_cpu_us_per_local_call": cpu_local,
        "gateway_cpu_us_per_forwarded_call": cpu_forwarded,
    }))
}

/// RTTs at the target rate (5k calls/s) and at a light load (1k calls/s), where the two
/// cores are not saturated by the load generator itself.
async fn bench_rtt(s: &Settings, gw: &Gateway, node: &Node) -> anyhow::Result<Value> {
    // Warm up every path once.
    let files = json!({"agentId":"main","name":"SOUL.md"});
    paced(
        ws_callers(gw, 4).await?,
        "agents.files.get",
        files,
        500,
        Duration::from_millis(300),
    )
    .await?;
    // What the gateway spends with no calls at all, subtracted from the per-call figures.
    let pid = gw.proc.pid();
    let cpu = cpu_seconds(pid)?;
    let idle_for = s.secs(3);
    tokio::time::sleep(idle_for).await;
    let idle_cpu_per_sec = (cpu_seconds(pid)? - cpu) / idle_for.as_secs_f64();
    Ok(json!({
        "gateway_idle_cpu_per_sec": (idle_cpu_per_sec * 1000.0).round() / 1000.0,
        "at_5000_per_sec": rtt_at(gw, node, 5000, s.secs(5), idle_cpu_per_sec).await?,
        "at_1000_per_sec": rtt_at(gw, node, 1000, s.secs(5), idle_cpu_per_sec).await?,
    }))
}

/// Memory after a burst of large requests (issue 15): the RSS of the gateway and the
/// node-agent before, right after 200 writes and reads of 1 MiB files from 8 clients, and
/// during the 30 s after (it should come back down).
async fn bench_burst(s: &Settings, gw: &Gateway, node: &Node) -> anyhow::Result<Value> {
    let pids = [("gateway", gw.proc.pid()), ("node_agent", node.proc.pid())];
    let rss = || -> anyhow::Result<Value> {
        let mut out = serde_json::Map::new();
        for (name, pid) in pids {
            out.insert(format!("{name}_rss_kib"), json!(rss_kib(pid)?));
        }
        Ok(Value::Object(out))
    };
    let before = rss()?;
    let per_client = s.count(25, 5);
    let content = "m".repeat(1 << 20);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = gw.client().await?;
        let content = content.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..per_client {
                let name = ["SOUL.md", "MEMORY.md", "TOOLS.md"][(i + j) % 3];
                client
                    .call(
                        "agents.files.set",
                        json!({"agentId": "main", "name": name, "content": content}),
                    )
                    .await?;
                client
                    .call("agents.files.get", json!({"agentId": "main", "name": name}))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let burst_seconds = started.elapsed().as_secs_f64();
    let after = rss()?;
    let mut later = serde_json::Map::new();
    for at in [5u64, 10, 30] {
        tokio::time::sleep_until((started + Duration::from_secs(burst_seconds as u64 + at)).into())
            .await;
        later.insert(format!("after_{at}s"), rss()?);
    }
    // The burst's clients have gone: what is left must not be their connections.
    let connections_after = gw.metric("argent_gateway_connections").await?;
    Ok(json!({
        "clients": 8,
        "writes_and_reads_of_1_mib": 8 * per_client,
        "burst_seconds": (burst_seconds * 100.0).round() / 100.0,
        "before": before,
        "right_after": after,
        "later": later,
        "gateway_connections_after": connections_after,
    }))
}

/// An idle client: the CLI (not in presence), or one tracked in presence (a protocol-3
/// `ui` client with its own instance id), whose `hello-ok` then carries the presence
/// snapshot (up to 200 entries).
#[derive(Clone, Copy)]
enum IdleClient {
    Cli,
    Tracked,
}

async fn idle_handshake(url: &str, token: &str, kind: IdleClient, n: usize) -> anyhow::Result<Ws> {
    match kind {
        IdleClient::Cli => handshake(url, token).await,
        IdleClient::Tracked => {
            let (ws, _) =
                tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true)
                    .await?;
            join_tracked(ws, token, format!("idle-{n}")).await
        }
    }
}

/// Opens a socket from `127.0.0.<2 + n % 200>` (one address would run out of ports and hit
/// the per-address limits long before the gateway's connection count matters).
async fn connect_from(url: &str, n: usize) -> anyhow::Result<Ws> {
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("no port in url")?;
    let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (n % 200) as u8);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let tcp = socket
        .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
        .await?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        MaybeTlsStream::Plain(tcp),
        Some(client_config()),
    )
    .await?;
    Ok(ws)
}

/// The load generator's own sockets: small read buffers (the library's default of 128 KiB,
/// zeroed on every read, made the generator, not the gateway, the bottleneck).
fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8192)
}

/// A dashboard-like client tracked in presence (protocol 3, mode `ui`, its own instance),
/// from a spread source address; held idle once `hello-ok` arrived.
async fn tracked_client(url: &str, token: &str, n: usize) -> anyhow::Result<Ws> {
    join_tracked(connect_from(url, n).await?, token, format!("held-{n}")).await
}

/// The handshake of a client presence tracks (protocol 3, mode `ui`, its own instance).
async fn join_tracked(mut ws: Ws, token: &str, instance: String) -> anyhow::Result<Ws> {
    ws.next().await.context("no challenge")??;
    let mut connect = connect_frame("c", token);
    connect["params"]["client"] = json!({"id": "gateway-client", "version": "bench",
        "platform": "linux", "mode": "ui", "instanceId": instance});
    ws.send(Message::text(connect.to_string())).await?;
    match ws.next().await.context("closed during handshake")?? {
        Message::Text(text) if text.contains("\"hello-ok\"") => Ok(ws),
        other => anyhow::bail!("handshake refused: {other:?}"),
    }
}

/// Opens connections with `open(n)`, 200 at a time, until `held` has `target`.
async fn hold<F, Fut>(held: &mut Vec<Ws>, target: usize, open: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Ws>> + Send + 'static,
{
    while held.len() < target {
        let batch = (target - held.len()).min(200);
        let opening: Vec<_> = (held.len()..held.len() + batch)
            .map(|n| tokio::spawn(open(n)))
            .collect();
        for task in opening {
            held.push(task.await??);
        }
    }
    Ok(())
}

/// Handshakes per second (CLI clients, 16 at a time, each closed after `hello-ok`) with
/// 0, 5,000 and 15,000 tracked dashboards already held: a connect must not cost more the
/// more connections are held. Also the rate at which the held ones were opened.
async fn bench_connect_curve(s: &Settings, gw: &Gateway) -> anyhow::Result<Value> {
    let levels = [0, s.count(5_000, 500), s.count(15_000, 1_500)];
    let mut held: Vec<Ws> = Vec::with_capacity(levels[2]);
    let mut points = Vec::new();
    for level in levels {
        let started = Instant::now();
        let cpu_before = cpu_seconds(gw.proc.pid())?;
        let from = held.len();
        hold(&mut held, level, |n| {
            let (url, token) = (gw.ws.clone(), gw.token.clone());
            async move { tracked_client(&url, &token, n).await }
        })
        .await?;
        let opened = held.len() - from;
        let open_secs = started.elapsed().as_secs_f64();
        let open_cpu = cpu_seconds(gw.proc.pid())? - cpu_before;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let handshakes = bench_handshake(s, gw).await?;
        points.push(json!({
            "held": held.len(),
            "handshakes_per_sec": handshakes["per_sec"],
            "handshake_latency": handshakes["latency"],
            "gateway_cpu_us_per_handshake": handshakes["gateway_cpu_us_per_handshake"],
            "held_opened": opened,
            "held_open_per_sec": if opened > 0 { (opened as f64 / open_secs).round() } else { 0.0 },
            "gateway_cpu_us_per_held_open": if opened > 0 { (open_cpu * 1e6 / opened as f64).round() } else { 0.0 },
        }));
    }
    Ok(json!({"held_clients": "protocol 3, mode ui, tracked in presence", "points": points}))
}

async fn bench_idle(s: &Settings, gw: &Gateway, kind: IdleClient) -> anyhow::Result<Value> {
    let target = s.count(10_000, 500);
    // Settle the gateway, then measure the baseline with a few warm connections.
    let mut held = Vec::with_capacity(target);
    for n in 0..50 {
        held.push(idle_handshake(&gw.ws, &gw.token, kind, n).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(gw.proc.pid())?;
    let baseline = held.len();
    let started = Instant::now();
    // Sockets are held and not polled (idle clients).
    hold(&mut held, target, |n| {
        let (url, token) = (gw.ws.clone(), gw.token.clone());
        async move { idle_handshake(&url, &token, kind, n).await }
    })
    .await?;
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(gw.proc.pid())?;
    let added = held.len() - baseline;
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / added as f64;
    drop(held);
    Ok(json!({
        "connections": added + baseline,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_idle_connection": per_conn.round(),
        "open_seconds": open_secs,
    }))
}

/// Merges `patch` into the shared config (`config.patch` with the current hash).
async fn set_config(client: &Client, patch: Value) -> anyhow::Result<()> {
    let current = client.call("config.get", json!({})).await?;
    client
        .call(
            "config.patch",
            json!({"raw": patch.to_string(), "baseHash": current["hash"]}),
        )
        .await?;
    Ok(())
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').context("bad stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    Ok(ticks / hz)
}

/// What the fan-out's subscribers saw, per step of the rate sweep.
struct FanoutSeen {
    received: Vec<AtomicU64>,
    /// Publish → receive latencies (ns) sampled by every 10th subscriber.
    latencies: Vec<parking_lot::Mutex<Vec<u64>>>,
}

/// Event rates (events/s, each delivered to every subscriber) the sweep tries in turn.
const FANOUT_RATES: [u64; 6] = [100, 200, 400, 800, 1_600, 3_200];

/// Subscribers on two gateways receive events published on NATS at rising rates. Each
/// step reports deliveries, losses (and whether the gateway dropped or closed anyone),
/// publish → receive latency and gateway CPU per delivery; the ceiling is the highest rate
/// every subscriber received everything at. The sweep stops at the first step that loses
/// events or whose p99 passes one second.
async fn bench_fanout(s: &Settings, nats: &Nats, gateways: &[&Gateway]) -> anyhow::Result<Value> {
    let per_gateway = s.count(500, 100);
    let rates: &[u64] = if s.quick {
        &FANOUT_RATES[..2]
    } else {
        &FANOUT_RATES
    };
    let seen = Arc::new(FanoutSeen {
        received: rates.iter().map(|_| AtomicU64::new(0)).collect(),
        latencies: rates.iter().map(|_| Default::default()).collect(),
    });
    let mut readers = Vec::new();
    for gw in gateways {
        for i in 0..per_gateway {
            let mut ws = handshake(&gw.ws, &gw.token).await?;
            let seen = seen.clone();
            let sample = i % 10 == 0;
            readers.push(tokio::spawn(async move {
                // Cheap on purpose (the generator shares the machine): two numbers found
                // in the text, no JSON parse, no timer per message.
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let Some(step) = number_after(&text, "\"step\":") else {
                        continue;
                    };
                    seen.received[step as usize].fetch_add(1, Ordering::Relaxed);
                    if sample {
                        if let Some(sent) = number_after(&text, "\"sentNs\":") {
                            let latency = now_ns().saturating_sub(sent);
                            seen.latencies[step as usize].lock().push(latency);
                        }
                    }
                }
            }));
        }
    }
    let subscribers = (per_gateway * gateways.len()) as u64;
    let publisher = nats.client().await?;
    let pad = "x".repeat(200);
    let mut steps = Vec::new();
    let mut ceiling = None;
    for (step, &rate) in rates.iter().enumerate() {
        let mut before = Vec::new();
        for gw in gateways {
            before.push([
                gw.metric("argent_gateway_events_delivered_total").await?,
                gw.metric("argent_gateway_events_dropped_total").await?,
                gw.metric("argent_gateway_slow_consumers_total").await?,
                cpu_seconds(gw.proc.pid())?,
            ]);
        }
        let duration = s.secs(3);
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
        let mut published = 0u64;
        while started.elapsed() < duration {
            ticker.tick().await;
            let payload = json!({"step": step, "n": published, "sentNs": now_ns(), "text": pad});
            publisher
                .publish("argent.evt.bench", Bytes::from(payload.to_string()))
                .await?;
            published += 1;
        }
        publisher.flush().await?;
        let publish_secs = started.elapsed().as_secs_f64();
        // Everything in flight arrives, or 5 s pass.
        let expected = published * subscribers;
        let drain_until = Instant::now() + Duration::from_secs(5);
        while seen.received[step].load(Ordering::Relaxed) < expected && Instant::now() < drain_until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut gateway_side = Vec::new();
        let (mut delivered, mut cpu) = (0.0, 0.0);
        for (gw, before) in gateways.iter().zip(before) {
            let after = [
                gw.metric("argent_gateway_events_delivered_total").await?,
                gw.metric("argent_gateway_events_dropped_total").await?,
                gw.metric("argent_gateway_slow_consumers_total").await?,
                cpu_seconds(gw.proc.pid())?,
            ];
            delivered += after[0] - before[0];
            cpu += after[3] - before[3];
            gateway_side.push(json!({
                "delivered": after[0] - before[0],
                "dropped_for_slow_clients": after[1] - before[1],
                "slow_clients_closed": after[2] - before[2],
                "cpu_seconds": ((after[3] - before[3]) * 1000.0).round() / 1000.0,
            }));
        }
        let received = seen.received[step].load(Ordering::Relaxed);
        let mut latencies = std::mem::take(&mut *seen.latencies[step].lock());
        let latency = percentiles(&mut latencies);
        let lost = expected.saturating_sub(received);
        steps.push(json!({
            "events_per_sec": rate,
            "deliveries_per_sec": (expected as f64 / publish_secs).round(),
            "deliveries_expected": expected,
            "deliveries_received": received,
            "lost": lost,
            "gateways": gateway_side,
            "deliveries_per_gateway_cpu_second": (delivered / cpu.max(0.001)).round(),
            "gateway_cpu_ns_per_delivery": (cpu * 1e9 / delivered.max(1.0)).round(),
            "publish_to_receive_latency": latency,
        }));
        let p99 = latency["p99_us"].as_f64().unwrap_or(f64::MAX);
        if lost > 0 || p99 > 1_000_000.0 {
            break;
        }
        ceiling = Some(rate);
    }
    for reader in readers {
        reader.abort();
    }
    Ok(json!({
        "gateways": gateways.len(),
        "subscribers": subscribers,
        "event_bytes": 290,
        "lossless_ceiling_events_per_sec": ceiling,
        "lossless_ceiling_deliveries_per_sec": ceiling.map(|r| r * subscribers),
        "steps": steps,
    }))
}

/// Time from sending a streaming request straight to the double to its first text chunk.
async fn double_first_token(double: &ModelDouble) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = double.openai_base();
    let authority = base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let body = json!({"model": "double-model", "stream": true,
        "messages": [{"role": "user", "content": "first token please"}]})
    .to_string();
    let started = Instant::now();
    let mut tcp = TcpStream::connect(&authority).await?;
    tcp.set_nodelay(true)?;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "the double closed before the first token");
        seen.extend_from_slice(&buf[..n]);
        // The first chunk with text (the role chunk before it has empty content).
        if String::from_utf8_lossy(&seen).contains("\"content\":\"echo") {
            return Ok(started.elapsed().as_nanos() as u64);
        }
    }
}

/// Sends a message on `session` and times it until the first streamed token arrives (ns);
/// returns once the run ended, so the next sample does not queue behind it.
async fn first_token(client: &mut argent_client::Client, session: &str) -> anyhow::Result<u64> {
    let run_id = format!("ft-{}", now_ns());
    let started = Instant::now();
    client
        .call("chat.send", json!({"sessionKey": session, "message": "first token please", "idempotencyKey": run_id}))
        .await?;
    let mut first = None;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), client.next_event())
            .await?
            .context("connection closed")?;
        if event.payload["runId"] != run_id.as_str() {
            continue;
        }
        if first.is_none() && event.name == "agent" && event.payload["stream"] == "assistant" {
            first = Some(started.elapsed().as_nanos() as u64);
        }
        if event.name == "chat" && event.payload["state"] != "delta" {
            anyhow::ensure!(
                event.payload["state"] == "final",
                "run ended: {}",
                event.payload
            );
            return first.context("the run ended without a streamed token");
        }
    }
}

async fn bench_chat(
    s: &Settings,
    nats: &Nats,
    a: &Gateway,
    b: &Gateway,
    node: &Node,
) -> anyhow::Result<Value> {
    let double = ModelDouble::start().await;
    let config = json!({"models": {"providers": {"double": {"api": "openai-completions",
        "baseUrl": double.openai_base(), "apiKey": "bench", "models": [{"id": "double-model"}]}}}});
    let js = async_nats::jetstream::new(nats.client().await?);
    js.get_key_value("argent_config")
        .await?
        .put("argent.json", config.to_string().into())
        .await?;
    let samples = s.count(100, 20);
    let mut direct = Vec::new();
    for _ in 0..samples {
        direct.push(double_first_token(&double).await?);
    }
    // Through the cluster: one new session per sample, so no sample queues behind another;
    // then a second message on the same session (a conversation going on: its transcript
    // exists, and the node that ran the first turn knows it).
    let mut client = a.client().await?;
    let mut through = Vec::new();
    let mut continuing = Vec::new();
    let cpu = |pid: u32| cpu_seconds(pid).unwrap_or(0.0);
    let (node_cpu, gateway_cpu) = (cpu(node.proc.pid()), cpu(a.proc.pid()));
    for i in 0..samples {
        let session = format!("bench-ft-{i}-{}", now_ns());
        through.push(first_token(&mut client, &session).await?);
        // A person's next message, not one sent the instant the answer ended (the lease
        // is released just after the final event; a message that finds it still held
        // queues behind it and costs ~1 ms more).
        tokio::time::sleep(Duration::from_millis(20)).await;
        continuing.push(first_token(&mut client, &session).await?);
    }
    // CPU per turn (a turn: the short answer of the double, three store writes at the end
    // included), which a noisy host does not move the way it moves latency.
    let turns = (through.len() + continuing.len()) as f64;
    let per_turn = |before: f64, pid: u32| ((cpu(pid) - before) / turns * 1e6).round();
    let node_cpu_per_turn_us = per_turn(node_cpu, node.proc.pid());
    let gateway_cpu_per_turn_us = per_turn(gateway_cpu, a.proc.pid());
    let direct_p = percentiles(&mut direct);
    let through_p = percentiles(&mut through);
    let continuing_p = percentiles(&mut continuing);
    let added = |of: &Value, key: &str| ((p(of, key) - p(&direct_p, key)) * 10.0).round() / 10.0;
    let first_token = json!({
        "double_first_token": direct_p,
        "cluster_first_token": through_p,
        "added_p50_us": added(&through_p, "p50_us"),
        "added_p99_us": added(&through_p, "p99_us"),
        "continuing_first_token": continuing_p,
        "continuing_added_p50_us": added(&continuing_p, "p50_us"),
        "continuing_added_p99_us": added(&continuing_p, "p99_us"),
        "node_cpu_per_turn_us": node_cpu_per_turn_us,
        "gateway_cpu_per_turn_us": gateway_cpu_per_turn_us,
    });
    eprintln!("chat first token: {first_token}");

    // 1,000 watchers (500 per gateway, every other one on protocol 4, which gets
    // `deltaText`) while sessions stream long answers.
    let per_gateway = s.count(500, 100);
    let sessions = s.count(20, 5);
    let deltas = Arc::new(AtomicU64::new(0));
    let finals = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for gw in [a, b] {
        for i in 0..per_gateway {
            let mut ws = handshake_as(&gw.ws, &gw.token, 3 + (i % 2) as u64).await?;
            let (deltas, finals, stop) = (deltas.clone(), finals.clone(), stop.clone());
            readers.push(tokio::spawn(async move {
                while let Some(text) = next_text(&mut ws, &stop).await {
                    if text.contains("\"state\":\"delta\"")
                        || text.contains("\"stream\":\"assistant\"")
                    {
                        deltas.fetch_add(1, Ordering::Relaxed);
                    } else if text.contains("\"state\":\"final\"") {
                        finals.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    let started = Instant::now();
    let tag = now_ns();
    for i in 0..sessions {
        client
            .call("chat.send", json!({"sessionKey": format!("bench-stream-{tag}-{i}"),
                "message": "[[delay:5]][[long:300]]", "idempotencyKey": format!("stream-{tag}-{i}")}))
            .await?;
    }
    let expected_finals = (sessions * per_gateway * 2) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while finals.load(Ordering::Relaxed) < expected_finals && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await?;
    }
    let delivered = deltas.load(Ordering::Relaxed);
    Ok(json!({
        "first_token": first_token,
        "watchers": per_gateway * 2,
        "watchers_on_protocol_4": per_gateway,
        "gateways": 2,
        "streaming_sessions": sessions,
        "delta_events_delivered": delivered,
        "finals_delivered": finals.load(Ordering::Relaxed),
        "finals_expected": expected_finals,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "delta_events_delivered_per_sec": (delivered as f64 / elapsed).round(),
    }))
}

/// The bucket the `store` scenario fills: durable, and the largest in real use.
const STORE_BUCKET: &str = argent_proto::subjects::BUCKET_SESSIONS;

fn store_key(n: usize) -> String {
    format!("agent.main.s{n:07}")
}

/// A value of about 200 bytes, like a session entry.
fn store_value(n: usize, round: usize) -> Bytes {
    let text = format!(
        r#"{{"sessionId":"{n:08}-0000-4000-8000-{round:012}","updatedAt":1764000000000,"label":"{}"}}"#,
        "x".repeat(110)
    );
    Bytes::from(text)
}

/// Spreads operation numbers over the bucket (splitmix64), so writers hit keys all over it.
fn spread(x: u64, below: usize) -> usize {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % below as u64) as usize
}

/// Runs `total` operations split over `tasks` tokio tasks; returns the wall time, the
/// latencies (ns) and the process CPU seconds spent.
async fn store_load<F, Fut>(
    tasks: usize,
    total: usize,
    op: F,
) -> anyhow::Result<(f64, Vec<u64>, f64)>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let cpu = cpu_seconds(std::process::id())?;
    let started = Instant::now();
    let mut running = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        let count = total / tasks + usize::from(t < total % tasks);
        running.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for i in 0..count {
                let at = Instant::now();
                op(t, i).await?;
                latencies.push(at.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in running {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((elapsed, latencies, cpu_seconds(std::process::id())? - cpu))
}

fn store_report(ops: usize, (secs, mut latencies, cpu): (f64, Vec<u64>, f64)) -> Value {
    json!({
        "ops": ops,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "per_sec": (ops as f64 / secs).round(),
        "latency": percentiles(&mut latencies),
        "cpu_seconds_per_1000_ops": (cpu / ops as f64 * 1000.0 * 1e4).round() / 1e4,
        "cpu_us_per_op": (cpu / ops as f64 * 1e6 * 100.0).round() / 100.0,
    })
}

async fn bench_store(s: &Settings) -> anyhow::Result<Value> {
    let keys = s.count(100_000, 5_000);
    let writes = s.count(100_000, 5_000);
    let sequential = s.count(5_000, 500);
    let reads = s.count(1_000_000, 20_000);
    let tasks = 16;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(Some(dir.path()))?);

    let started = Instant::now();
    {
        let store = store.clone();
        store_load(tasks, keys, move |t, i| {
            let store = store.clone();
            async move {
                let n = i * tasks + t;
                store
                    .put(STORE_BUCKET, &store_key(n), store_value(n, 0))
                    .await?;
                Ok(())
            }
        })
        .await?;
    }
    let preload_secs = started.elapsed().as_secs_f64();
    let before = store.commit_stats();

    let writer_store = store.clone();
    let concurrent = store_load(tasks, writes, move |t, i| {
        let store = writer_store.clone();
        async move {
            let n = spread((t * 1_000_003 + i) as u64, keys);
            store
                .put(STORE_BUCKET, &store_key(n), store_value(n, i + 1))
                .await?;
            Ok(())
        }
    })
    .await?;
    let after = store.commit_stats();
    let writes_per_commit =
        (after.writes - before.writes) as f64 / (after.commits - before.commits).max(1) as f64;

    // The same writers on 1,000 of the keys: a commit then rewrites few distinct pages, which
    // shows what the scattered page writes of the uniform run cost on this disk.
    let hot_store = store.clone();
    let hot = store_load(tasks, writes / 4, move |t, i| {
        let store = hot_store.clone();
        async move {
            let n = spread((t * 1_000_003 + i) as u64, 1_000);
            store
                .put(STORE_BUCKET, &store_key(n), store_value(n, i + 1))
                .await?;
            Ok(())
        }
    })
    .await?;

    let seq_store = store.clone();
    let one_writer = store_load(1, sequential, move |_, i| {
        let store = seq_store.clone();
        async move {
            let n = (i * 7919) % keys;
            store
                .put(STORE_BUCKET, &store_key(n), store_value(n, i + 1))
                .await?;
            Ok(())
        }
    })
    .await?;

    let reader_store = store.clone();
    let reading = store_load(tasks, reads, move |t, i| {
        let store = reader_store.clone();
        async move {
            let n = (t * 7_919 + i * 104_729) % keys;
            store
                .get(STORE_BUCKET, &store_key(n))
                .await?
                .context("a preloaded key is missing")?;
            Ok(())
        }
    })
    .await?;

    let file_bytes = dir_bytes(&dir.path().join(argent_planes::embedded::DB_FILE))?;
    Ok(json!({
        "store": "EmbeddedStore (fjall, group commit)",
        "bucket": STORE_BUCKET,
        "preloaded_keys": keys,
        "value_bytes": store_value(0, 0).len(),
        "preload_seconds": (preload_secs * 100.0).round() / 100.0,
        "writes_16_tasks": store_report(writes, concurrent),
        "writes_per_commit": (writes_per_commit * 10.0).round() / 10.0,
        "writes_16_tasks_on_1000_hot_keys": store_report(writes / 4, hot),
        "writes_1_task": store_report(sequential, one_writer),
        "reads_16_tasks": store_report(reads, reading),
        "db_file_bytes": file_bytes,
    }))
}

/// The next text frame of a watching client, or `None` once `stop` is set or the socket ends.
async fn next_text(ws: &mut Ws, stop: &AtomicBool) -> Option<Utf8Bytes> {
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(Message::Text(text)))) => return Some(text),
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return None,
        }
    }
    None
}

/// The unsigned number right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings {
        quick: args.iter().any(|a| a == "--quick"),
    };
    let which = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let want = |name: &str| which == "all" || which == name;
    let mut report = json!({
        "bench": "argent-bench",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "quick": settings.quick,
    });

    // Needs no cluster: run first, and without NATS when it is the only one asked for.
    if want("store") {
        report["store"] = bench_store(&settings).await?;
        eprintln!("store: {}", report["store"]);
    }
    let cluster = [
        "handshake",
        "rtt",
        "fanout",
        "chat",
        "burst",
        "idle",
        "idle_tracked",
        "connect_curve",
    ];
    if cluster.iter().any(|name| want(name)) {
        let nats = Nats::start().await?;
        if want("handshake") || want("rtt") || want("fanout") || want("chat") || want("burst") {
            let a = Gateway::cluster(&nats)
                .args(&["--gateway-id", "bench-a"])
                .start()
                .await?;
            let b = Gateway::cluster(&nats)
                .args(&["--gateway-id", "bench-b"])
                .start()
                .await?;
            let node = Node::start(&nats, "bench-node").await?;
            // Wait until the gateway routes to the node.
            let client = a.client().await?;
            argent_tests::eventually(Duration::from_secs(10), || async {
                client.call("agents.list", json!({})).await.ok()
            })
            .await
            .context("node never became routable")?;
            if want("handshake") {
                report["handshake"] = bench_handshake(&settings, &a).await?;
                eprintln!("handshake: {}", report["handshake"]);
            }
            if want("rtt") {
                report["rtt"] = bench_rtt(&settings, &a, &node).await?;
                eprintln!("rtt: {}", report["rtt"]);
            }
            if want("fanout") {
                report["fanout"] = bench_fanout(&settings, &nats, &[&a, &b]).await?;
                eprintln!("fanout: {}", report["fanout"]);
            }
            if want("burst") {
                report["burst"] = bench_burst(&settings, &a, &node).await?;
                eprintln!("burst: {}", report["burst"]);
            }
            if want("chat") {
                report["chat"] = bench_chat(&settings, &nats, &a, &b, &node).await?;
                eprintln!("chat: {}", report["chat"]);
            }
        }
        if want("idle") {
            let gw = Gateway::local().start().await?;
            report["idle"] = bench_idle(&settings, &gw, IdleClient::Cli).await?;
            eprintln!("idle: {}", report["idle"]);
        }
        if want("idle_tracked") {
            let gw = Gateway::local().start().await?;
            report["idle_tracked"] = bench_idle(&settings, &gw, IdleClient::Tracked).await?;
            eprintln!("idle_tracked: {}", report["idle_tracked"]);
        }
        if want("connect_curve") {
            let gw = Gateway::local().start().await?;
            report["connect_curve"] = bench_connect_curve(&settings, &gw).await?;
            eprintln!("connect_curve: {}", report["connect_curve"]);
        }
    }
    if want("knowledge") {
        report["knowledge"] = knowledge::bench(&settings).await?;
        eprintln!("knowledge: {}", report["knowledge"]);
    }
    if want("speech") {
        report["speech"] = speech::bench(&settings).await?;
        eprintln!("speech: {}", report["speech"]);
    }
    if want("channels") {
        report["channels"] = channels::bench(&settings).await?;
        eprintln!("channels: {}", report["channels"]);
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The bytes of the files under `path`.
fn dir_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += dir_bytes(&entry?.path())?;
    }
    Ok(total)
}
