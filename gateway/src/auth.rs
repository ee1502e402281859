//! Authentication at connect: the shared secret (PROTOCOL.md §2.5, §2.12) — constant-time
//! comparison and the exact failure messages the real clients match on — and, in
//! [`device`], the device identity proof (§2.8).

pub mod device;
pub mod devices;
pub mod limiter;

use serde_json::json;
use subtle::ConstantTimeEq;

use argent_proto::connect::{AuthParams, ClientInfo};
use argent_proto::errors::RpcError;
use argent_proto::version::Protocol;

use crate::config::{AuthMode, SharedSecrets};

/// Why shared-secret authentication failed (`details.reason` [EXT]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    TokenMissing,
    TokenMismatch,
    TokenNotConfigured,
    PasswordMissing,
    PasswordMismatch,
    PasswordNotConfigured,
}

impl AuthFailure {
    fn reason(self) -> &'static str {
        match self {
            AuthFailure::TokenMissing => "token_missing",
            AuthFailure::TokenMismatch => "token_mismatch",
            AuthFailure::TokenNotConfigured => "token_missing_config",
            AuthFailure::PasswordMissing => "password_missing",
            AuthFailure::PasswordMismatch => "password_mismatch",
            AuthFailure::PasswordNotConfigured => "password_missing_config",
        }
    }

    /// Whether the client supplied a secret at all (§2.4 step 8c vs 8d).
    pub fn secret_supplied(self) -> bool {
        matches!(
            self,
            AuthFailure::TokenMismatch | AuthFailure::PasswordMismatch
        )
    }

    /// `details.code` and `recommendedNextStep` of PROTOCOL-v4.md §7.2.
    fn v4_code(self) -> (&'static str, &'static str) {
        match self {
            AuthFailure::TokenMissing => ("AUTH_TOKEN_MISSING", "update_auth_configuration"),
            AuthFailure::PasswordMissing => ("AUTH_PASSWORD_MISSING", "update_auth_configuration"),
            AuthFailure::TokenNotConfigured => {
                ("AUTH_TOKEN_NOT_CONFIGURED", "update_auth_configuration")
            }
            AuthFailure::PasswordNotConfigured => {
                ("AUTH_PASSWORD_NOT_CONFIGURED", "update_auth_configuration")
            }
            AuthFailure::TokenMismatch => ("AUTH_TOKEN_MISMATCH", "update_auth_credentials"),
            AuthFailure::PasswordMismatch => ("AUTH_PASSWORD_MISMATCH", "update_auth_credentials"),
        }
    }

    /// The `unauthorized: …` error, worded for this client (§2.12; v4 details of
    /// PROTOCOL-v4.md §7.2). `device_retry`: a device was presented with `auth.token` and
    /// without `auth.deviceToken`, so a v4 client may retry with its stored device token.
    pub fn to_error(self, client: &ClientInfo, protocol: Protocol, device_retry: bool) -> RpcError {
        let password = matches!(
            self,
            AuthFailure::PasswordMissing
                | AuthFailure::PasswordMismatch
                | AuthFailure::PasswordNotConfigured
        );
        let hint = hint(client, password, protocol);
        let message = match self {
            AuthFailure::TokenMissing => format!("unauthorized: gateway token missing ({hint})"),
            AuthFailure::TokenMismatch => format!("unauthorized: gateway token mismatch ({hint})"),
            AuthFailure::TokenNotConfigured => {
                "unauthorized: gateway token not configured on gateway (set gateway.auth.token)"
                    .to_string()
            }
            AuthFailure::PasswordMissing => {
                format!("unauthorized: gateway password missing ({hint})")
            }
            AuthFailure::PasswordMismatch => {
                format!("unauthorized: gateway password mismatch ({hint})")
            }
            AuthFailure::PasswordNotConfigured => {
                "unauthorized: gateway password not configured on gateway (set gateway.auth.password)"
                    .to_string()
            }
        };
        let error = RpcError::unauthorized(message).with_detail("reason", self.reason());
        let retry = device_retry && self == AuthFailure::TokenMismatch;
        let (code, next) = self.v4_code();
        let next = if retry {
            "retry_with_device_token"
        } else {
            next
        };
        protocol.connect_error(
            error,
            code,
            &[
                ("authReason", json!(self.reason())),
                ("canRetryWithDeviceToken", json!(retry)),
                ("recommendedNextStep", json!(next)),
            ],
        )
    }
}

