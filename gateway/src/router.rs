//! Request dispatch: authorization (§3.3) on every request, then the catalog decides —
//! answered here, forwarded to a node-agent, or not built yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tracing::Instrument;

use argent_planes::calls::{Call, CallError, NodeClient};
use argent_proto::catalog::{self, Answer, Forward, MethodSpec, Placement};
use argent_proto::errors::RpcError;
use argent_proto::frames::{encode_error, encode_ok, encode_ok_raw, encode_response, Request};
use argent_proto::grpc::Caller;
use argent_proto::version::Protocol;

use crate::context::Ctx;
use crate::methods;
use crate::respond;
use crate::select;
use crate::ws::session::Session;

/// Where a later answer to a request goes (the final result of `agent`, §1.4): the
/// connection's outbox, which the router sees only through this.
pub trait Responder: Send + Sync {
    /// Queues a whole response frame for the client.
    fn send_later(&self, frame: String);
    /// The client has gone: nobody is waiting for a later answer.
    fn is_closed(&self) -> bool;
}

/// How many nodes an idempotent call may try before giving up.
const MAX_ATTEMPTS: usize = 3;

/// Handles one request and returns the encoded response frame. A method that answers twice
/// (`agent`) returns its first answer; a task sends the second through `responder` later.
pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    request: Request,
    responder: &Arc<dyn Responder>,
) -> String {
    let span = tracing::info_span!("request", method = %request.method, id = %request.id, conn = %session.conn_id);
    let method_label = catalog::lookup(&request.method)
        .map(|m| m.name)
        .unwrap_or("unknown");
    let result = route(ctx, session, &request, responder)
        .instrument(span)
        .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(err) => err.code.as_str(),
    };
    ctx.metrics
        .requests
        .get_or_create(&vec![("method", method_label), ("outcome", outcome)])
        .inc();
    if let Err(err) = &result {
        tracing::debug!(method = %request.method, error = %err, "request failed");
    }
    encode_reply(&request.id, result)
}

fn encode_reply(id: &str, result: Result<Reply, RpcError>) -> String {
    match result {
        Ok(Reply::Value(payload)) => encode_ok(id, &payload),
        Ok(Reply::Json(payload)) => encode_ok_raw(id, &payload),
        Ok(Reply::Frame(frame)) => frame,
        Err(err) => encode_error(id, &err),
    }
}

/// A successful result: built here, JSON text passed through from a node-agent, or a whole
/// frame (the `ok:false` final answer of `agent`, which also carries a payload).
enum Reply {
    Value(Value),
    Json(String),
    Frame(String),
}

async fn route(
    ctx: &Arc<Ctx>,
    session: &Session,
    request: &Request,
    responder: &Arc<dyn Responder>,
) -> Result<Reply, RpcError> {
    session
        .protocol
        .authorize(session.role, &session.scopes, &request.method)?;
    if request.method == "connect" {
        return Err(RpcError::invalid_request(
            "connect is only valid as the first request",
        ));
    }
    let Some(spec) =
        catalog::lookup(&request.method).filter(|spec| session.protocol.knows_method(spec.name))
    else {
        return Err(RpcError::unknown_method(&request.method));
    };
    let params = request.params_or_empty();
    session
        .protocol
        .authorize_params(&session.scopes, spec.name, &params)?;
    let params = session.protocol.lenient_params(spec.name, params);
    let forward = match spec.placement {
        Placement::Gateway(method) => {
            return methods::call(ctx, session, spec.name, method, params)
                .await
                .map(Reply::Value)
        }
        Placement::Planned => return Err(RpcError::not_implemented(spec.name)),
        Placement::Node(_, forward) => forward,
    };
    let timeout = call_timeout(ctx, spec, &params);
    let call = NodeCall {
        request_id: &request.id,
        spec,
        forward,
    };
    match spec.answer {
        Answer::AckThenFinal => agent(ctx, session, call, params, timeout, responder).await,
        // v4 `cron.list` is paged here, over the node's whole list (PROTOCOL-v4.md §9).
        Answer::PagedOnV4 if session.protocol == Protocol::V4 => {
            let node_params = methods::cron_page::node_params(&params);
            let answer = self::forward(ctx, session, &call, node_params, timeout).await?;
            methods::cron_page::page(&params, &answer).map(Reply::Value)
        }
        Answer::Once | Answer::PagedOnV4 => self::forward(ctx, session, &call, params, timeout)
            .await
            .map(Reply::Json),
    }
}

/// One forwarded call: which method, routed how, for which request.
#[derive(Clone, Copy)]
struct NodeCall<'a> {
    request_id: &'a str,
    spec: &'static MethodSpec,
    forward: Forward,
}

fn caller(ctx: &Ctx, session: &Session) -> Caller {
    Caller {
        conn_id: session.conn_id.clone(),
        role: session.role.as_str().to_string(),
        scopes: session.scopes.clone(),
        client_id: session.client.id.clone(),
        client_mode: session.client.mode.clone(),
        client_version: session.client.version.clone(),
        platform: session.client.platform.clone(),
        device_id: session.device_id.clone().unwrap_or_default(),
        gateway_id: ctx.gateway_id.clone(),
        caps: session.caps.clone(),
        display_name: session.client.display_name.clone().unwrap_or_default(),
        protocol: session.protocol.number() as u32,
    }
}

/// How long the gateway waits for a node's answer: the configured call timeout, or longer
/// for a method that itself waits or takes long (the catalog's timeout rule).
fn call_timeout(ctx: &Ctx, spec: &MethodSpec, params: &Value) -> Duration {
    let asked = spec.timeout.asked_ms(params);
    ctx.limits
        .call_timeout
        .max(Duration::from_millis(asked) + Duration::from_secs(5))
}

