//! Device pairing and device tokens (PROTOCOL.md §5.13): `device.pair.list|approve|reject`,
//! `device.token.rotate|revoke`. Decisions made on any gateway reach every gateway:
//! `device.pair.resolved` goes to pairing-scoped operators everywhere, and a device whose
//! token is revoked or rotated away (or whose request is rejected) is disconnected on every
//! gateway with 4001 `device removed`.

use serde_json::{json, Value};

use argent_planes::bus::BusEvent;
use argent_proto::errors::RpcError;
use argent_proto::params::Params;
use argent_proto::subjects::CONTROL_DEVICE_REMOVED;

use argent_proto::catalog::SCOPE_ADMIN;

use crate::auth::devices::{normalized, DeviceStore, PairedDevice, PendingRequest, TokenGrant};
use crate::context::Ctx;
use crate::ws::pairing::announce_resolved;
use crate::ws::session::Session;

fn store(ctx: &Ctx) -> DeviceStore {
    DeviceStore::new(ctx.state.clone())
}

/// A paired device as clients see it: token summaries, never token hashes (§5.13).
pub fn redacted(device: &PairedDevice) -> Value {
    let mut value = serde_json::to_value(device).expect("records serialize");
    let tokens: Vec<Value> = device
        .tokens
        .iter()
        .map(|(role, t)| {
            let mut summary =
                json!({"role": role, "scopes": t.scopes, "createdAtMs": t.created_at_ms});
            for (key, at) in [
                ("rotatedAtMs", t.rotated_at_ms),
                ("revokedAtMs", t.revoked_at_ms),
                ("lastUsedAtMs", t.last_used_at_ms),
            ] {
                if let Some(at) = at {
                    summary[key] = json!(at);
                }
            }
            summary
        })
        .collect();
    value["tokens"] = Value::Array(tokens);
    value
}

/// Tells every gateway to close the device's connections (of one role, or all).
async fn disconnect(ctx: &Ctx, device_id: &str, role: Option<&str>) {
    let mut payload = json!({"deviceId": device_id});
    if let Some(role) = role {
        payload["role"] = json!(role);
    }
    if let Err(err) = ctx
        .bus
        .publish(BusEvent::new(CONTROL_DEVICE_REMOVED, &payload))
        .await
    {
        tracing::warn!(%err, device = device_id, "could not tell gateways to disconnect the device");
    }
}

pub async fn pair_list(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    Params::new("device.pair.list", params)?.only(&[])?;
    let store = store(ctx);
    let pending = store.pending().await?;
    // Whether each device is connected now, anywhere in the cluster (the Control UI shows
    // it as online), and when it was last seen: now if so, else its last token use.
    let live: std::collections::HashSet<String> =
        ctx.gateways.live().into_iter().map(|g| g.id).collect();
    let connected = ctx.presence.connected_devices(|g| live.contains(g));
    let now = argent_proto::now_ms();
    let paired: Vec<Value> = store
        .devices()
        .await?
        .iter()
        .map(|device| {
            let mut row = redacted(device);
            let online = row["deviceId"]
                .as_str()
                .is_some_and(|id| connected.contains_key(id));
            let last_used = device
                .tokens
                .values()
                .filter_map(|t| t.last_used_at_ms)
                .max();
            row["connected"] = json!(online);
            match (online, last_used) {
                (true, _) => row["lastSeenAtMs"] = json!(now),
                (false, Some(at)) => row["lastSeenAtMs"] = json!(at),
                (false, None) => {}
            }
            row
        })
        .collect();
    Ok(json!({"pending": pending, "paired": paired}))
}

/// The live pending request named by `params.requestId` (`unknown requestId` otherwise).
async fn pending(
    ctx: &Ctx,
    method: &str,
    params: Value,
) -> Result<(DeviceStore, PendingRequest), RpcError> {
    let params = Params::new(method, params)?.only(&["requestId"])?;
    let request_id = params.required_id("requestId")?;
    let store = store(ctx);
    let request = store
        .pending_request(&request_id)
        .await?
        .ok_or_else(|| RpcError::bad_params("unknown requestId"))?;
    Ok((store, request))
}

