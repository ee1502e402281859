//! Chaos under steady load: one nats-server, two gateways, two node-agents, and writers that
//! never stop injecting chat messages through both gateways while, one after another, a
//! node-agent is SIGKILLed (then restarted), the other is frozen with SIGSTOP, a gateway is
//! SIGKILLed (its clients move to the survivor; then it is restarted) and NATS is down for
//! 10 s. What must hold (ARCHITECTURE.md, failure model):
//!
//! * no acknowledged write is lost: every `chat.inject` answered ok is in `chat.history` of
//!   its session afterwards, through either gateway, once, in real-time order;
//! * no stale read: `chat.inject` answers only after JetStream stored the message, and
//!   `chat.history` reads the stream itself (the node's transcript cache serves turns, never
//!   history), so a read through the *other* gateway right after the ack must see it;
//! * while the cluster heals, a client sees only the retryable `UNAVAILABLE` (or, when its
//!   own gateway dies, a closed socket), never a hang;
//! * writes resume on every session and every writer within a bound after each fault.
//!
//! One line `{"chaos": {…}}` on stdout carries the recovery times and counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};

use argent_client::{Client, ClientError, ConnectOptions};
use argent_proto::errors::ErrorShape;
use argent_tests::{eventually, signal, Gateway, Nats, Node, TOKEN};

const WRITERS: usize = 4;
/// Enough sessions that rendezvous hashing gives both node-agents some, few enough that
/// each stays far below `HISTORY_LIMIT` messages over the whole test.
const SESSIONS: usize = 8;
/// The largest page `chat.history` gives: the final read must see whole sessions.
const HISTORY_LIMIT: usize = 1000;
/// About 40 writes a second in all: steady load, not a benchmark.
const WRITE_INTERVAL: Duration = Duration::from_millis(100);
/// A retryable error's `retryAfterMs` is honoured up to this much (the servers ask for 500
/// or 1000 ms), so a recovery time measured here may include up to 1 s of politeness.
const MAX_BACKOFF: Duration = Duration::from_millis(1000);
/// Every this many acknowledged writes, a writer reads back through the other gateway.
const SAMPLE_EVERY: u64 = 4;
/// Read-after-write samples each phase must have seen succeed (but the one where the other
/// gateway is dead), so a phase cannot pass by never checking.
const MIN_SAMPLES: usize = 3;
/// A call neither answered nor failed within this is a hang: every failure path of the
/// cluster is meant to answer within seconds (node calls fail over within the 3 s liveness
/// bound, state calls fail fast while NATS is away).
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// How long each phase runs on after it recovered, to gather read samples.
const DWELL: Duration = Duration::from_millis(1500);
const SAMPLE_WAIT: Duration = Duration::from_secs(10);
/// How much longer than a bound the test waits for a recovery before calling it failed (so
/// the measured value is reported even when it misses the bound).
const RECOVERY_SLACK: Duration = Duration::from_secs(4);
const STOP_FOR: Duration = Duration::from_secs(4);
const NATS_DOWN_FOR: Duration = Duration::from_secs(10);
const REGISTER_WITHIN: Duration = Duration::from_secs(15);
const FINAL_READ_WITHIN: Duration = Duration::from_secs(15);
/// Fewer acknowledged writes than this means the load never really ran.
const MIN_ACKED: usize = 200;

/// SIGKILL of a node-agent: the gateway's pooled connection breaks, the call in flight fails
/// (not idempotent, so not repeated), the node is suspected at once and later calls go to
/// the survivor; a fresh connection to the dead port is refused, which any call may move on
/// from. Well under a second in practice; 6 s leaves room for a loaded CI machine and the
/// 1 s retry-after.
const NODE_KILL_BOUND: Duration = Duration::from_secs(6);
/// SIGSTOP: calls in flight to the frozen node fail after the HTTP/2 keepalive (1 s ping +
/// 2 s timeout), and it stops being routable when its record goes stale (3 s). About 3.5 s,
/// plus the retry-after.
const NODE_STOP_BOUND: Duration = Duration::from_secs(6);
/// Gateway SIGKILL: the socket closes at once, connecting to the dead port is refused at
/// once, and the other gateway already knows both nodes.
const GATEWAY_KILL_BOUND: Duration = Duration::from_secs(5);
/// NATS back (measured from its restart): the clients' reconnect backoff is capped at 4 s,
/// node heartbeats every 1 s, the gateways' registry watch is re-created on reconnect (its
/// JetStream requests time out after 5 s while the server is away, so one attempt may still
/// be pending), then the retry-after. About 10 s worst case; the existing outage test allows
/// 20 s for a shorter outage.
const NATS_BOUND: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    NodeKill,
    NodeRestart,
    NodeStop,
    GatewayKill,
    GatewayRestart,
    NatsOutage,
    After,
}

