//! Authentication at connect: the shared secret (PROTOCOL.md §2.5, §2.12) — constant-time
//! comparison and the exact failure messages the real clients match on — and, in
//! [`device`], the device identity proof (§2.8).

pub mod device;
pub mod devices;
pub mod limiter;

use subtle::ConstantTimeEq;

use argent_proto::connect::{AuthParams, ClientInfo};
use argent_proto::errors::RpcError;

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

    /// The `unauthorized: …` error, worded for this client (§2.12).
    pub fn to_error(self, client: &ClientInfo) -> RpcError {
        let password = matches!(
            self,
            AuthFailure::PasswordMissing
                | AuthFailure::PasswordMismatch
                | AuthFailure::PasswordNotConfigured
        );
        let hint = hint(client, password);
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
        RpcError::unauthorized(message).with_detail("reason", self.reason())
    }
}

/// The hint in parentheses of an `unauthorized: …` message, by kind of client (§2.12).
fn hint(client: &ClientInfo, password: bool) -> &'static str {
    match (client.mode == "cli", client.is_browser(), password) {
        (true, _, false) => "set gateway.remote.token to match gateway.auth.token",
        (true, _, true) => "set gateway.remote.password to match gateway.auth.password",
        (false, true, false) => {
            "open a tokenized dashboard URL or paste token in Control UI settings"
        }
        (false, true, true) => "enter the password in Control UI settings",
        (false, false, false) => "provide gateway auth token",
        (false, false, true) => "provide gateway auth password",
    }
}

/// `unauthorized: device token mismatch (…)` / `… scope mismatch (…)` (§2.12).
pub fn device_token_error(failure: devices::TokenFailure, client: &ClientInfo) -> RpcError {
    let (what, reason) = match failure {
        devices::TokenFailure::Mismatch => ("device token mismatch", "device_token_invalid"),
        devices::TokenFailure::ScopeMismatch => {
            ("device token scope mismatch", "device_token_scope")
        }
    };
    RpcError::unauthorized(format!("unauthorized: {what} ({})", hint(client, false)))
        .with_detail("reason", reason)
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
            password: None,
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
            AuthFailure::TokenMismatch.to_error(&cli).message,
            "unauthorized: gateway token mismatch (set gateway.remote.token to match gateway.auth.token)"
        );
        assert_eq!(
            AuthFailure::TokenMissing.to_error(&web).message,
            "unauthorized: gateway token missing (open a tokenized dashboard URL or paste token in Control UI settings)"
        );
        let e = AuthFailure::TokenMissing.to_error(&ClientInfo::default());
        assert_eq!(
            e.message,
            "unauthorized: gateway token missing (provide gateway auth token)"
        );
        assert_eq!(e.details["jsonrpcCode"], -32002);
        assert_eq!(e.details["reason"], "token_missing");
    }
}
