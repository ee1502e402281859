//! One WebSocket connection, from the TCP accept to the last frame.
//!
//! `connect.challenge` is sent as soon as the upgrade completes; the first frame must be a
//! valid `connect` within the handshake deadline (§2.1–§2.4). After `hello-ok` the socket is
//! split: a writer task drains the connection's [`Outbox`], and this task reads requests and
//! runs each in its own task (bounded per connection, so a flood of requests slows only
//! its sender).

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use argent_planes::calls::node_call_secret;
use argent_proto::catalog::Role;
use argent_proto::connect::ConnectParams;
use argent_proto::frames::{
    encode_error, encode_ok_raw, parse_request, with_raw_field, EncodedEvent,
};
use argent_proto::limits::MAX_PAYLOAD;
use argent_proto::session_key::SessionKey;
use argent_proto::version::Protocol;

use crate::auth::limiter::{Claimant, PendingSlot};
use crate::client_address::{ForwardingHeaders, TrustedProxies};
use crate::context::Ctx;
use crate::hub::ConnHandle;
use crate::methods::presence::{presence_entry, presence_json, set_present};
use crate::node_commands;
use crate::router::{self, Responder};
use crate::ws::handshake::{self, Accepted, Policy};
use crate::ws::limit::{LimitedStream, PreauthGate};
use crate::ws::outbox::Outbox;
use crate::ws::pairing;
use crate::ws::session::{Session, Upgrade};

/// Upstream's canvas host path is not a gateway socket.
const CANVAS_PATH: &str = "/__argent__/ws";

/// `hello-ok.features` of each protocol version (index: `Protocol as usize`), encoded once.
static FEATURES: LazyLock<[String; 2]> = LazyLock::new(|| {
    [Protocol::V3, Protocol::V4].map(|p| {
        let mut features = json!({"methods": p.method_names(), "events": p.event_names()});
        if let Some(capabilities) = p.server_capabilities() {
            features["capabilities"] = capabilities;
        }
        features.to_string()
    })
});

type Socket = WebSocketStream<LimitedStream>;

/// Counts the connection in the gauge for as long as it lives.
struct Counted(Arc<Ctx>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
    }
}

fn socket_config() -> WebSocketConfig {
    // Small buffers: most connections are idle most of the time (benchmarked).
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_PAYLOAD * 3)
        .max_message_size(Some(MAX_PAYLOAD))
        .max_frame_size(Some(MAX_PAYLOAD))
}

/// A read buffer that grew past this for a message is replaced by a new one (of
/// `socket_config`'s 1 KiB) once nothing unread is left in it: memory per connection must
/// not depend on the largest message the connection ever received.
const RENEW_READ_BUFFER_ABOVE: u64 = 16 * 1024;

/// The same socket under a new WebSocket reader state. Only when the library holds nothing
/// unread and no message in progress (`LimitedStream::message_returned`): its buffer keeps
/// the capacity of the largest frame it read, and it offers no way to shrink it.
async fn with_fresh_read_buffer(stream: Socket) -> Socket {
    use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
    WebSocketStream::from_raw_socket(stream.into_inner(), WsRole::Server, Some(socket_config()))
        .await
}