pub async fn pair_approve(ctx: &Ctx, session: &Session, params: Value) -> Result<Value, RpcError> {
    let (store, request) = pending(ctx, "device.pair.approve", params).await?;
    // Pairing-scoped operators approve only what they hold themselves; admins anything.
    let caller_is_admin = session.scopes.iter().any(|s| s == SCOPE_ADMIN);
    if !caller_is_admin && !request.scopes.iter().all(|s| session.scopes.contains(s)) {
        return Err(RpcError::unauthorized("missing scope: operator.admin"));
    }
    let request_id = request.request_id.clone();
    let device = store.approve(&request).await?;
    announce_resolved(ctx, &request, "approved").await;
    Ok(json!({"requestId": request_id, "device": redacted(&device)}))
}

pub async fn pair_reject(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let (store, request) = pending(ctx, "device.pair.reject", params).await?;
    let request_id = request.request_id.clone();
    store.close_request(&request_id).await?;
    announce_resolved(ctx, &request, "rejected").await;
    disconnect(ctx, &request.device_id, Some(&request.role)).await;
    Ok(json!({"requestId": request_id, "deviceId": request.device_id}))
}

pub async fn token_rotate(ctx: &Ctx, session: &Session, params: Value) -> Result<Value, RpcError> {
    let params =
        Params::new("device.token.rotate", params)?.only(&["deviceId", "role", "scopes"])?;
    let device_id = params.required_id("deviceId")?;
    let role = params.required_str("role")?;
    let requested = params.optional_str_list("scopes")?;
    let store = store(ctx);
    let device = store
        .device(&device_id)
        .await?
        .filter(|d| d.tokens.contains_key(&role))
        .ok_or_else(|| RpcError::bad_params("unknown deviceId/role"))?;
    let scopes = requested.unwrap_or_else(|| device.tokens[&role].scopes.clone());
    // A rotation never grants more than the pairing did, nor more than the caller holds.
    if !scopes.iter().all(|s| device.scopes.contains(s)) {
        return Err(RpcError::bad_params(
            "scopes exceed what the device was paired with",
        ));
    }
    let caller_is_admin = session.scopes.iter().any(|s| s == SCOPE_ADMIN);
    if !caller_is_admin && !scopes.iter().all(|s| session.scopes.contains(s)) {
        return Err(RpcError::unauthorized("missing scope: operator.admin"));
    }
    let (token, record) = store
        .issue_token(
            &device_id,
            &role,
            &normalized(&scopes),
            TokenGrant::Rotation,
        )
        .await?;
    // The old token stopped working: so do the connections that used it.
    disconnect(ctx, &device_id, Some(&role)).await;
    Ok(json!({
        "deviceId": device_id, "role": role, "token": token, "scopes": record.scopes,
        "rotatedAtMs": record.rotated_at_ms.unwrap_or(record.created_at_ms),
    }))
}

pub async fn token_revoke(ctx: &Ctx, params: Value) -> Result<Value, RpcError> {
    let params = Params::new("device.token.revoke", params)?.only(&["deviceId", "role"])?;
    let device_id = params.required_id("deviceId")?;
    let role = params.required_str("role")?;
    let now = argent_proto::now_ms();
    store(ctx)
        .update_device(&device_id, |current| {
            let mut device = current
                .filter(|d| d.tokens.contains_key(&role))
                .ok_or_else(|| RpcError::bad_params("unknown deviceId/role"))?;
            if let Some(token) = device.tokens.get_mut(&role) {
                token.revoked_at_ms = Some(now);
            }
            Ok((device, ()))
        })
        .await?;
    disconnect(ctx, &device_id, Some(&role)).await;
    Ok(json!({"deviceId": device_id, "role": role, "revokedAtMs": now}))
}
