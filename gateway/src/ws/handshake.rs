//! The server-side processing order of the first frame (PROTOCOL.md §2.4), for shared-secret
//! authentication. The first failing step decides the response and the close code.
//!
//! Steps 1–14 run here, synchronously. For a proven device, steps 15–18 (device token,
//! pairing, token issuance) need the shared state and run in [`crate::ws::pairing`].

use std::net::SocketAddr;

use serde_json::Value;

use argent_proto::catalog::Role;
use argent_proto::connect::{parse_connect_params, ConnectParams};
use argent_proto::errors::RpcError;
use argent_proto::frames::{request_from_value, FrameError};
use argent_proto::version::Protocol;

fn now_ms() -> i64 {
    argent_proto::now_ms() as i64
}

use crate::auth::{bootstrap_token_error, check_shared_secret, device, AuthFailure};
use crate::config::SharedSecrets;
use crate::ws::outbox::truncate_reason;
use crate::ws::session::{Session, Upgrade};

/// Why the handshake ended, and how to tell the client.
#[derive(Debug)]
pub struct Rejection {
    /// The `res` to send first (`id`, error), when the frame was a request.
    pub response: Option<(String, RpcError)>,
    pub close_code: u16,
    pub close_reason: String,
}

impl Rejection {
    pub fn respond(id: &str, error: RpcError, close_code: u16) -> Box<Self> {
        let close_reason = if close_code == 1002 {
            "protocol mismatch".to_string()
        } else {
            truncate_reason(&error.message)
        };
        Box::new(Rejection {
            response: Some((id.to_string(), error)),
            close_code,
            close_reason,
        })
    }

    /// Refuses the handshake with `error` (answering the frame's id when it has one), before
    /// the frame was evaluated; `shape` words it for the version the frame offers.
    pub fn refuse(
        first_frame: &str,
        error: RpcError,
        shape: impl FnOnce(RpcError, Protocol) -> RpcError,
    ) -> Self {
        let frame = serde_json::from_str::<Value>(first_frame).ok();
        let id = frame
            .as_ref()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| "invalid".to_string());
        let offered = frame.as_ref().and_then(offered_protocol);
        let error = shape(error, offered.unwrap_or_default());
        *Self::respond(&id, error, 1008)
    }

    /// Whether this was an authentication failure (counted per address).
    pub fn is_auth_failure(&self) -> bool {
        // Wrong secrets, tokens or proofs count; `pairing required` / `device identity
        // required` (NOT_PAIRED) are normal steps of joining, not guesses.
        self.response.as_ref().is_some_and(|(_, e)| {
            e.jsonrpc_code() == argent_proto::errors::jsonrpc::AUTH_FAILED
                && e.code == argent_proto::errors::ErrorCode::InvalidRequest
                && e.details.get("reason").and_then(Value::as_str) != Some("rate_limited")
        })
    }

    /// A short label for metrics and logs.
    pub fn label(&self) -> &str {
        self.response
            .as_ref()
            .map(|(_, e)| e.message.as_str())
            .unwrap_or("no response")
    }
}

/// The version a `connect` frame would negotiate, read before it is validated.
fn offered_protocol(frame: &Value) -> Option<Protocol> {
    let bound = |key: &str| frame.pointer(&format!("/params/{key}"))?.as_u64();
    Protocol::negotiate(bound("minProtocol")?, bound("maxProtocol")?)
}

/// A `connect` that passed steps 1–14.
#[derive(Debug)]
pub struct Accepted {
    pub request_id: String,
    pub session: Session,
    pub params: ConnectParams,
    /// The proven device, when the client sent one (steps 15–18 follow).
    pub device: Option<device::ProvenDevice>,
    /// Step 7's outcome: whether the shared secret authenticated the connection.
    pub shared: Result<(), AuthFailure>,
}

/// What the handshake needs from the gateway's configuration.
pub struct Policy<'a> {
    pub secrets: &'a SharedSecrets,
    pub config: &'a Value,
}

impl Policy<'_> {
    fn flag(&self, pointer: &str) -> bool {
        self.config.pointer(pointer).and_then(Value::as_bool) == Some(true)
    }

    fn allowed_origins(&self) -> Vec<String> {
        crate::config::string_list(self.config, "/gateway/controlUi/allowedOrigins")
    }
}

