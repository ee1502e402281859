//! The first frame of a connection: `parse_connect_params` on any JSON (a frame's `params`,
//! or the value itself), then the whole server-side processing order of PROTOCOL.md §2.4
//! (`handshake::evaluate`, steps 1–14) under three fixed policies — a local token gateway,
//! a remote one behind a proxy with an allow-listed dashboard origin and the insecure-auth
//! flag, and a password gateway with device auth disabled for the Control UI.
//!
//! Why: this is the only code an unauthenticated peer reaches, and the order of its checks
//! decides who gets in. Checked, beyond "no panic":
//! * accepted params hold only allowed values (client id and mode from the fixed lists,
//!   non-empty required strings, bounded `buildId`/`timeZone`, boolean permissions, …),
//!   re-encoded they parse to the same params, and one unknown key anywhere refuses them;
//!   refused params say why in upstream's `at <path>: …` wording;
//! * a rejected handshake answers only a JSON frame, to the client's own id when it sent a
//!   usable one, with `INVALID_REQUEST` or `NOT_PAIRED` (-32600 / -32002), closes 1002 only
//!   for `protocol mismatch`, else 1008 with a close reason that is a prefix of the message
//!   and fits a close frame; non-JSON gets no answer and 1000;
//! * an accepted one is a valid `connect` request, negotiated the highest common version,
//!   has the role asked (default `operator`) and the effective scopes of step 5, got in with
//!   the shared secret or a proven device — never neither —, with the `device` role only
//!   through a device, with browser clients only from an allowed origin, and with the
//!   Control UI without a device only where a config flag allows it.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

use argent_fuzz::{check_error_frame, connect_params_json};
use argent_gateway::config::{string_list, AuthMode, SharedSecrets};
use argent_gateway::ws::handshake::{evaluate, Accepted, Policy, Rejection};
use argent_gateway::ws::session::Upgrade;
use argent_proto::catalog::Role;
use argent_proto::connect::{parse_connect_params, CLIENT_IDS, CLIENT_MODES};
use argent_proto::errors::{jsonrpc, ErrorCode};
use argent_proto::frames::request_from_value;
use argent_proto::limits::CLOSE_REASON_MAX;
use argent_proto::version::Protocol;

/// This socket's challenge (PROTOCOL.md §2.2's example).
const NONCE: &str = "5b0e2c1e-0d8f-4a55-9a0e-2f1b1b6f2c11";
const ORIGINS: &str = "/gateway/controlUi/allowedOrigins";

struct Case {
    secrets: SharedSecrets,
    config: Value,
    upgrade: Upgrade,
    peer: SocketAddr,
    /// `allowInsecureAuth` or `dangerouslyDisableDeviceAuth` is set.
    control_ui_without_device: bool,
}