/// Serves one accepted TCP connection.
pub async fn serve(ctx: Arc<Ctx>, tcp: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
    let _permit = permit;
    // One address may hold only so many sockets that have not authenticated yet: counted
    // from the first byte, for page requests too (they never authenticate).
    // A trusted proxy carries everyone's sockets: its clients are counted one by one once
    // their forwarded address is known (after the upgrade request).
    let trusted = ctx.trusted_proxies();
    let pending_slot = if trusted.trusts(peer.ip()) {
        None
    } else {
        match ctx.auth_limiter.pending_slot(peer.ip()) {
            Some(slot) => Some(slot),
            None => {
                too_many_pending(&ctx);
                // Logged as a periodic summary by the limiter, not here.
                return refuse_busy(tcp).await;
            }
        }
    };
    // The port also serves the Control UI's pages to browsers.
    match Box::pin(sniff(&tcp, ctx.limits.handshake_timeout)).await {
        Asks::WebSocket => {}
        Asks::Page => {
            let _pending_slot = pending_slot;
            // Boxed, like the handshake: a page request's state must not size every
            // WebSocket connection's task.
            return Box::pin(crate::control_ui::serve(ctx, tcp)).await;
        }
        Asks::Nothing => return,
    }
    ctx.metrics.connections.inc();
    let _counted = Counted(ctx.clone());
    let _ = tcp.set_nodelay(true);
    let conn_id = uuid::Uuid::new_v4().to_string();
    // Debug level: an info span would keep its formatted fields in memory for the
    // connection's whole life; info-level lines below carry the ids instead.
    let span = tracing::debug_span!("connection", conn = %conn_id, %peer);
    async move {
        // The handshake's state is large and short-lived: boxed, so that an idle connection
        // keeps only the small state of `established` (RSS per connection is benchmarked).
        let Some(joined) = Box::pin(handshake_phase(
            ctx.clone(),
            tcp,
            peer,
            conn_id,
            (pending_slot, trusted),
        ))
        .await
        else {
            return;
        };
        established(ctx, joined).await;
    }
    .instrument(span)
    .await;
}

fn too_many_pending(ctx: &Ctx) {
    ctx.metrics
        .handshakes
        .get_or_create(&vec![("outcome", "too_many_pending")])
        .inc();
}

/// Answers a socket the gateway will not serve now with HTTP 503 and `Retry-After`, then
/// closes it after the client's request was read (see [`crate::ws::linger`]).
async fn refuse_busy(mut tcp: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = "too many pending handshakes from this address; retry shortly\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let written = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        tcp.write_all(response.as_bytes()),
    )
    .await;
    if matches!(written, Ok(Ok(()))) {
        // Until the client's FIN (or quiet): an HTTP client sends nothing else.
        crate::ws::linger::drain(&tcp, |_| false).await;
    }
}

/// What an accepted socket's first bytes ask for.
enum Asks {
    WebSocket,
    /// A plain HTTP request: a page of the Control UI.
    Page,
    /// Nothing (closed, or silent past the handshake timeout).
    Nothing,
}

/// Reads the request head without consuming it: a WebSocket upgrade goes on to the
/// handshake with every byte still there; anything else is plain HTTP. A head that does not
/// end within the handshake timeout is dropped; one larger than the peek buffer is judged
/// by the lines it shows (a browser's cookies can make a page request long).
async fn sniff(tcp: &TcpStream, within: std::time::Duration) -> Asks {
    // An upgrade request is a few hundred bytes: peek into 1 KiB first, and into 8 KiB
    // only when a head is longer (a page request with cookies). On the heap, and only while
    // sniffing: the connection's task stays small after.
    const FIRST_PEEK: usize = 1 << 10;
    const MAX_PEEK: usize = 8 << 10;
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; FIRST_PEEK];
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Asks::Nothing,
        };
        let head = &buf[..n];
        let complete = head.windows(4).any(|w| w == b"\r\n\r\n");
        if !complete && n == buf.len() && buf.len() < MAX_PEEK {
            buf.resize(MAX_PEEK, 0);
            continue;
        }
        if complete || n == buf.len() {
            let upgrade = head.split(|b| *b == b'\n').any(|line| {
                line.len() > 8
                    && line[..8].eq_ignore_ascii_case(b"upgrade:")
                    && line
                        .windows(9)
                        .any(|w| w.eq_ignore_ascii_case(b"websocket"))
            });
            return if upgrade { Asks::WebSocket } else { Asks::Page };
        }
        // The rest of the head is on its way (peek answers at once with what has arrived,
        // so wait, longer each time), unless the time is up: a client that sends part of a
        // head and stalls must not hold its slot.
        if Instant::now() + pause >= deadline {
            return Asks::Nothing;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}

/// A socket whose `connect` succeeded.
struct Joined {
    socket: Socket,
    accepted: Accepted,
    upgrade: Upgrade,
    /// `hello-ok.auth`, when a device token was issued or confirmed.
    auth: Option<Value>,
}

