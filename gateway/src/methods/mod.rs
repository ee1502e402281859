//! Methods answered by the gateway itself, one module per family.

pub mod approvals;
pub mod config;
pub mod cron_page;
pub mod devices;
pub mod diagnostics;
pub mod health;
pub mod live_nodes;
pub mod nodes;
pub mod presence;
pub mod subscriptions;

use serde_json::Value;

use argent_proto::errors::RpcError;

use crate::context::Ctx;
use crate::ws::session::Session;

/// Runs a gateway-local method (catalog placement `Gateway`).
pub async fn call(
    ctx: &Ctx,
    session: &Session,
    method: &str,
    params: Value,
) -> Result<Value, RpcError> {
    match method {
        "health" => health::health(ctx, params),
        "config.get" => config::get(ctx, session, params).await,
        "config.set" => config::set(ctx, params).await,
        "config.patch" => config::patch(ctx, params).await,
        "config.apply" => config::apply(ctx, params).await,
        "config.schema" => config::schema(ctx, params),
        "status" => health::status(ctx, params),
        "logs.tail" => diagnostics::logs_tail(ctx, params),
        "exec.approval.request" => approvals::request(ctx, params).await,
        "exec.approval.resolve" => approvals::resolve(ctx, session, params).await,
        "exec.approval.list" => approvals::list(ctx, params).await,
        "diagnostics.stability" => diagnostics::stability(ctx, params),
        "sessions.subscribe" => subscriptions::sessions(session, method, params, true),
        "sessions.unsubscribe" => subscriptions::sessions(session, method, params, false),
        "sessions.messages.subscribe" => {
            subscriptions::messages(ctx, session, method, params, true)
        }
        "sessions.messages.unsubscribe" => {
            subscriptions::messages(ctx, session, method, params, false)
        }
        "system-presence" => presence::system_presence(ctx, session, params),
        "device.pair.list" => devices::pair_list(ctx, params).await,
        "device.pair.approve" => devices::pair_approve(ctx, session, params).await,
        "device.pair.reject" => devices::pair_reject(ctx, params).await,
        "device.token.rotate" => devices::token_rotate(ctx, session, params).await,
        "device.token.revoke" => devices::token_revoke(ctx, params).await,
        "node.pair.request" => nodes::pair_request(ctx, params).await,
        "node.pair.list" => nodes::pair_list(ctx, params).await,
        "node.pair.approve" => nodes::pair_approve(ctx, params).await,
        "node.pair.reject" => nodes::pair_reject(ctx, params).await,
        "node.pair.verify" => nodes::pair_verify(ctx, params).await,
        "node.rename" => nodes::rename(ctx, params).await,
        "node.list" => live_nodes::list(ctx, params).await,
        "node.describe" => live_nodes::describe(ctx, params).await,
        "node.invoke" => live_nodes::invoke(ctx, params).await,
        "node.invoke.result" => live_nodes::invoke_result(ctx, session, params).await,
        "node.event" => live_nodes::node_event(ctx, session, params),
        "skills.bins" => live_nodes::skills_bins(params),
        other => Err(RpcError::unavailable(format!(
            "the gateway has no handler for {other}"
        ))),
    }
}