/// The hint in parentheses of an `unauthorized: …` message, by kind of client (§2.12);
/// v4 words the CLI and Control UI hints as upstream 2026.9 does (the v3 trigger phrases
/// stay in the message).
fn hint(client: &ClientInfo, password: bool, protocol: Protocol) -> &'static str {
    match (client.mode == "cli", client.is_browser(), password) {
        (true, _, false) => protocol.message(
            "set gateway.remote.token to match gateway.auth.token",
            "use this gateway's gateway.auth.token or pair the device",
        ),
        (true, _, true) => "set gateway.remote.password to match gateway.auth.password",
        (false, true, false) => protocol.message(
            "open a tokenized dashboard URL or paste token in Control UI settings",
            "open the dashboard URL and paste the token in Control UI settings",
        ),
        (false, true, true) => "enter the password in Control UI settings",
        (false, false, false) => "provide gateway auth token",
        (false, false, true) => "provide gateway auth password",
    }
}

/// `unauthorized: device token mismatch (…)` / `… scope mismatch (…)` (§2.12, v4 §7.2).
pub fn device_token_error(
    failure: devices::TokenFailure,
    client: &ClientInfo,
    protocol: Protocol,
) -> RpcError {
    let (what, reason, v4_hint, code, auth_reason, next) = match failure {
        devices::TokenFailure::Mismatch | devices::TokenFailure::Unknown => (
            "device token mismatch",
            "device_token_invalid",
            "rotate/reissue device token",
            "AUTH_DEVICE_TOKEN_MISMATCH",
            "device_token_mismatch",
            "update_auth_credentials",
        ),
        devices::TokenFailure::ScopeMismatch => (
            "device token scope mismatch",
            "device_token_scope",
            "re-pair or approve scope upgrade",
            "AUTH_SCOPE_MISMATCH",
            "scope_mismatch",
            "review_auth_configuration",
        ),
    };
    let hint = protocol.message(hint(client, false, protocol), v4_hint);
    let error = RpcError::unauthorized(format!("unauthorized: {what} ({hint})"))
        .with_detail("reason", reason);
    credential_error(error, protocol, code, auth_reason, false, next)
}

/// The v4 details of a credential failure (PROTOCOL-v4.md §7.2 shared-secret table).
fn credential_error(
    error: RpcError,
    protocol: Protocol,
    code: &str,
    auth_reason: &str,
    retry_with_device_token: bool,
    next: &str,
) -> RpcError {
    protocol.connect_error(
        error,
        code,
        &[
            ("authReason", json!(auth_reason)),
            ("canRetryWithDeviceToken", json!(retry_with_device_token)),
            ("recommendedNextStep", json!(next)),
        ],
    )
}

/// A setup-code (`auth.bootstrapToken`) connect: not supported by this server.
pub fn bootstrap_token_error(protocol: Protocol) -> RpcError {
    let error = RpcError::unauthorized("unauthorized: bootstrap token invalid (setup codes are not supported by this gateway; use the gateway token or pair the device)")
        .with_detail("reason", "bootstrap_token_invalid");
    let code = "AUTH_BOOTSTRAP_TOKEN_INVALID";
    let next = "review_auth_configuration";
    credential_error(
        error,
        protocol,
        code,
        "bootstrap_token_invalid",
        false,
        next,
    )
}

/// The rate limiter's refusal, with the v4 details (§7.2).
pub fn rate_limited_error(mut error: RpcError, protocol: Protocol) -> RpcError {
    let code = "AUTH_RATE_LIMITED";
    if protocol == Protocol::V4 {
        error.message =
            "unauthorized: too many failed authentication attempts (retry later)".to_string();
    }
    credential_error(
        error,
        protocol,
        code,
        "rate_limited",
        false,
        "wait_then_retry",
    )
}