// The upgrade callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn handshake_phase(
    ctx: Arc<Ctx>,
    tcp: TcpStream,
    peer: SocketAddr,
    conn_id: String,
    // The pending slot is held until the handshake ends either way (none yet for a
    // trusted proxy's socket).
    (mut pending_slot, trusted): (Option<PendingSlot>, Arc<TrustedProxies>),
) -> Option<Box<Joined>> {
    let deadline = Instant::now() + ctx.limits.handshake_timeout;
    let gate = PreauthGate::new();
    let mut upgrade = Upgrade::default();
    let mut forwarding = ForwardingHeaders::default();
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == CANVAS_PATH {
            let mut reject = ErrorResponse::new(Some("not a gateway socket".into()));
            *reject.status_mut() = http::StatusCode::NOT_FOUND;
            return Err(reject);
        }
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        upgrade.host = header("host");
        upgrade.origin = header("origin");
        upgrade.user_agent = header("user-agent");
        forwarding = ForwardingHeaders {
            forwarded: header("forwarded"),
            x_forwarded_for: header("x-forwarded-for"),
            x_real_ip: header("x-real-ip"),
        };
        // Forwarding headers from a peer that is not a trusted proxy make a connection
        // remote (§2.6); a trusted proxy's client is judged by its own address below.
        upgrade.forwarded = !trusted.trusts(peer.ip())
            && (forwarding.any() || req.headers().contains_key("x-forwarded-host"));
        Ok(resp)
    };
    let stream = LimitedStream::new(tcp, gate.clone());
    let tcp = stream.tcp();
    let accept =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(socket_config()));
    let mut socket = match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(err)) => {
            tracing::debug!(%err, "upgrade failed");
            // The refusal's HTTP response was held back with the rest.
            let _ = tokio::time::timeout_at(deadline, gate.uncork(&tcp)).await;
            return None;
        }
        Err(_) => return None,
    };

    // Behind a trusted proxy: the client's own address, for limits, logs, presence and the
    // local rule.
    let peer = SocketAddr::new(trusted.client(peer.ip(), &forwarding), peer.port());

    let nonce = uuid::Uuid::new_v4().to_string();
    let challenge = EncodedEvent::from_value(
        "connect.challenge",
        // `capabilities`: pre-auth server capabilities for v4 clients (none implemented);
        // v3 clients ignore the extra key (PROTOCOL-v4.md §3.1).
        &json!({"nonce": nonce, "ts": argent_proto::now_ms(), "capabilities": []}),
        None,
    );
    if socket
        .send(Message::text(challenge.frame(None)))
        .await
        .is_err()
    {
        return None;
    }
    // The upgrade response and the challenge leave together.
    match tokio::time::timeout_at(deadline, gate.uncork(&tcp)).await {
        Ok(Ok(())) => drop(tcp),
        _ => return None,
    }
    if pending_slot.is_none() {
        pending_slot = ctx.auth_limiter.pending_slot(peer.ip());
        if pending_slot.is_none() {
            too_many_pending(&ctx);
            close(
                &mut socket,
                1013,
                "too many pending handshakes; retry shortly",
            )
            .await;
            return None;
        }
    }

    let first = match tokio::time::timeout_at(deadline, first_text(&mut socket)).await {
        Err(_) => {
            ctx.metrics
                .handshakes
                .get_or_create(&vec![("outcome", "timeout")])
                .inc();
            close(&mut socket, 1000, "").await;
            return None;
        }
        Ok(FirstFrame::Text(text)) => text,
        Ok(FirstFrame::TooLarge) => {
            ctx.metrics
                .handshakes
                .get_or_create(&vec![("outcome", "too_large")])
                .inc();
            close(&mut socket, 1009, "message too big").await;
            return None;
        }
        Ok(FirstFrame::Violation(code, reason)) => {
            close(&mut socket, code, reason).await;
            return None;
        }
        Ok(FirstFrame::Gone) => return None,
    };

    // Re-read (when changed) at every handshake: a rotated token applies at once.
    let config = ctx.config();
    ctx.refresh_trusted_proxies(&config);
    if ctx.nats.is_none() {
        ctx.shared_config.publish_local(&config).await;
    }
    let secrets = ctx.secrets_in(&config);
    let policy = Policy {
        secrets: &secrets,
        config: &config.document,
    };
    // Every handshake is evaluated, whatever failed before from its address: a valid
    // credential is never refused by the failed-login limiter (see `auth::limiter`).
    let verdict = handshake::evaluate(&policy, &conn_id, &upgrade, peer, &nonce, &first);
    let verdict = match verdict {
        Ok(accepted) => match pairing::complete(&ctx, &accepted).await {
            Ok(auth) => Ok((accepted, auth)),
            Err(rejection) => Err(rejection),
        },
        Err(rejection) => Err(rejection),
    };
    let (accepted, auth) = match verdict {
        Ok(done) => done,
        Err(mut rejection) => {
            if rejection.is_auth_failure() {
                let claimants = failure_claimants(peer, &first);
                if let Some(refusal) = ctx.auth_limiter.record_failure(&claimants) {
                    // Past the budget: refused as rate-limited, and slowly.
                    tokio::time::sleep(refusal.tarpit).await;
                    *rejection = handshake::Rejection::refuse(
                        &first,
                        refusal.error,
                        crate::auth::rate_limited_error,
                    );
                }
            }
            ctx.metrics
                .handshakes
                .get_or_create(&vec![("outcome", "rejected")])
                .inc();
            tracing::info!(reason = rejection.label(), "handshake rejected");
            if let Some((id, error)) = &rejection.response {
                let _ = socket.send(Message::text(encode_error(id, error))).await;
            }
            close(&mut socket, rejection.close_code, &rejection.close_reason).await;
            return None;
        }
    };
    ctx.auth_limiter
        .record_success(accepted.session.device_id.as_deref());
    ctx.metrics
        .handshakes
        .get_or_create(&vec![("outcome", "ok")])
        .inc();
    // Boxed: the socket and the connect params must not sit inline in the connection's
    // long-lived state.
    Some(Box::new(Joined {
        socket,
        accepted,
        upgrade,
        auth,
    }))
}

