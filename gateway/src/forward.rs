//! Forwarding a method call to a node-agent over gRPC: picking the nodes (capability,
//! routing key, pairing), the wait, retries on another node, and the caller identity the
//! node sees. The router forwards client requests through it; gateway methods that need a
//! node's work done (`system-event` queueing its text) call it too.

use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::Instrument;

use argent_planes::calls::{Call, CallError, NodeClient};
use argent_proto::catalog::{Forward, MethodSpec, Placement};
use argent_proto::errors::RpcError;
use argent_proto::grpc::Caller;

use crate::context::Ctx;
use crate::respond;
use crate::select;
use crate::ws::session::Session;

/// How many nodes an idempotent call may try before giving up.
const MAX_ATTEMPTS: usize = 3;

/// One forwarded call: which method, routed how, for which request.
#[derive(Clone, Copy)]
pub struct NodeCall<'a> {
    pub request_id: &'a str,
    pub spec: &'static MethodSpec,
    pub forward: Forward,
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
pub fn call_timeout(ctx: &Ctx, spec: &MethodSpec, params: &Value) -> Duration {
    let asked = spec.timeout.asked_ms(params);
    ctx.limits
        .call_timeout
        .max(Duration::from_millis(asked) + Duration::from_secs(5))
}

/// Sends a method to the best live node for its routing key. A call moves on to the next
/// node when the connection could not be opened, an idempotent one also when the node
/// died mid-call.
pub async fn forward(
    ctx: &Ctx,
    session: &Session,
    call: &NodeCall<'_>,
    params: Value,
    timeout: Duration,
) -> Result<String, RpcError> {
    forward_as(ctx, caller(ctx, session), call, params, timeout).await
}

/// [`forward`] on behalf of someone without a WebSocket session (a channel webhook).
pub async fn forward_as(
    ctx: &Ctx,
    caller: Caller,
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
        caller,
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

/// Runs a forwarded method of the catalog on a node on behalf of a gateway method;
/// `request_id` routes it when the method has no routing param (any unique id spreads
/// such calls over the nodes).
pub async fn call_method(
    ctx: &Ctx,
    session: &Session,
    request_id: &str,
    name: &str,
    params: Value,
) -> Result<String, RpcError> {
    let spec = argent_proto::catalog::lookup(name).ok_or_else(|| RpcError::unknown_method(name))?;
    let Placement::Node(_, forward) = spec.placement else {
        return Err(RpcError::unavailable(format!(
            "{name} is not a node-agent method"
        )));
    };
    let timeout = call_timeout(ctx, spec, &params);
    let call = NodeCall {
        request_id,
        spec,
        forward,
    };
    self::forward(ctx, session, &call, params, timeout).await
}

/// Runs a node-agent method for the gateway itself (a webhook it received, a status it
/// keeps): the caller is `who` on this gateway, with no client behind it.
pub async fn call_for_gateway(
    ctx: &Ctx,
    who: &str,
    spec: &'static MethodSpec,
    params: Value,
    timeout: Duration,
) -> Result<String, RpcError> {
    let Placement::Node(_, forward) = spec.placement else {
        return Err(RpcError::unavailable(format!(
            "{} is not a node-agent method",
            spec.name
        )));
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let caller = Caller {
        conn_id: format!("{who}-{request_id}"),
        role: who.to_string(),
        gateway_id: ctx.gateway_id.clone(),
        ..Default::default()
    };
    let call = NodeCall {
        request_id: &request_id,
        spec,
        forward,
    };
    forward_as(ctx, caller, &call, params, timeout).await
}