fn cases() -> Vec<Case> {
    let token = |t: &str| SharedSecrets {
        mode: AuthMode::Token,
        token: Some(t.to_string()),
        password: None,
        token_source: "fuzz".into(),
    };
    vec![
        // The one-process default, opened from the same machine.
        Case {
            secrets: token("secret"),
            config: json!({}),
            upgrade: Upgrade {
                host: Some("localhost:18789".into()),
                origin: Some("http://localhost:5173".into()),
                forwarded: false,
                user_agent: None,
            },
            peer: "127.0.0.1:50000".parse().expect("an address"),
            control_ui_without_device: false,
        },
        // Remote, behind a proxy, with the dashboard's origin allow-listed.
        Case {
            secrets: token("secret"),
            config: json!({"gateway": {"controlUi": {
                "allowInsecureAuth": true,
                "allowedOrigins": ["https://dash.example.com"]}}}),
            upgrade: Upgrade {
                host: Some("gw.example.com:18789".into()),
                origin: Some("https://dash.example.com".into()),
                forwarded: true,
                user_agent: Some("Mozilla/5.0".into()),
            },
            peer: "10.1.2.3:443".parse().expect("an address"),
            control_ui_without_device: true,
        },
        // Password mode, no Origin header, IPv6 loopback peer but a LAN Host.
        Case {
            secrets: SharedSecrets {
                mode: AuthMode::Password,
                token: None,
                password: Some("hunter2".into()),
                token_source: "fuzz".into(),
            },
            config: json!({"gateway": {"controlUi": {"dangerouslyDisableDeviceAuth": true}}}),
            upgrade: Upgrade {
                host: Some("gw.lan".into()),
                origin: None,
                forwarded: false,
                user_agent: None,
            },
            peer: "[::1]:40000".parse().expect("an address"),
            control_ui_without_device: true,
        },
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let value = serde_json::from_str::<Value>(text).ok();
    if let Some(value) = &value {
        check_params(Some(value));
        if let Some(params) = value.get("params") {
            check_params(Some(params));
        }
    }
    for case in cases() {
        let policy = Policy {
            secrets: &case.secrets,
            config: &case.config,
        };
        match evaluate(&policy, "conn-fuzz", &case.upgrade, case.peer, NONCE, text) {
            Ok(accepted) => check_accepted(&case, &accepted, value.as_ref().expect("JSON")),
            Err(rejection) => check_rejection(&rejection, value.as_ref()),
        }
    }
});

fn check_params(params: Option<&Value>) {
    let result = parse_connect_params(params);
    let p = match result {
        Err(detail) => {
            assert!(detail.starts_with("at "), "{detail:?}");
            return;
        }
        Ok(p) => p,
    };
    let c = &p.client;
    assert!(CLIENT_IDS.contains(&c.id.as_str()), "{:?}", c.id);
    assert!(CLIENT_MODES.contains(&c.mode.as_str()), "{:?}", c.mode);
    assert!(!c.version.is_empty() && !c.platform.is_empty());
    for optional in [
        &c.display_name,
        &c.device_family,
        &c.model_identifier,
        &c.instance_id,
        &c.build_id,
        &c.time_zone,
        &p.role,
    ] {
        assert!(
            optional.as_deref() != Some(""),
            "empty optional string accepted"
        );
    }
    assert!(c.build_id.as_ref().is_none_or(|b| b.chars().count() <= 96));
    assert!(c.time_zone.as_ref().is_none_or(|z| z.chars().count() <= 64));
    assert!(p.min_protocol >= 1 && p.max_protocol >= 1);
    let lists = [Some(&p.caps), Some(&p.commands), p.scopes.as_ref()];
    for item in lists.into_iter().flatten().flatten() {
        assert!(!item.is_empty(), "empty list item accepted");
    }
    assert!(p.permissions.values().all(Value::is_boolean));
    if let Some(d) = &p.device {
        assert!(!d.id.is_empty() && !d.public_key.is_empty() && !d.signature.is_empty());
        assert!(d.signed_at >= 0);
        assert!(d.nonce.as_deref() != Some(""));
    }

    // Re-encoded, the same params; one unknown key anywhere, refused.
    let encoded = connect_params_json(&p);
    assert_eq!(
        parse_connect_params(Some(&encoded)),
        Ok(p.clone()),
        "{encoded}"
    );
    for (at, path) in [
        ("root", None),
        ("/client", Some("client")),
        ("/auth", Some("auth")),
    ] {
        let mut extra = encoded.clone();
        let target = match path {
            None => &mut extra,
            Some(key) => &mut extra[key],
        };
        target["fuzzUnknownKey"] = json!(1);
        let err = parse_connect_params(Some(&extra)).expect_err("unknown keys are refused");
        let expected = format!("at {at}: unexpected property 'fuzzUnknownKey'");
        assert!(err.contains(&expected), "{err:?}");
    }
}