/// Whom a failed authentication counts against: the address, and the device the
/// `connect` claimed to be (read leniently: the frame may be malformed).
fn failure_claimants(peer: SocketAddr, first: &str) -> Vec<Claimant> {
    let mut claimants = vec![Claimant::Address(peer.ip())];
    let device = serde_json::from_str::<Value>(first).ok().and_then(|frame| {
        frame["params"]["device"]["id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.len() <= 256)
            .map(str::to_string)
    });
    if let Some(device) = device {
        claimants.push(Claimant::Device(device));
    }
    claimants
}

enum FirstFrame {
    Text(String),
    TooLarge,
    /// A protocol violation (RFC 6455 §7.4.1): its close code and reason.
    Violation(u16, &'static str),
    Gone,
}

const NOT_UTF8: FirstFrame = FirstFrame::Violation(1007, "invalid UTF-8");

async fn first_text(socket: &mut Socket) -> FirstFrame {
    loop {
        let message = socket.next().await;
        if let Some(Ok(Message::Text(_) | Message::Binary(_))) = &message {
            // Counted (`LimitedStream::message_returned`); at most 64 KiB: no renewal.
            socket.get_mut().message_returned(u64::MAX);
        }
        return match message {
            Some(Ok(Message::Text(text))) => FirstFrame::Text(text.to_string()),
            // Upstream decodes binary frames as UTF-8 text.
            Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => FirstFrame::Text(text),
                Err(_) => NOT_UTF8,
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(_))) | None => FirstFrame::Gone,
            Some(Err(WsError::Capacity(_))) => FirstFrame::TooLarge,
            Some(Err(WsError::Io(_))) if socket.get_ref().gate_exceeded() => FirstFrame::TooLarge,
            Some(Err(WsError::Protocol(_))) => FirstFrame::Violation(1002, "protocol error"),
            Some(Err(WsError::Utf8(_))) => NOT_UTF8,
            Some(Err(_)) => FirstFrame::Gone,
        };
    }
}

