//! Request dispatch: authorization (§3.3) on every request, then the catalog decides —
//! answered here, forwarded to a node-agent, or not built yet.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::Instrument;

use argent_proto::catalog::{self, Answer, Placement};
use argent_proto::errors::RpcError;
use argent_proto::frames::{encode_error, encode_ok, encode_ok_raw, encode_response, Request};
use argent_proto::version::Protocol;

use crate::context::Ctx;
use crate::forward::{self, call_timeout, NodeCall};
use crate::methods;
use crate::ws::session::Session;

/// Where a later answer to a request goes (the final result of `agent`, §1.4): the
/// connection's outbox, which the router sees only through this.
pub trait Responder: Send + Sync {
    /// Queues a whole response frame for the client.
    fn send_later(&self, frame: String);
    /// The client has gone: nobody is waiting for a later answer.
    fn is_closed(&self) -> bool;
}

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
            let answer = forward::forward(ctx, session, &call, node_params, timeout).await?;
            methods::cron_page::page(&params, &answer).map(Reply::Value)
        }
        Answer::Once | Answer::PagedOnV4 => forward::forward(ctx, session, &call, params, timeout)
            .await
            .map(Reply::Json),
    }
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
    let ack_json = forward::forward(ctx, session, &call, params, timeout).await?;
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
        let answer = forward::forward(ctx, session, &call, asked.clone(), timeout).await;
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