fn check_rejection(rejection: &Rejection, value: Option<&Value>) {
    let Some((id, err)) = &rejection.response else {
        match value {
            None => assert_eq!(
                (rejection.close_code, rejection.close_reason.as_str()),
                (1000, "")
            ),
            Some(_) => assert_eq!(
                (rejection.close_code, rejection.close_reason.as_str()),
                (1008, "invalid request frame")
            ),
        }
        return;
    };
    let value = value.expect("only a JSON frame gets an answer");
    check_error_frame(id, err);
    assert!(
        matches!(err.code, ErrorCode::InvalidRequest | ErrorCode::NotPaired),
        "{err:?}"
    );
    assert!(
        matches!(
            err.jsonrpc_code(),
            jsonrpc::INVALID_REQUEST | jsonrpc::AUTH_FAILED
        ),
        "{err:?}"
    );
    match value
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(sent) => assert_eq!(id, sent),
        None => assert_eq!(id, "invalid"),
    }
    let reason = rejection.close_reason.as_str();
    assert!(reason.len() <= CLOSE_REASON_MAX, "{reason:?}");
    match rejection.close_code {
        1002 => {
            assert_eq!(err.message, "protocol mismatch");
            assert_eq!(reason, "protocol mismatch");
        }
        1008 => {
            assert_ne!(err.message, "protocol mismatch", "a mismatch closes 1002");
            assert!(
                err.message.starts_with(reason),
                "{reason:?} / {:?}",
                err.message
            );
            assert!(!reason.is_empty());
        }
        other => panic!("close code {other} for {err:?}"),
    }
}

fn check_accepted(case: &Case, accepted: &Accepted, frame: &Value) {
    let request = request_from_value(frame.clone(), Protocol::V4.extra_request_keys())
        .expect("an accepted frame is a request");
    assert_eq!(request.method, "connect");
    assert_eq!(accepted.request_id, request.id);
    let params = parse_connect_params(request.params.as_ref()).expect("accepted params parse");
    assert_eq!(accepted.params, params);

    let session = &accepted.session;
    let protocol = Protocol::negotiate(params.min_protocol, params.max_protocol)
        .expect("accepted: a common version");
    assert_eq!(session.protocol, protocol);
    if protocol == Protocol::V3 {
        request_from_value(frame.clone(), &[]).expect("protocol 3 frames are strict");
    }
    let role = Role::parse(params.role.as_deref().unwrap_or("operator")).expect("a known role");
    assert_eq!(session.role, role);
    let scopes = match (&params.scopes, role) {
        (Some(s), _) if !s.is_empty() => s.clone(),
        (_, Role::Operator) => protocol.default_operator_scopes(),
        _ => Vec::new(),
    };
    assert_eq!(session.scopes, scopes);
    assert_eq!(session.client, params.client);
    assert_eq!(session.caps, params.caps);
    assert_eq!(session.commands, params.commands);
    assert_eq!(session.local, case.upgrade.is_local(&case.peer));
    assert_eq!(
        session.device_id,
        accepted.device.as_ref().map(|d| d.id.clone())
    );

    // Who got in: the shared secret or a proven device, never neither.
    assert_eq!(accepted.device.is_some(), params.device.is_some());
    assert!(accepted.device.is_some() || accepted.shared.is_ok());
    if role == Role::Device {
        assert!(accepted.device.is_some(), "the device role needs a device");
    }
    if accepted.shared.is_ok() {
        let (given, expected) = match case.secrets.mode {
            AuthMode::Token => (&params.auth.token, &case.secrets.token),
            AuthMode::Password => (&params.auth.password, &case.secrets.password),
        };
        assert_eq!(given, expected, "shared secret accepted without the secret");
    }
    if params.client.is_browser() {
        let allowed = string_list(&case.config, ORIGINS);
        assert!(
            case.upgrade.origin_allowed(&allowed),
            "browser from a refused origin"
        );
    }
    if params.client.is_control_ui() && params.device.is_none() {
        assert!(
            case.control_ui_without_device,
            "Control UI without a device"
        );
    }
}