async fn close(socket: &mut Socket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let sent = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let _ = socket.send(Message::Close(Some(frame))).await;
        socket.close(None).await
    })
    .await;
    if matches!(sent, Ok(Ok(()))) {
        socket.get_mut().linger().await;
    }
}

/// The node session other gateways see (`node.list`, routing of `node.invoke`). The node
/// id is the proven device id, else `client.id` (§3.5).
fn node_session(ctx: &Ctx, session: &Session, params: &ConnectParams) -> Value {
    let client = &session.client;
    let mut node = json!({
        "nodeId": session.device_id.clone().unwrap_or_else(|| client.id.clone()),
        "gatewayId": ctx.gateway_id, "connId": session.conn_id,
        "platform": client.platform, "version": client.version,
        "remoteIp": session.peer.ip().to_string(),
        "caps": session.caps, "commands": session.commands,
        "permissions": params.permissions,
        "connectedAtMs": argent_proto::now_ms(),
    });
    set_present(
        &mut node,
        [
            ("displayName", &client.display_name),
            ("deviceFamily", &client.device_family),
            ("modelIdentifier", &client.model_identifier),
            ("pathEnv", &params.path_env),
        ],
    );
    node
}

/// The `hello-ok` payload as JSON text. The large parts (features, the presence list, the
/// health summary) are encoded once and shared by every connection; only the few fields of
/// this connection are serialized here.
fn hello_ok(ctx: &Ctx, session: &Session, auth: Option<Value>) -> String {
    let config = ctx.shared_config.get();
    let agents = config.agents();
    let protocol = session.protocol;
    // The shared parts first: the state versions read after them are never older than
    // what they show.
    let presence = presence_json(ctx);
    let health = ctx.health.snapshot_json();
    let snapshot = json!({
            "stateVersion": {"presence": ctx.presence.version(), "health": ctx.health.version()},
            "uptimeMs": ctx.uptime_ms(),
            "configPath": ctx.config_file.path().display().to_string(),
            "stateDir": ctx.state_dir.display().to_string(),
            "sessionDefaults": {
                "defaultAgentId": agents.default_id,
                "mainKey": agents.main_key,
                "mainSessionKey": SessionKey::main_of(&agents.default_id, agents).into_string(),
                "scope": agents.scope,
            },
    });
    let snapshot = with_raw_field(snapshot.to_string(), "presence", &presence);
    let snapshot = with_raw_field(snapshot, "health", &health);
    let mut hello = json!({
        "type": "hello-ok",
        "protocol": protocol.number(),
        "server": {"version": ctx.version, "host": ctx.host, "connId": session.conn_id},
        "policy": {
            "maxPayload": ctx.max_payload(),
            "maxBufferedBytes": ctx.limits.max_buffered_bytes,
            "tickIntervalMs": ctx.tick_interval().as_millis() as u64,
        },
    });
    if let Some(auth) = auth {
        // [EXT] A paired node also learns the credential gateways will present to its gRPC
        // endpoint (derived from the cluster secret for its id alone; ADR 6).
        if let (Role::Node, Some(node_id), Some(secret)) =
            (session.role, &session.device_id, ctx.secrets().token)
        {
            hello["cluster"] = json!({"nodeCallSecret": node_call_secret(&secret, node_id)});
        }
        hello["auth"] = auth;
    } else if protocol.always_sends_hello_auth() {
        // v4: the enforced role and scopes, always (PROTOCOL-v4.md §6).
        hello["auth"] = json!({"role": session.role.as_str(), "scopes": session.scopes});
    }
    let hello = with_raw_field(hello.to_string(), "features", &FEATURES[protocol as usize]);
    with_raw_field(hello, "snapshot", &snapshot)
}