/// Constant-time equality; a length mismatch fails fast (as upstream).
pub fn secrets_equal(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// §2.4 step 7: `Ok(())` when the token (token mode) or password (password mode) matches.
pub fn check_shared_secret(secrets: &SharedSecrets, auth: &AuthParams) -> Result<(), AuthFailure> {
    match secrets.mode {
        AuthMode::Token => {
            let Some(expected) = &secrets.token else {
                return Err(AuthFailure::TokenNotConfigured);
            };
            match &auth.token {
                None => Err(AuthFailure::TokenMissing),
                Some(given) if given.is_empty() => Err(AuthFailure::TokenMissing),
                Some(given) if secrets_equal(given, expected) => Ok(()),
                Some(_) => Err(AuthFailure::TokenMismatch),
            }
        }
        AuthMode::Password => {
            let Some(expected) = &secrets.password else {
                return Err(AuthFailure::PasswordNotConfigured);
            };
            match &auth.password {
                None => Err(AuthFailure::PasswordMissing),
                Some(given) if given.is_empty() => Err(AuthFailure::PasswordMissing),
                Some(given) if secrets_equal(given, expected) => Ok(()),
                Some(_) => Err(AuthFailure::PasswordMismatch),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(token: Option<&str>) -> SharedSecrets {
        SharedSecrets {
            mode: AuthMode::Token,
            token: token.map(str::to_string),
            password: None,
            token_source: String::new(),
        }
    }

    fn auth(token: Option<&str>) -> AuthParams {
        AuthParams {
            token: token.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn token_outcomes() {
        assert_eq!(
            check_shared_secret(&secrets(Some("a")), &auth(Some("a"))),
            Ok(())
        );
        assert_eq!(
            check_shared_secret(&secrets(Some("a")), &auth(Some("b"))),
            Err(AuthFailure::TokenMismatch)
        );
        assert_eq!(
            check_shared_secret(&secrets(Some("a")), &auth(None)),
            Err(AuthFailure::TokenMissing)
        );
        assert_eq!(
            check_shared_secret(&secrets(None), &auth(Some("a"))),
            Err(AuthFailure::TokenNotConfigured)
        );
    }

    #[test]
    fn messages_carry_client_hints() {
        let cli = ClientInfo {
            id: "cli".into(),
            mode: "cli".into(),
            ..Default::default()
        };
        let web = ClientInfo {
            id: "webchat".into(),
            mode: "webchat".into(),
            ..Default::default()
        };
        assert_eq!(
            AuthFailure::TokenMismatch
                .to_error(&cli, Protocol::V3, false)
                .message,
            "unauthorized: gateway token mismatch (set gateway.remote.token to match gateway.auth.token)"
        );
        assert_eq!(
            AuthFailure::TokenMissing
                .to_error(&web, Protocol::V3, false)
                .message,
            "unauthorized: gateway token missing (open a tokenized dashboard URL or paste token in Control UI settings)"
        );
        let e = AuthFailure::TokenMissing.to_error(&ClientInfo::default(), Protocol::V3, false);
        assert_eq!(
            e.message,
            "unauthorized: gateway token missing (provide gateway auth token)"
        );
        assert_eq!(e.details["jsonrpcCode"], -32002);
        assert_eq!(e.details["reason"], "token_missing");
        assert!(e.details.get("code").is_none(), "v3 errors are unchanged");
    }

    #[test]
    fn v4_errors_carry_codes_and_next_steps() {
        let cli = ClientInfo {
            id: "cli".into(),
            mode: "cli".into(),
            ..Default::default()
        };
        let e = AuthFailure::TokenMismatch.to_error(&cli, Protocol::V4, false);
        assert_eq!(
            e.message,
            "unauthorized: gateway token mismatch (use this gateway's gateway.auth.token or pair the device)"
        );
        assert_eq!(e.details["code"], "AUTH_TOKEN_MISMATCH");
        assert_eq!(e.details["authReason"], "token_mismatch");
        assert_eq!(e.details["canRetryWithDeviceToken"], false);
        assert_eq!(e.details["recommendedNextStep"], "update_auth_credentials");
        let e = AuthFailure::TokenMismatch.to_error(&cli, Protocol::V4, true);
        assert_eq!(e.details["canRetryWithDeviceToken"], true);
        assert_eq!(e.details["recommendedNextStep"], "retry_with_device_token");
        let e = device_token_error(devices::TokenFailure::Mismatch, &cli, Protocol::V4);
        assert_eq!(
            e.message,
            "unauthorized: device token mismatch (rotate/reissue device token)"
        );
        assert_eq!(e.details["code"], "AUTH_DEVICE_TOKEN_MISMATCH");
    }
}
