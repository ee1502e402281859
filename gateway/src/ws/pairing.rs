//! Steps 15–18 of the handshake for a proven device (PROTOCOL.md §2.4, §2.9, §2.10): the
//! device token, device pairing (silent for local operator devices, a pending request and
//! `pairing required` otherwise), and the device token handed back in `hello-ok.auth`.

use serde_json::{json, Value};

use argent_proto::catalog::Role;
use argent_proto::errors::{ErrorCode, RpcError};
use argent_proto::version::Protocol;

use crate::auth::device_token_error;
use crate::auth::devices::{normalized, DeviceStore, PendingRequest, TokenFailure, TokenGrant};
use crate::context::Ctx;
use crate::ws::handshake::{Accepted, Rejection};

/// Pending requests cluster-wide, and per peer address, before new ones are refused.
const MAX_PENDING: usize = 100;
const MAX_PENDING_PER_ADDRESS: usize = 5;

/// `device.pair.resolved` for a request.
pub async fn announce_resolved(ctx: &Ctx, request: &PendingRequest, decision: &str) {
    let payload = json!({
        "requestId": request.request_id, "deviceId": request.device_id,
        "decision": decision, "ts": argent_proto::now_ms(),
    });
    ctx.publish("device.pair.resolved", &payload).await;
}

/// `pairing required` (§2.10); on v4 with the details of PROTOCOL-v4.md §7.2 and the
/// request id in the close reason.
fn pairing_required(
    id: &str,
    request: &PendingRequest,
    repair: bool,
    protocol: Protocol,
) -> Box<Rejection> {
    let (reason, requirement) = if repair {
        ("role-or-scope-upgrade", "approve the new role or scopes")
    } else {
        ("not-paired", "approve this device")
    };
    let message = match protocol {
        Protocol::V3 => "pairing required".to_string(),
        Protocol::V4 => format!("pairing required: {requirement}"),
    };
    let error = RpcError::not_paired(message).with_detail("requestId", request.request_id.clone());
    let error = protocol.connect_error(
        error,
        "PAIRING_REQUIRED",
        &[
            ("reason", json!(reason)),
            (
                "remediationHint",
                json!(format!(
                    "an operator approves it: argent devices approve {}",
                    request.request_id
                )),
            ),
            ("deviceId", json!(request.device_id)),
            ("requestedRole", json!(request.role)),
            ("requestedScopes", json!(request.scopes)),
            ("recommendedNextStep", json!("wait_then_retry")),
            ("pauseReconnect", json!(false)),
        ],
    );
    let mut rejection = Rejection::respond(id, error, 1008);
    if protocol == Protocol::V4 {
        rejection.close_reason = crate::ws::outbox::truncate_reason(&format!(
            "{} (requestId: {})",
            rejection.close_reason, request.request_id
        ));
    }
    rejection
}