const PHASE_COUNT: usize = 8;
const PHASES: [Phase; PHASE_COUNT] = [
    Phase::Warmup,
    Phase::NodeKill,
    Phase::NodeRestart,
    Phase::NodeStop,
    Phase::GatewayKill,
    Phase::GatewayRestart,
    Phase::NatsOutage,
    Phase::After,
];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::NodeKill => "node_kill",
            Phase::NodeRestart => "node_restart",
            Phase::NodeStop => "node_stop",
            Phase::GatewayKill => "gateway_kill",
            Phase::GatewayRestart => "gateway_restart",
            Phase::NatsOutage => "nats_outage",
            Phase::After => "after",
        }
    }
}

/// A write answered ok.
struct Ack {
    writer: usize,
    session: usize,
    text: String,
    /// Gateway slot (0: A, 1: B) and its generation (bumped when A is restarted).
    slot: usize,
    generation: u64,
    /// The phase when the write was sent.
    phase: Phase,
    started: Instant,
    acked: Instant,
}

/// A write (or a connection for one) that failed.
struct Failure {
    writer: usize,
    /// The text sent, when the request went out (it may or may not have been applied).
    text: Option<String>,
    phase: Phase,
    at: Instant,
    kind: &'static str,
    detail: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct Reads {
    visible: usize,
    stale: usize,
    unavailable: usize,
}

#[derive(Default)]
struct Log {
    acks: Vec<Ack>,
    failures: Vec<Failure>,
    reads: [Reads; PHASE_COUNT],
    /// Each starts with its kind and a colon (`lost:`, `stale read:`, `error shape:`, …).
    violations: Vec<String>,
    reconnects: usize,
}

/// Where a gateway slot is reached now; `generation` changes when it is restarted, which
/// is how its former clients learn that it is back.
#[derive(Clone)]
struct Endpoint {
    url: String,
    generation: u64,
}

struct Shared {
    started: Instant,
    sessions: Vec<String>,
    phase: AtomicUsize,
    phase_started: Mutex<[Option<Instant>; PHASE_COUNT]>,
    stop: AtomicBool,
    /// Set while a gateway is dead or just restarted: only then may a socket close or a
    /// connection be refused.
    transport_expected: AtomicBool,
    endpoints: Mutex<[Endpoint; 2]>,
    log: Mutex<Log>,
}

impl Shared {
    fn phase(&self) -> Phase {
        PHASES[self.phase.load(Ordering::SeqCst)]
    }

    fn enter(&self, phase: Phase) {
        self.phase_started.lock()[phase as usize] = Some(Instant::now());
        self.phase.store(phase as usize, Ordering::SeqCst);
    }

    fn endpoint(&self, slot: usize) -> Endpoint {
        self.endpoints.lock()[slot].clone()
    }

    /// The writer's home gateway, unless it saw that very incarnation of it die.
    fn choose(&self, home: usize, avoid: Option<(usize, u64)>) -> (usize, Endpoint) {
        let endpoints = self.endpoints.lock();
        let slot = if avoid == Some((home, endpoints[home].generation)) {
            1 - home
        } else {
            home
        };
        (slot, endpoints[slot].clone())
    }

    fn transport_expected(&self) -> bool {
        self.transport_expected.load(Ordering::SeqCst)
    }

    fn stamp(&self, at: Instant) -> String {
        format!("t+{}ms", ms(at.saturating_duration_since(self.started)))
    }

    fn violation(&self, what: String) {
        self.log.lock().violations.push(what);
    }

    fn fail(&self, failure: Failure) {
        self.log.lock().failures.push(failure);
    }