/// `agent` answers twice (§1.4, §5.2): the ack at once, then the final result when the run
/// ends. The final result is asked for from any node (the run record is shared), again and
/// again until the run ends, so neither a node nor this call's node dying loses it; a task
/// that holds none of the connection's request slots waits for it.
async fn agent(
    ctx: &Arc<Ctx>,
    session: &Session,
    call: NodeCall<'_>,
    params: Value,
    timeout: Duration,
    responder: &Arc<dyn Responder>,
) -> Result<Reply, RpcError> {
    let ack_json = self::forward(ctx, session, &call, params, timeout).await?;
    let ack: Value = serde_json::from_str(&ack_json)
        .map_err(|e| RpcError::unavailable(format!("unreadable agent answer: {e}")))?;
    if ack["status"] != "accepted" {
        // Steering answers, or the cached final result of a repeated key: one frame.
        return Ok(agent_final(call.request_id, ack));
    }
    let (ctx, session, responder) = (ctx.clone(), session.clone(), responder.clone());
    let (id, run_id) = (call.request_id.to_string(), ack["runId"].clone());
    tokio::spawn(
        async move {
            let result = agent_result(&ctx, &session, &id, run_id, responder.as_ref()).await;
            responder.send_later(encode_reply(&id, result));
        }
        .in_current_span(),
    );
    Ok(Reply::Json(ack_json))
}

/// Polls `agent.result` until the run has ended (or the client has gone).
async fn agent_result(
    ctx: &Ctx,
    session: &Session,
    request_id: &str,
    run_id: Value,
    responder: &dyn Responder,
) -> Result<Reply, RpcError> {
    let spec = &catalog::AGENT_RESULT_METHOD;
    let call = NodeCall {
        request_id,
        spec,
        forward: catalog::AGENT_RESULT_FORWARD,
    };
    let asked = json!({ "runId": run_id });
    let timeout = call_timeout(ctx, spec, &asked);
    loop {
        let answer = self::forward(ctx, session, &call, asked.clone(), timeout).await;
        match answer {
            Ok(text) => {
                let value: Value = serde_json::from_str(&text)
                    .map_err(|e| RpcError::unavailable(format!("unreadable agent result: {e}")))?;
                if value["status"] != "pending" {
                    return Ok(agent_final(request_id, value));
                }
            }
            Err(err) if err.retryable == Some(true) => {
                tracing::debug!(error = %err, "agent result not available yet; asking again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err),
        }
        if responder.is_closed() {
            return Err(RpcError::unavailable("connection closed"));
        }
    }
}

/// The final `agent` frame: `ok:false` with both `error` and `payload` when the run failed.
fn agent_final(request_id: &str, payload: Value) -> Reply {
    if payload["status"] != "error" {
        return Reply::Value(payload);
    }
    let message = payload["summary"]
        .as_str()
        .unwrap_or("agent run failed")
        .to_string();
    let error = RpcError::unavailable(message).to_shape();
    Reply::Frame(encode_response(
        request_id,
        false,
        Some(&payload),
        Some(&error),
    ))
}

/// Sends a method to the best live node for its routing key. A call moves on to the next
/// node when the connection could not be opened, an idempotent one also when the node
/// died mid-call.
async fn forward(
    ctx: &Ctx,
    session: &Session,
    call: &NodeCall<'_>,
    params: Value,
    timeout: Duration,
) -> Result<String, RpcError> {
    let (request_id, method, forward) = (call.request_id, call.spec.name, call.forward);
    let key = forward
        .route_param
        .and_then(|p| params.get(p))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| request_id.to_string());
    // Nodes that joined by pairing take calls only while their pairing is valid.
    let mut nodes = ctx.nodes.live();
    {
        let valid = ctx.paired_nodes.read();
        nodes.retain(|n| !n.paired || valid.contains(&n.id));
    }
    let ranked = select::rank(&nodes, forward.capability, &key);
    if ranked.is_empty() {
        // The registry is read through NATS: while it is away, every node looks gone.
        if !ctx.health.nats_connected() {
            return Err(respond::nats_unreachable(method));
        }
        return Err(respond::no_node(forward.capability, method));
    }
    let call = Call {
        method: method.to_string(),
        params,
        caller: caller(ctx, session),
        timeout,
        request_id: request_id.to_string(),
    };
    let mut last_failure = String::new();
    for (attempt, node) in ranked.into_iter().take(MAX_ATTEMPTS).enumerate() {
        if attempt > 0 {
            ctx.metrics.forward_retries.inc();
        }
        let started = Instant::now();
        let span = tracing::info_span!("forward", node = %node.id, attempt);
        let outcome = ctx.node_clients.invoke(node, &call).instrument(span).await;
        ctx.metrics
            .forward_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(payload) => return Ok(payload),
            Err(CallError::Rpc(err)) => return Err(err),
            Err(CallError::Timeout(after)) => {
                return Err(respond::node_timeout(&node.id, method, after))
            }
            Err(failure) => {
                tracing::warn!(node = %node.id, why = %failure, method, "node-agent unreachable");
                ctx.nodes.suspect(&node.id);
                ctx.node_clients.forget(&node.address);
                last_failure = format!("node-agent {}: {failure}", node.id);
                // A call that was never sent may always move on; only idempotent ones may
                // be repeated after a node died mid-call.
                let never_sent = matches!(failure, CallError::NotConnected(_));
                if !forward.idempotent && !never_sent {
                    break;
                }
            }
        }
    }
    Err(respond::nodes_unreachable(method, &last_failure))
}