/// Runs steps 15–18; `Ok` holds `hello-ok.auth` when the connection proved a device.
pub async fn complete(ctx: &Ctx, accepted: &Accepted) -> Result<Option<Value>, Box<Rejection>> {
    let Some(device) = &accepted.device else {
        return Ok(None);
    };
    let id = accepted.request_id.as_str();
    let session = &accepted.session;
    let params = &accepted.params;
    let role = session.role.as_str();
    let store = DeviceStore::new(ctx.state.clone());
    // The state plane is away: a retryable refusal, close 1013 (try again later).
    let protocol = session.protocol;
    let unavailable = |err: RpcError| {
        // v4 clients retry "gateway starting" after `retryAfterMs` without counting a failure.
        let error = match protocol {
            Protocol::V3 => err,
            Protocol::V4 => RpcError::unavailable("gateway starting; retry shortly")
                .with_detail("reason", "startup-sidecars"),
        };
        let mut rejection = Rejection::respond(id, error.retryable(Some(1000)), 1013);
        if protocol == Protocol::V4 {
            rejection.close_reason = "gateway starting".to_string();
        }
        rejection
    };
    let non_empty = |t: &Option<String>| t.clone().filter(|t| !t.is_empty());
    // v4 clients send the device token in `auth.deviceToken`; v3 ones in `auth.token`.
    let from_device_field = non_empty(&params.auth.device_token);
    let token = from_device_field
        .clone()
        .or_else(|| non_empty(&params.auth.token));

    // 15–16. Not authenticated by the shared secret: the token may be this device's.
    let mut device_token = None;
    if let Err(failure) = accepted.shared {
        match &token {
            Some(token) => {
                match store
                    .check_token(&device.id, role, token, &session.scopes)
                    .await
                    .map_err(unavailable)?
                {
                    Ok(()) => device_token = Some(token.to_string()),
                    // A v4 client that sent a wrong shared token and no device token is
                    // told so, with the hint to retry with its stored device token.
                    Err(TokenFailure::Mismatch | TokenFailure::Unknown)
                        if protocol == Protocol::V4 && from_device_field.is_none() =>
                    {
                        let error = failure.to_error(&params.client, protocol, true);
                        return Err(Rejection::respond(id, error, 1008));
                    }
                    // Not a token of this device: a wrong shared token, as upstream says.
                    Err(TokenFailure::Unknown) => {
                        let error = failure.to_error(&params.client, protocol, false);
                        return Err(Rejection::respond(id, error, 1008));
                    }
                    Err(kind) => {
                        let error = device_token_error(kind, &params.client, protocol);
                        return Err(Rejection::respond(id, error, 1008));
                    }
                }
            }
            // [EXT] A node may ask to be paired with its device identity alone (§2.10).
            None if session.role == Role::Node => {}
            None => {
                let error = failure.to_error(&params.client, protocol, false);
                return Err(Rejection::respond(id, error, 1008));
            }
        }
    }

    // 17. Paired for this key, role and scopes?
    let paired = store.device(&device.id).await.map_err(unavailable)?;
    // A revoked token ends the pairing of that role: without it a node could drop its
    // token and be handed a fresh one (§2.10, revocation must stick).
    let covered = paired.as_ref().is_some_and(|d| {
        d.public_key == device.public_key
            && d.roles.iter().any(|r| r == role)
            && session.scopes.iter().all(|s| d.scopes.contains(s))
            && d.tokens.get(role).is_none_or(|t| t.revoked_at_ms.is_none())
    });
    if !covered {
        let config = ctx.config();
        let auto_approve_nodes = config
            .document
            .pointer("/gateway/nodes/pairing/autoApproveLocal")
            .and_then(Value::as_bool)
            == Some(true);
        let silent = session.local && (session.role != Role::Node || auto_approve_nodes);
        // Only requests that arrive with no credential at all are capped (§2.10): anyone
        // can make those.
        if !silent && token.is_none() {
            let pending = store.pending().await.map_err(unavailable)?;
            let ip = session.peer.ip().to_string();
            let mine = pending.iter().any(|r| r.device_id == device.id);
            let from_here = pending
                .iter()
                .filter(|r| r.remote_ip.as_deref() == Some(&ip))
                .count();
            if !mine && (pending.len() >= MAX_PENDING || from_here >= MAX_PENDING_PER_ADDRESS) {
                let error = RpcError::unavailable("too many pending pairing requests")
                    .retryable(Some(60_000));
                let next = [("recommendedNextStep", json!("wait_then_retry"))];
                let error = protocol.connect_error(error, "AUTH_RATE_LIMITED", &next);
                return Err(Rejection::respond(id, error, 1008));
            }
        }
        let mut roles = paired.as_ref().map(|d| d.roles.clone()).unwrap_or_default();
        if !roles.iter().any(|r| r == role) {
            roles.push(role.to_string());
        }
        let request = PendingRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            device_id: device.id.clone(),
            public_key: device.public_key.clone(),
            display_name: params.client.display_name.clone(),
            platform: Some(params.client.platform.clone()),
            client_id: Some(params.client.id.clone()),
            client_mode: Some(params.client.mode.clone()),
            role: role.to_string(),
            roles,
            scopes: normalized(&session.scopes),
            remote_ip: Some(session.peer.ip().to_string()),
            silent,
            is_repair: paired.is_some(),
            ts: argent_proto::now_ms(),
        };
        if silent {
            // This connection's own request, never an older pending one of the device.
            store.approve(&request).await.map_err(unavailable)?;
            announce_resolved(ctx, &request, "approved").await;
        } else {
            let (request, created) = store.open_request(request).await.map_err(unavailable)?;
            if created {
                let payload = serde_json::to_value(&request).expect("requests serialize");
                ctx.publish("device.pair.requested", &payload).await;
            }
            return Err(pairing_required(id, &request, paired.is_some(), protocol));
        }
    }

    // 18. The device token: the one it logged in with, else a fresh one for (device, role).
    let auth = match device_token {
        Some(token) => {
            json!({"deviceToken": token, "role": role, "scopes": normalized(&session.scopes)})
        }
        None => {
            let (token, record) = store
                .issue_token(&device.id, role, &session.scopes, TokenGrant::IfPaired)
                .await
                .map_err(|err| {
                    let error = match err.code {
                        ErrorCode::NotPaired => {
                            protocol.connect_error(err, "PAIRING_REQUIRED", &[])
                        }
                        _ => err,
                    };
                    Rejection::respond(id, error, 1008)
                })?;
            json!({"deviceToken": token, "role": role, "scopes": record.scopes,
                   "issuedAtMs": record.created_at_ms})
        }
    };
    Ok(Some(auth))
}