/// What a live connection keeps for its whole life. Everything else the handshake and the
/// join used is dropped before the request loop starts (RSS per idle connection is
/// benchmarked: the loop's state is all an idle connection costs besides its socket).
struct Live {
    stream: Socket,
    tcp: Arc<TcpStream>,
    session: Arc<Session>,
    outbox: Arc<Outbox>,
    hub_key: u64,
}

async fn established(ctx: Arc<Ctx>, joined: Box<Joined>) {
    // Boxed: the join's temporaries (connect params, the presence record, hello-ok) must
    // not become part of the long-lived loop's state.
    let live = Box::pin(join(&ctx, joined)).await;
    // Boxed too: awaited inline, the loop's state was stored again in every enclosing
    // future (the connection's task was 8 KB; now the task is under 0.5 KB and the loop's
    // state about 1.9 KB).
    Box::pin(serve_requests(ctx, live)).await;
}

/// Registers the connection (presence, the hub), queues `hello-ok` and the welcome
/// `health` event.
async fn join(ctx: &Arc<Ctx>, joined: Box<Joined>) -> Live {
    let Joined {
        socket,
        accepted,
        upgrade,
        auth,
    } = *joined;
    let Accepted {
        request_id,
        mut session,
        params,
        ..
    } = accepted;
    // §3.5: a node keeps only the declared commands its platform's allowlist permits.
    if session.role == Role::Node {
        let platform = if session.client.platform.is_empty() {
            session.client.device_family.clone().unwrap_or_default()
        } else {
            session.client.platform.clone()
        };
        session.commands =
            node_commands::allowed(&session.commands, &platform, &ctx.config().document);
    }
    let session = Arc::new(session);
    // The reader keeps the WebSocket library's stream; the writer writes frames to the
    // socket itself (`ws::wire`).
    let tcp = socket.get_ref().tcp();
    let node = (session.role == Role::Node).then(|| node_session(ctx, &session, &params));
    drop(params);
    let presence = session
        .protocol
        .tracks_presence(&session.client.mode)
        .then(|| presence_entry(&session, upgrade.user_agent.as_deref()));
    drop(upgrade);
    tracing::info!(conn = %session.conn_id, peer = %session.peer, role = session.role.as_str(), client = %session.client.id, mode = %session.client.mode, "connected");

    if let Some((key, entry)) = presence {
        ctx.presence.add(&session.conn_id, key, entry, node).await;
    }
    let outbox = Arc::new(Outbox::new(
        ctx.limits.max_buffered_bytes,
        ctx.metrics.clone(),
    ));
    socket.get_ref().divert_writes(outbox.clone());
    // hello-ok is the first frame after the challenge; events may follow it.
    outbox.push_text(encode_ok_raw(&request_id, &hello_ok(ctx, &session, auth)));
    let handle = Arc::new(ConnHandle::new(
        session.conn_id.clone(),
        session.role,
        session.protocol,
        session.subscriptions.clone(),
        &session.scopes,
        session.device_id.clone(),
        outbox.clone(),
    ));
    let hub_key = ctx.hub.register(handle);
    // Nodes get only targeted events, `tick` and `shutdown` (§3.5).
    if session.role != Role::Node {
        outbox.push_event(&ctx.health.welcome(), true);
    }
    Live {
        stream: socket,
        tcp,
        session,
        outbox,
        hub_key,
    }
}