/// Runs steps 1–20 on the first frame's text; `nonce` is this socket's challenge.
pub fn evaluate(
    policy: &Policy<'_>,
    conn_id: &str,
    upgrade: &Upgrade,
    peer: SocketAddr,
    nonce: &str,
    text: &str,
) -> Result<Accepted, Box<Rejection>> {
    // 1. JSON at all? If not: no response, close 1000.
    let value: Value = serde_json::from_str(text).map_err(|_| {
        Box::new(Rejection {
            response: None,
            close_code: 1000,
            close_reason: String::new(),
        })
    })?;
    // 2. A valid `req` for `connect` with valid params.
    let extra = offered_protocol(&value)
        .unwrap_or_default()
        .extra_request_keys();
    let request = request_from_value(value, extra).map_err(|err| match err {
        FrameError::NotRequest { .. } | FrameError::NotJson => Box::new(Rejection {
            response: None,
            close_code: 1008,
            close_reason: "invalid request frame".to_string(),
        }),
        FrameError::Invalid { .. } => Rejection::respond(err.reply_id(), err.to_error(), 1008),
    })?;
    let id = request.id.as_str();
    if request.method != "connect" {
        return Err(Rejection::respond(
            id,
            RpcError::invalid_request("invalid handshake: first request must be connect"),
            1008,
        ));
    }
    let params = parse_connect_params(request.params.as_ref()).map_err(|detail| {
        Rejection::respond(
            id,
            RpcError::invalid_request(format!("invalid connect params: {detail}")),
            1008,
        )
    })?;
    // 3. Protocol negotiation: the highest of {3, 4} both sides speak (PROTOCOL-v4.md §1.2).
    let Some(protocol) = Protocol::negotiate(params.min_protocol, params.max_protocol) else {
        return Err(Rejection::respond(
            id,
            Protocol::mismatch(params.min_protocol, params.max_protocol),
            1002,
        ));
    };
    // 4. Role.
    let role = match Role::parse(params.role.as_deref().unwrap_or("operator")) {
        Some(role) => role,
        None => {
            return Err(Rejection::respond(
                id,
                RpcError::invalid_request("invalid role"),
                1008,
            ))
        }
    };
    // 5. Effective scopes.
    let scopes = match (&params.scopes, role) {
        (Some(s), _) if !s.is_empty() => s.clone(),
        (_, Role::Operator) => protocol.default_operator_scopes(),
        _ => Vec::new(),
    };
    // 6. Browser origin check.
    if params.client.is_browser() && !upgrade.origin_allowed(&policy.allowed_origins()) {
        let error = RpcError::unauthorized("origin not allowed (open the Control UI from the gateway host or allow it in gateway.controlUi.allowedOrigins)");
        let error = protocol.connect_error(
            error,
            "CONTROL_UI_ORIGIN_NOT_ALLOWED",
            &[("reason", Value::from("origin-not-allowed"))],
        );
        return Err(Rejection::respond(id, error, 1008));
    }
    // 7. Shared secret.
    let shared = check_shared_secret(policy.secrets, &params.auth);
    let supplied = params.auth.token.as_deref().is_some_and(|t| !t.is_empty())
        || params
            .auth
            .password
            .as_deref()
            .is_some_and(|p| !p.is_empty());
    let client = &params.client;
    let local = upgrade.is_local(&peer);
    // A setup code stands in for the shared secret; we do not issue those (§3.2 v4).
    let bootstrap = params.auth.bootstrap_token.is_some() && params.auth.device_token.is_none();
    if shared.is_err() && bootstrap {
        return Err(Rejection::respond(
            id,
            bootstrap_token_error(protocol),
            1008,
        ));
    }
    let identity_required = || {
        let error = RpcError::not_paired("device identity required");
        protocol.connect_error(error, "DEVICE_IDENTITY_REQUIRED", &[])
    };
    let mut device_id = None;
    match (&params.device, shared) {
        // 8. No device.
        (None, _)
            if client.is_control_ui()
                && !policy.flag("/gateway/controlUi/allowInsecureAuth")
                && !policy.flag("/gateway/controlUi/dangerouslyDisableDeviceAuth") =>
        {
            let message = protocol.message(
                "control ui requires HTTPS or localhost (secure context)",
                "control ui requires device identity (use HTTPS or localhost secure context)",
            );
            let error = protocol.connect_error(
                RpcError::unauthorized(message),
                "CONTROL_UI_DEVICE_IDENTITY_REQUIRED",
                &[],
            );
            return Err(Rejection::respond(id, error, 1008));
        }
        (None, Ok(())) => {}
        (None, Err(failure)) if supplied => {
            let error = failure.to_error(client, protocol, false);
            return Err(Rejection::respond(id, error, 1008));
        }
        (None, Err(_)) => return Err(Rejection::respond(id, identity_required(), 1008)),
        // 9–14. The device proof (15–18 follow in `pairing`).
        (Some(device), _) => {
            let proven = device::verify(&params, device, nonce, local, now_ms())
                .map_err(|failure| Rejection::respond(id, failure.to_error(protocol), 1008))?;
            tracing::debug!(device = %proven.id, payload = proven.payload_version, "device proven");
            device_id = Some(proven.clone());
        }
    }
    // [EXT] The seed's `device` role needs a proven (and then paired) device identity.
    if role == Role::Device && device_id.is_none() {
        return Err(Rejection::respond(id, identity_required(), 1008));
    }
    Ok(Accepted {
        request_id: request.id.clone(),
        session: Session {
            conn_id: conn_id.to_string(),
            protocol,
            role,
            scopes,
            client: params.client.clone(),
            caps: params.caps.clone(),
            commands: params.commands.clone(),
            device_id: device_id.as_ref().map(|d| d.id.clone()),
            peer,
            local,
            subscriptions: Default::default(),
            closed: Default::default(),
        },
        params,
        device: device_id,
        shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;
    use serde_json::json;

    fn secrets() -> SharedSecrets {
        SharedSecrets {
            mode: AuthMode::Token,
            token: Some("secret".into()),
            password: None,
            token_source: String::new(),
        }
    }

    fn run(frame: Value) -> Result<Accepted, Box<Rejection>> {
        let secrets = secrets();
        let config = json!({});
        let policy = Policy {
            secrets: &secrets,
            config: &config,
        };
        let upgrade = Upgrade {
            host: Some("localhost:18789".into()),
            origin: Some("http://localhost:5173".into()),
            forwarded: false,
            user_agent: None,
        };
        evaluate(
            &policy,
            "c1",
            &upgrade,
            "127.0.0.1:9".parse().unwrap(),
            "nonce",
            &frame.to_string(),
        )
    }

    fn connect(params: Value) -> Value {
        json!({"type":"req","id":"c","method":"connect","params":params})
    }

    fn base() -> Value {
        json!({"minProtocol":3,"maxProtocol":3,
               "client":{"id":"cli","version":"dev","platform":"linux","mode":"cli"},
               "auth":{"token":"secret"}})
    }

    fn message(r: Result<Accepted, Box<Rejection>>) -> (String, u16) {
        let rej = r.unwrap_err();
        (
            rej.response.map(|(_, e)| e.message).unwrap_or_default(),
            rej.close_code,
        )
    }

    #[test]
    fn accepts_and_defaults_scopes() {
        let ok = run(connect(base())).unwrap();
        assert_eq!(ok.session.role, Role::Operator);
        assert_eq!(ok.session.scopes, vec!["operator.admin".to_string()]);
        assert!(ok.session.local);
    }

    #[test]
    fn order_of_failures() {
        assert_eq!(run(json!("x")).unwrap_err().close_code, 1008);
        let mut p = base();
        p["maxProtocol"] = json!(2);
        p["minProtocol"] = json!(1);
        assert_eq!(message(run(connect(p))), ("protocol mismatch".into(), 1002));
        let mut p = base();
        p["role"] = json!("admin");
        assert_eq!(message(run(connect(p))), ("invalid role".into(), 1008));
        let mut p = base();
        p["auth"] = json!({});
        assert_eq!(
            message(run(connect(p))),
            ("device identity required".into(), 1008)
        );
        let mut p = base();
        p["auth"] = json!({"token":"wrong"});
        assert_eq!(
            message(run(connect(p))).0,
            "unauthorized: gateway token mismatch (set gateway.remote.token to match gateway.auth.token)"
        );
        let first = json!({"type":"req","id":"h","method":"health"});
        assert_eq!(
            message(run(first)).0,
            "invalid handshake: first request must be connect"
        );
    }

    #[test]
    fn control_ui_without_device_needs_secure_context() {
        let mut p = base();
        p["client"] =
            json!({"id":"argent-control-ui","version":"1","platform":"web","mode":"webchat"});
        assert_eq!(
            message(run(connect(p))).0,
            "control ui requires HTTPS or localhost (secure context)"
        );
    }
}