    fn count_read(&self, phase: Phase, count: impl FnOnce(&mut Reads)) {
        count(&mut self.log.lock().reads[phase as usize]);
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The only failure a client may see while the cluster heals.
fn clear_retryable(e: &ErrorShape) -> bool {
    e.code == "UNAVAILABLE" && e.retryable == Some(true)
}

fn texts(history: &Value) -> Option<Vec<String>> {
    let messages = history["messages"].as_array()?;
    Some(
        messages
            .iter()
            .map(|m| {
                m["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect(),
    )
}

struct Conn {
    client: Client,
    slot: usize,
    generation: u64,
}

async fn connect(url: &str) -> Result<Client, ClientError> {
    let mut options = ConnectOptions::cli(url, Some(TOKEN.to_string()));
    options.timeout = CALL_DEADLINE;
    // Every inject is broadcast as a `chat` event; nobody here reads them.
    options.event_capacity = 64;
    Client::connect(&options).await
}

async fn retire(conn: Option<Conn>) {
    if let Some(conn) = conn {
        conn.client.close().await;
    }
}

/// Connects as a client behind a load balancer would be sent: home first; when home
/// refuses, the other gateway, and home is avoided until it comes back as a new generation.
async fn reach(
    shared: &Shared,
    home: usize,
    avoid: &mut Option<(usize, u64)>,
) -> Result<Conn, String> {
    let mut why = Vec::new();
    for _ in 0..2 {
        let (slot, endpoint) = shared.choose(home, *avoid);
        match connect(&endpoint.url).await {
            Ok(client) => {
                return Ok(Conn {
                    client,
                    slot,
                    generation: endpoint.generation,
                })
            }
            Err(e) => {
                if !shared.transport_expected() {
                    shared.violation(format!(
                        "transport: {} cannot connect to gateway slot {slot}: {e}",
                        shared.stamp(Instant::now())
                    ));
                }
                why.push(format!("slot {slot}: {e}"));
                if slot == home {
                    *avoid = Some((slot, endpoint.generation));
                } else {
                    // Both refused: try home again next time.
                    *avoid = None;
                    break;
                }
            }
        }
    }
    Err(why.join("; "))
}

/// One writer: unique texts into the sessions in turn, through its gateway, for as long as
/// the test runs.
async fn writer(shared: Arc<Shared>, id: usize, home: usize) {
    let mut conn: Option<Conn> = None;
    let mut reader: Option<Conn> = None;
    let mut avoid: Option<(usize, u64)> = None;
    let mut connected_before = false;
    let mut attempt: u64 = 0;
    let mut acked: u64 = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let phase = shared.phase();
        // A restarted home is a new generation: go back to it, as new connections would.
        let (slot, endpoint) = shared.choose(home, avoid);
        if conn
            .as_ref()
            .is_some_and(|c| (c.slot, c.generation) != (slot, endpoint.generation))
        {
            retire(conn.take()).await;
        }
        if conn.is_none() {
            match reach(&shared, home, &mut avoid).await {
                Ok(reached) => {
                    if connected_before {
                        shared.log.lock().reconnects += 1;
                    }
                    connected_before = true;
                    conn = Some(reached);
                }
                Err(why) => {
                    shared.fail(Failure {
                        writer: id,
                        text: None,
                        phase,
                        at: Instant::now(),
                        kind: "connect",
                        detail: why,
                    });
                    tokio::time::sleep(WRITE_INTERVAL).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        let (slot, generation) = (c.slot, c.generation);
        attempt += 1;
        let session = (id + attempt as usize) % SESSIONS;
        let text = format!("chaos w{id} #{attempt}");
        let started = Instant::now();
        let result = c
            .client
            .call(
                "chat.inject",
                json!({"sessionKey": shared.sessions[session], "message": text}),
            )
            .await;
        let at = Instant::now();
        match result {
            Ok(payload) => {
                if payload["ok"] != true || !payload["messageId"].is_string() {
                    shared.violation(format!(
                        "ack shape: {} chat.inject answered ok with {payload}",
                        shared.stamp(at)
                    ));
                }
                shared.log.lock().acks.push(Ack {
                    writer: id,
                    session,
                    text: text.clone(),
                    slot,
                    generation,
                    phase,
                    started,
                    acked: at,
                });
                acked += 1;
                if acked.is_multiple_of(SAMPLE_EVERY) {
                    read_back(&shared, &mut reader, slot, session, &text, phase).await;
                }
                tokio::time::sleep(WRITE_INTERVAL).await;
            }
            Err(ClientError::Call(e)) => {
                if !clear_retryable(&e) {
                    shared.violation(format!(
                        "error shape: {} chat.inject through slot {slot} failed with {} ({}) retryable={:?}",
                        shared.stamp(at),
                        e.message,
                        e.code,
                        e.retryable
                    ));
                }
                let pause = e
                    .retry_after_ms
                    .map(Duration::from_millis)
                    .unwrap_or(WRITE_INTERVAL)
                    .clamp(WRITE_INTERVAL, MAX_BACKOFF);
                shared.fail(Failure {
                    writer: id,
                    text: Some(text),
                    phase,
                    at,
                    kind: "error",
                    detail: format!("{} ({})", e.message, e.code),
                });
                tokio::time::sleep(pause).await;
            }
            Err(ClientError::Timeout(after)) => {
                shared.violation(format!(
                    "hang: {} chat.inject through slot {slot} had no answer within {after:?}",
                    shared.stamp(at)
                ));
                shared.fail(Failure {
                    writer: id,
                    text: Some(text),
                    phase,
                    at,
                    kind: "timeout",
                    detail: format!("no answer within {after:?}"),
                });
            }
            Err(other) => {
                if !shared.transport_expected() {
                    shared.violation(format!(
                        "transport: {} chat.inject through slot {slot}: {other}",
                        shared.stamp(at)
                    ));
                }
                shared.fail(Failure {
                    writer: id,
                    text: Some(text),
                    phase,
                    at,
                    kind: "transport",
                    detail: other.to_string(),
                });
                // Reconnect on the next turn (its gateway is probably gone).
                conn = None;
            }
        }
    }
    retire(conn).await;
    retire(reader).await;
}

/// Reads the session through the gateway the write did not go through and checks the
/// acknowledged text is there.
async fn read_back(
    shared: &Shared,
    reader: &mut Option<Conn>,
    wrote_through: usize,
    session: usize,
    text: &str,
    phase: Phase,
) {
    let slot = 1 - wrote_through;
    let endpoint = shared.endpoint(slot);
    if reader
        .as_ref()
        .is_some_and(|r| (r.slot, r.generation) != (slot, endpoint.generation))
    {
        retire(reader.take()).await;
    }
    if reader.is_none() {
        match connect(&endpoint.url).await {
            Ok(client) => {
                *reader = Some(Conn {
                    client,
                    slot,
                    generation: endpoint.generation,
                })
            }
            Err(_) => {
                // The other gateway is dead (or restarting): no sample, not a stale read.
                shared.count_read(phase, |r| r.unavailable += 1);
                return;
            }
        }
    }
    let Some(conn) = reader.as_ref() else { return };
    let name = &shared.sessions[session];
    let result = conn
        .client
        .call(
            "chat.history",
            json!({"sessionKey": name, "limit": HISTORY_LIMIT}),
        )
        .await;
    let at = Instant::now();
    match result {
        Ok(history) => match texts(&history) {
            Some(seen) if seen.iter().any(|t| t == text) => {
                shared.count_read(phase, |r| r.visible += 1)
            }
            Some(seen) => {
                shared.count_read(phase, |r| r.stale += 1);
                shared.violation(format!(
                    "stale read: {} {text:?} was acknowledged through slot {wrote_through}, then chat.history of {name} through slot {slot} ({} messages) lacks it",
                    shared.stamp(at),
                    seen.len()
                ));
            }
            None => {
                shared.count_read(phase, |r| r.unavailable += 1);
                shared.violation(format!(
                    "history shape: {} chat.history of {name} answered {history}",
                    shared.stamp(at)
                ));
            }
        },
        Err(ClientError::Call(e)) => {
            shared.count_read(phase, |r| r.unavailable += 1);
            if !clear_retryable(&e) {
                shared.violation(format!(
                    "error shape: {} chat.history through slot {slot} failed with {} ({}) retryable={:?}",
                    shared.stamp(at),
                    e.message,
                    e.code,
                    e.retryable
                ));
            }
        }
        Err(ClientError::Timeout(after)) => {
            shared.count_read(phase, |r| r.unavailable += 1);
            shared.violation(format!(
                "hang: {} chat.history through slot {slot} had no answer within {after:?}",
                shared.stamp(at)
            ));
        }
        Err(other) => {
            shared.count_read(phase, |r| r.unavailable += 1);
            if !shared.transport_expected() {
                shared.violation(format!(
                    "transport: {} chat.history through slot {slot}: {other}",
                    shared.stamp(at)
                ));
            }
            *reader = None;
        }
    }
}

/// How long after `since` writes went through again: the first write of all, and the last
/// of the first writes of each session and each writer (every lane had resumed).
#[derive(Debug, Clone, Copy)]
struct Recovery {
    first_ok: Duration,
    all: Duration,
}

/// Only writes sent at or after `since` count: one sent before and answered after does not
/// show that the cluster takes new writes.
fn recovery(log: &Log, since: Instant) -> Option<Recovery> {
    let after = move || log.acks.iter().filter(move |a| a.started >= since);
    let first_ok = after().map(|a| a.acked).min()?;
    let mut lanes = Vec::new();
    for session in 0..SESSIONS {
        lanes.push(
            after()
                .filter(|a| a.session == session)
                .map(|a| a.acked)
                .min()?,
        );
    }
    for writer in 0..WRITERS {
        lanes.push(
            after()
                .filter(|a| a.writer == writer)
                .map(|a| a.acked)
                .min()?,
        );
    }
    let all = lanes.into_iter().max()?;
    Some(Recovery {
        first_ok: first_ok.saturating_duration_since(since),
        all: all.saturating_duration_since(since),
    })
}

async fn wait_recovery(shared: &Shared, since: Instant, bound: Duration) -> Option<Recovery> {
    eventually(bound + RECOVERY_SLACK, || async {
        recovery(&shared.log.lock(), since)
    })
    .await
}

/// Lets the phase run on, and makes sure it took its read-after-write samples.
async fn settle(shared: &Shared, phase: Phase, problems: &mut Vec<String>) {
    tokio::time::sleep(DWELL).await;
    // With gateway A dead there is no other gateway to read through.
    if phase == Phase::GatewayKill {
        return;
    }
    let sampled = eventually(SAMPLE_WAIT, || async {
        (shared.log.lock().reads[phase as usize].visible >= MIN_SAMPLES).then_some(())
    })
    .await;
    if sampled.is_none() {
        let reads = shared.log.lock().reads[phase as usize];
        problems.push(format!(
            "phase {}: fewer than {MIN_SAMPLES} successful read-after-write samples within {SAMPLE_WAIT:?} ({reads:?})",
            phase.name()
        ));
    }
}

async fn start_gateway(nats: &Nats, id: &str, state_dir: Option<&Path>) -> Gateway {
    let mut builder = Gateway::cluster(nats).args(&["--gateway-id", id]);
    if let Some(dir) = state_dir {
        builder = builder.state_dir(dir);
    }
    builder.start().await.unwrap()
}

/// Waits until `gw` lists each node at the address it listens on now (a restarted node's
/// old record lingers under the same id until it goes stale).
async fn routable(gw: &Gateway, nodes: &[&Node], within: Duration) -> bool {
    let Ok(client) = gw.client().await else {
        return false;
    };
    let listed = eventually(within, || async {
        let status = client.call("status", json!({})).await.ok()?;
        let live = status["cluster"]["nodes"].as_array()?.clone();
        nodes
            .iter()
            .all(|n| {
                live.iter()
                    .any(|l| l["id"] == n.id.as_str() && l["address"] == n.grpc.as_str())
            })
            .then_some(())
    })
    .await;
    client.close().await;
    listed.is_some()
}

async fn assert_routable(gateways: &[Gateway], nodes: &[&Node], within: Duration) {
    for gw in gateways {
        assert!(
            routable(gw, nodes, within).await,
            "gateway {} does not list {:?} at their addresses within {within:?}",
            gw.id,
            nodes.iter().map(|n| &n.id).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_under_steady_load_loses_no_acknowledged_write() {
    let test_started = Instant::now();
    let mut nats = Nats::start().await.unwrap();
    // Declared before the gateways so it is dropped after them: a restarted gateway runs in
    // the state dir the killed one owns.
    let mut retired: Vec<Gateway> = Vec::new();
    let mut gateways = [
        start_gateway(&nats, "gw-a", None).await,
        start_gateway(&nats, "gw-b", None).await,
    ];
    let mut nodes = [
        Node::start(&nats, "node-1").await.unwrap(),
        Node::start(&nats, "node-2").await.unwrap(),
    ];
    assert_routable(&gateways, &[&nodes[0], &nodes[1]], REGISTER_WITHIN).await;

    let sessions: Vec<String> = (0..SESSIONS).map(|i| format!("chaos-{i}")).collect();
    // chat.inject writes only into a session that exists.
    let admin = gateways[0].client().await.unwrap();
    for name in &sessions {
        admin
            .call("sessions.patch", json!({"key": name, "label": name}))
            .await
            .unwrap_or_else(|e| panic!("cannot create session {name}: {e}"));
    }
    admin.close().await;

    let shared = Arc::new(Shared {
        started: test_started,
        sessions,
        phase: AtomicUsize::new(Phase::Warmup as usize),
        phase_started: Mutex::new([None; PHASE_COUNT]),
        stop: AtomicBool::new(false),
        transport_expected: AtomicBool::new(false),
        endpoints: Mutex::new([
            Endpoint {
                url: gateways[0].ws.clone(),
                generation: 0,
            },
            Endpoint {
                url: gateways[1].ws.clone(),
                generation: 0,
            },
        ]),
        log: Mutex::new(Log::default()),
    });
    shared.enter(Phase::Warmup);
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(shared.clone(), id, id % 2)))
        .collect();
    let mut problems = Vec::new();
    let mut recoveries: Vec<(&str, Option<Recovery>, Option<Duration>)> = Vec::new();

    settle(&shared, Phase::Warmup, &mut problems).await;

    // 1. A node-agent crashes; measured before it comes back, so this is failover alone.
    shared.enter(Phase::NodeKill);
    let fault = Instant::now();
    nodes[0].proc.kill();
    let measured = wait_recovery(&shared, fault, NODE_KILL_BOUND).await;
    recoveries.push(("node_kill", measured, Some(NODE_KILL_BOUND)));
    settle(&shared, Phase::NodeKill, &mut problems).await;

    shared.enter(Phase::NodeRestart);
    nodes[0] = Node::start(&nats, "node-1").await.unwrap();
    assert_routable(&gateways, &[&nodes[0]], REGISTER_WITHIN).await;
    let back = Instant::now();
    let measured = wait_recovery(&shared, back, NODE_KILL_BOUND).await;
    recoveries.push(("node_restart", measured, None));
    settle(&shared, Phase::NodeRestart, &mut problems).await;

    // 2. The other node-agent hangs: alive to TCP, silent to everything else.
    shared.enter(Phase::NodeStop);
    let fault = Instant::now();
    let frozen = nodes[1].proc.pid();
    signal(frozen, "STOP");
    tokio::time::sleep(STOP_FOR).await;
    signal(frozen, "CONT");
    let stopped_for = fault.elapsed();
    let measured = wait_recovery(&shared, fault, NODE_STOP_BOUND).await;
    recoveries.push(("node_stop", measured, Some(NODE_STOP_BOUND)));
    assert_routable(&gateways, &[&nodes[1]], REGISTER_WITHIN).await;
    settle(&shared, Phase::NodeStop, &mut problems).await;

    // 3. Gateway A crashes: its clients find it refusing and move to B.
    shared.enter(Phase::GatewayKill);
    shared.transport_expected.store(true, Ordering::SeqCst);
    let fault = Instant::now();
    gateways[0].proc.kill();
    let measured = wait_recovery(&shared, fault, GATEWAY_KILL_BOUND).await;
    recoveries.push(("gateway_kill", measured, Some(GATEWAY_KILL_BOUND)));
    settle(&shared, Phase::GatewayKill, &mut problems).await;

    // A comes back (same id and state dir, a new port): its former clients return, so the
    // NATS outage again has writers on both gateways.
    shared.enter(Phase::GatewayRestart);
    let state_dir = gateways[0].state_dir.clone();
    let restarted = start_gateway(&nats, "gw-a", Some(state_dir.as_path())).await;
    retired.push(std::mem::replace(&mut gateways[0], restarted));
    assert_routable(&gateways[..1], &[&nodes[0], &nodes[1]], REGISTER_WITHIN).await;
    let back = Instant::now();
    shared.endpoints.lock()[0] = Endpoint {
        url: gateways[0].ws.clone(),
        generation: 1,
    };
    let homed_on_a: Vec<usize> = (0..WRITERS).filter(|w| w % 2 == 0).collect();
    let returned = eventually(REGISTER_WITHIN, || async {
        let log = shared.log.lock();
        homed_on_a
            .iter()
            .all(|&w| {
                log.acks
                    .iter()
                    .any(|a| a.writer == w && a.slot == 0 && a.generation == 1)
            })
            .then_some(())
    })
    .await;
    if returned.is_none() {
        problems.push(format!(
            "the writers of gateway A did not write through it again within {REGISTER_WITHIN:?} of its restart"
        ));
    }
    let measured = wait_recovery(&shared, back, GATEWAY_KILL_BOUND).await;
    recoveries.push(("gateway_restart", measured, None));
    shared.transport_expected.store(false, Ordering::SeqCst);
    settle(&shared, Phase::GatewayRestart, &mut problems).await;

    // 4. NATS crashes and stays away for 10 s; it comes back on its port with its JetStream
    // storage (the harness keeps the store dir), so nothing written before may be missing.
    shared.enter(Phase::NatsOutage);
    let outage = Instant::now();
    nats.stop();
    tokio::time::sleep(NATS_DOWN_FOR).await;
    nats.restart()
        .expect("nats-server restarts on its port with its storage");
    let restart = Instant::now();
    let measured = wait_recovery(&shared, restart, NATS_BOUND).await;
    recoveries.push(("nats_outage", measured, Some(NATS_BOUND)));
    assert_routable(&gateways, &[&nodes[0], &nodes[1]], REGISTER_WITHIN).await;
    settle(&shared, Phase::NatsOutage, &mut problems).await;

    shared.enter(Phase::After);
    settle(&shared, Phase::After, &mut problems).await;
    shared.stop.store(true, Ordering::SeqCst);
    for handle in writers {
        // At worst: a write, then a read-back's connect and call, each up to the deadline.
        tokio::time::timeout(CALL_DEADLINE * 3 + MAX_BACKOFF, handle)
            .await
            .expect("a writer stops within its call deadline")
            .expect("a writer does not panic");
    }

    // (a) Every acknowledged write is in its session, through each gateway, exactly once
    // and in real-time order; whatever else is there was at least sent.
    let log = std::mem::take(&mut *shared.log.lock());
    let mut violations = log.violations.clone();
    let sent: HashSet<&str> = log
        .acks
        .iter()
        .map(|a| a.text.as_str())
        .chain(log.failures.iter().filter_map(|f| f.text.as_deref()))
        .collect();
    let unacknowledged: HashSet<&str> = log
        .failures
        .iter()
        .filter_map(|f| f.text.as_deref())
        .collect();
    let mut final_reads = Vec::new();
    for gw in &gateways {
        let client = gw.client().await.unwrap_or_else(|e| {
            panic!(
                "cannot connect to gateway {} for the final read: {e}",
                gw.id
            )
        });
        let (mut missing, mut duplicates, mut phantoms, mut out_of_order, mut applied) =
            (0usize, 0usize, 0usize, 0usize, 0usize);
        let mut messages = 0usize;
        for (index, name) in shared.sessions.iter().enumerate() {
            let history = eventually(FINAL_READ_WITHIN, || async {
                client
                    .call(
                        "chat.history",
                        json!({"sessionKey": name, "limit": HISTORY_LIMIT}),
                    )
                    .await
                    .ok()
            })
            .await
            .unwrap_or_else(|| {
                panic!(
                    "chat.history of {name} through {} did not answer within {FINAL_READ_WITHIN:?}",
                    gw.id
                )
            });
            let seen = texts(&history)
                .unwrap_or_else(|| panic!("chat.history of {name} has no messages: {history}"));
            if seen.len() >= HISTORY_LIMIT {
                problems.push(format!(
                    "{name} has {} messages, the history page limit: the final read cannot see all of it",
                    seen.len()
                ));
            }
            messages += seen.len();
            let mut position: HashMap<&str, usize> = HashMap::new();
            for (i, text) in seen.iter().enumerate() {
                if position.insert(text.as_str(), i).is_some() {
                    duplicates += 1;
                    violations.push(format!(
                        "duplicate: {text:?} is in {name} more than once (through {})",
                        gw.id
                    ));
                }
                if !sent.contains(text.as_str()) {
                    phantoms += 1;
                    violations.push(format!(
                        "phantom: {text:?} is in {name} (through {}) but was never sent",
                        gw.id
                    ));
                } else if unacknowledged.contains(text.as_str()) {
                    applied += 1;
                }
            }
            let mut placed: Vec<(usize, &Ack)> = Vec::new();
            for ack in log.acks.iter().filter(|a| a.session == index) {
                match position.get(ack.text.as_str()) {
                    Some(&i) => placed.push((i, ack)),
                    None => {
                        missing += 1;
                        violations.push(format!(
                            "lost: {:?} (acknowledged {} through slot {} in phase {}) is not in {name} through {}",
                            ack.text,
                            shared.stamp(ack.acked),
                            ack.slot,
                            ack.phase.name(),
                            gw.id
                        ));
                    }
                }
            }
            // A write acknowledged before another was even sent must come first in the log.
            placed.sort_by_key(|(i, _)| *i);
            let mut latest_start: Option<&Ack> = None;
            for &(_, ack) in &placed {
                if let Some(earlier) = latest_start {
                    if ack.acked < earlier.started {
                        out_of_order += 1;
                        violations.push(format!(
                            "order: in {name} (through {}) {:?} comes after {:?}, yet it was acknowledged ({}) before that one was sent ({})",
                            gw.id,
                            ack.text,
                            earlier.text,
                            shared.stamp(ack.acked),
                            shared.stamp(earlier.started)
                        ));
                    }
                }
                match latest_start {
                    Some(earlier) if earlier.started >= ack.started => {}
                    _ => latest_start = Some(ack),
                }
            }
        }
        final_reads.push(json!({
            "gateway": gw.id, "messages": messages, "missing": missing,
            "duplicates": duplicates, "phantoms": phantoms, "out_of_order": out_of_order,
            "unacknowledged_but_applied": applied,
        }));
        client.close().await;
    }

    let starts = *shared.phase_started.lock();
    let phases: serde_json::Map<String, Value> = PHASES
        .iter()
        .map(|&phase| {
            let failures: Vec<&Failure> =
                log.failures.iter().filter(|f| f.phase == phase).collect();
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for failure in &failures {
                *kinds.entry(failure.kind).or_default() += 1;
            }
            let window = starts[phase as usize].and_then(|start| {
                let first = failures.iter().map(|f| f.at).min()?;
                let last = failures.iter().map(|f| f.at).max()?;
                Some([
                    ms(first.saturating_duration_since(start)),
                    ms(last.saturating_duration_since(start)),
                ])
            });
            let mut examples: Vec<String> = Vec::new();
            for failure in &failures {
                let example = format!("w{} {}: {}", failure.writer, failure.kind, failure.detail);
                if examples.len() < 3 && !examples.contains(&example) {
                    examples.push(example);
                }
            }
            let reads = log.reads[phase as usize];
            let value = json!({
                "acked": log.acks.iter().filter(|a| a.phase == phase).count(),
                "failed": failures.len(),
                "failure_kinds": kinds,
                "failure_window_ms": window,
                "failure_examples": examples,
                "reads": {"visible": reads.visible, "stale": reads.stale, "unavailable": reads.unavailable},
            });
            (phase.name().to_string(), value)
        })
        .collect();
    let recovery_report: serde_json::Map<String, Value> = recoveries
        .iter()
        .map(|(name, measured, bound)| {
            let value = json!({
                "first_ok_ms": measured.map(|r| ms(r.first_ok)),
                "all_lanes_ms": measured.map(|r| ms(r.all)),
                "bound_ms": bound.map(ms),
            });
            (name.to_string(), value)
        })
        .collect();
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for violation in &violations {
        *by_kind
            .entry(violation.split(':').next().unwrap_or("?"))
            .or_default() += 1;
    }
    println!(
        "{}",
        json!({"chaos": {
            "wall_ms": ms(test_started.elapsed()),
            "recovery": recovery_report,
            "node_stopped_ms": ms(stopped_for),
            "nats_down_ms": ms(restart.saturating_duration_since(outage)),
            "writes": {
                "acked": log.acks.len(),
                "acked_before_nats_outage": log.acks.iter().filter(|a| a.acked < outage).count(),
                "failed": log.failures.iter().filter(|f| f.text.is_some()).count(),
                "connect_failures": log.failures.iter().filter(|f| f.text.is_none()).count(),
                "reconnects": log.reconnects,
            },
            "phases": phases,
            "final_reads": final_reads,
            "violations": {
                "count": violations.len(),
                "by_kind": by_kind,
                "first": violations.iter().take(20).collect::<Vec<_>>(),
            },
            "problems": problems,
        }})
    );

    assert!(
        violations.is_empty(),
        "{} violations (the chaos line above has them by kind), first: {:#?}",
        violations.len(),
        &violations[..violations.len().min(20)]
    );
    for (name, measured, bound) in &recoveries {
        let Some(bound) = bound else { continue };
        let measured = measured.unwrap_or_else(|| {
            panic!(
                "{name}: writes did not resume on every session and writer within {:?}",
                *bound + RECOVERY_SLACK
            )
        });
        assert!(
            measured.all <= *bound,
            "{name}: writes resumed everywhere only after {:?} (bound {bound:?})",
            measured.all
        );
    }
    assert!(
        log.acks.len() >= MIN_ACKED,
        "only {} writes were acknowledged: the load never really ran",
        log.acks.len()
    );
    assert!(problems.is_empty(), "{problems:#?}");
}