/// The request loop, with the writer beside it, until either side ends; then unregisters.
async fn serve_requests(ctx: Arc<Ctx>, live: Live) {
    let Live {
        mut stream,
        tcp,
        session,
        outbox,
        hub_key,
    } = live;
    // The writer runs in this task beside the reader (one task per connection): every wait
    // of this loop is a `select!` that also drives the writer, so it never waits for the
    // reader.
    let writer = outbox.run_writer(&tcp);
    tokio::pin!(writer);
    let in_flight = Arc::new(Semaphore::new(ctx.limits.requests_per_connection));
    let extra_keys = session.protocol.extra_request_keys();
    let mut writer_done = false;
    // The peer closed before the gateway did (its close frame).
    let mut peer_ended = false;

    loop {
        // Backpressure: past the in-flight bound this socket is not read until a request
        // finishes (the writer keeps writing meanwhile).
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => permit.expect("never closed"),
            _ = &mut writer => { writer_done = true; break; }
        };
        let message = tokio::select! {
            message = stream.next() => message,
            _ = &mut writer => { writer_done = true; break; }
        };
        if matches!(&message, Some(Ok(Message::Text(_) | Message::Binary(_))))
            && stream.get_mut().message_returned(RENEW_READ_BUFFER_ABOVE)
        {
            stream = with_fresh_read_buffer(stream).await;
        }
        let parsed = match &message {
            Some(Ok(Message::Text(text))) => parse_request(text.as_str(), extra_keys),
            // Upstream decodes binary frames as UTF-8 text.
            Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(bytes) {
                Ok(text) => parse_request(text, extra_keys),
                Err(_) => {
                    let err = argent_proto::errors::RpcError::invalid_frame(
                        "binary frame is not UTF-8 text",
                    );
                    outbox.push_text(encode_error("invalid", &err));
                    continue;
                }
            },
            Some(Ok(Message::Close(_))) => {
                peer_ended = true;
                break;
            }
            // The library also ends its stream after an error of its own: not the peer's end.
            None => break,
            Some(Ok(_)) => continue,
            Some(Err(WsError::Capacity(err))) => {
                tracing::info!(%err, "frame too large");
                outbox.close_now(1009, "message too big");
                continue;
            }
            // RFC 6455 §7.4.1: a protocol violation closes with 1002, text that is not
            // UTF-8 with 1007 (the client is told why instead of losing the socket).
            Some(Err(WsError::Protocol(err))) => {
                tracing::info!(%err, "WebSocket protocol violation");
                outbox.close_now(1002, "protocol error");
                continue;
            }
            Some(Err(WsError::Utf8(_))) => {
                tracing::info!("text frame is not UTF-8");
                outbox.close_now(1007, "invalid UTF-8");
                continue;
            }
            Some(Err(err)) => {
                tracing::debug!(%err, "socket error");
                break;
            }
        };
        drop(message);
        let request = match parsed {
            Ok(request) => request,
            Err(err) => {
                outbox.push_text(encode_error(err.reply_id(), &err.to_error()));
                continue;
            }
        };
        let ctx = ctx.clone();
        let session = session.clone();
        let outbox = outbox.clone();
        tokio::spawn(
            async move {
                let responder: Arc<dyn Responder> = outbox.clone();
                let response = router::handle(&ctx, &session, request, &responder).await;
                outbox.push_text(response);
                drop(permit);
            }
            .in_current_span(),
        );
    }

    ctx.hub.unregister(hub_key);
    if session.role == Role::Node {
        ctx.node_invokes.node_disconnected(&session.conn_id);
        ctx.node_subscriptions.forget(&session.conn_id);
    }
    // Also for connections not tracked at connect: a `system-event` may have given them an
    // entry (a connection without one costs nothing here). Marked closed first: a report
    // still in flight then removes what it writes (`Presence::report`).
    session
        .closed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    Box::pin(ctx.presence.remove(&session.conn_id)).await;
    if !writer_done {
        outbox.close(1000, "");
        let _ = Box::pin(tokio::time::timeout(
            std::time::Duration::from_secs(2),
            &mut writer,
        ))
        .await;
    }
    if !peer_ended {
        // The gateway closed first (too big, protocol error, slow consumer, shutdown, or
        // the library gave up reading): the peer may still be sending, and closing on
        // unread input would reset the socket before the peer reads the close frame.
        // Boxed: a rare path.
        Box::pin(stream.get_mut().linger()).await;
    }
    tracing::info!(conn = %session.conn_id, "disconnected");
}

/// The router's later answers (`agent`'s final result) go to the connection's outbox.
impl Responder for Outbox {
    fn send_later(&self, frame: String) {
        // A full outbox closes the slow connection (§1.7); the answer is then moot.
        let _ = self.push_text(frame);
    }

    fn is_closed(&self) -> bool {
        Outbox::is_closed(self)
    }
}
