//! Methods answered by the gateway itself, one module per family.

pub mod health;
pub mod presence;

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
        "status" => health::status(ctx, params),
        "system-presence" => presence::system_presence(ctx, session, params),
        other => Err(RpcError::unavailable(format!(
            "the gateway has no handler for {other}"
        ))),
    }
}
