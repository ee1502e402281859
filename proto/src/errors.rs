//! The one place where an internal error becomes a wire error (PROTOCOL.md §1.6, §1.10).
//!
//! `code` is always one of upstream's **string** codes; the seed's JSON-RPC numbers travel
//! inside `details.jsonrpcCode` [EXT], merged into whatever details upstream would send.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Upstream's string error codes (§1.10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    #[serde(rename = "INVALID_REQUEST")]
    InvalidRequest,
    #[serde(rename = "UNAVAILABLE")]
    Unavailable,
    #[serde(rename = "NOT_PAIRED")]
    NotPaired,
    #[serde(rename = "NOT_LINKED")]
    NotLinked,
    #[serde(rename = "AGENT_TIMEOUT")]
    AgentTimeout,
    /// Protocol 4: an authenticated caller lacks a scope (v3 says `INVALID_REQUEST`).
    #[serde(rename = "FORBIDDEN")]
    Forbidden,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::NotPaired => "NOT_PAIRED",
            ErrorCode::NotLinked => "NOT_LINKED",
            ErrorCode::AgentTimeout => "AGENT_TIMEOUT",
            ErrorCode::Forbidden => "FORBIDDEN",
        }
    }

    /// Parses a string code; unknown codes (upstream's `INTERNAL_ERROR` quirk) map to
    /// `UNAVAILABLE`, `INVALID_PARAMS` to `INVALID_REQUEST` (§1.10.1).
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "INVALID_REQUEST" | "INVALID_PARAMS" => ErrorCode::InvalidRequest,
            "NOT_PAIRED" => ErrorCode::NotPaired,
            "NOT_LINKED" => ErrorCode::NotLinked,
            "AGENT_TIMEOUT" => ErrorCode::AgentTimeout,
            "FORBIDDEN" => ErrorCode::Forbidden,
            _ => ErrorCode::Unavailable,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The seed's numeric codes, carried as `details.jsonrpcCode` (§1.10.3).
pub mod jsonrpc {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    pub const AGENT_BUSY: i64 = -32000;
    pub const SESSION_NOT_FOUND: i64 = -32001;
    pub const AUTH_FAILED: i64 = -32002;
    pub const AGENT_TIMEOUT: i64 = -32003;
    pub const NOT_LINKED: i64 = -32004;
}

/// A protocol error: what a handler returns and what the client receives.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
    /// Always holds `jsonrpcCode`; other keys as upstream sends them.
    pub details: Map<String, Value>,
    pub retryable: Option<bool>,
    pub retry_after_ms: Option<u64>,
}

/// The error object exactly as it goes on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorShape {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl RpcError {
    pub fn new(code: ErrorCode, jsonrpc_code: i64, message: impl Into<String>) -> Self {
        let mut details = Map::new();
        details.insert("jsonrpcCode".into(), Value::from(jsonrpc_code));
        RpcError {
            code,
            message: message.into(),
            details,
            retryable: None,
            retry_after_ms: None,
        }
    }

    /// A frame that is not a valid request (`invalid request frame: …`).
    pub fn invalid_frame(detail: &str) -> Self {
        Self::new(
            ErrorCode::InvalidRequest,
            jsonrpc::INVALID_REQUEST,
            format!("invalid request frame: {detail}"),
        )
    }

    /// Any other malformed-request error (-32600).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, jsonrpc::INVALID_REQUEST, message)
    }

    /// `unknown method: <name>` (-32601).
    pub fn unknown_method(method: &str) -> Self {
        Self::new(
            ErrorCode::InvalidRequest,
            jsonrpc::METHOD_NOT_FOUND,
            format!("unknown method: {method}"),
        )
    }

    /// `invalid <method> params: <detail>` (-32602).
    pub fn invalid_params(method: &str, detail: &str) -> Self {
        Self::new(
            ErrorCode::InvalidRequest,
            jsonrpc::INVALID_PARAMS,
            format!("invalid {method} params: {detail}"),
        )
    }

    /// A semantic parameter rejection such as `unknown agent id` (-32602).
    pub fn bad_params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, jsonrpc::INVALID_PARAMS, message)
    }

    /// Authentication or authorization failure (-32002).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, jsonrpc::AUTH_FAILED, message)
    }

    /// `NOT_PAIRED` (-32002).
    pub fn not_paired(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotPaired, jsonrpc::AUTH_FAILED, message)
    }

    /// A backend failed or is missing (-32603).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, jsonrpc::INTERNAL_ERROR, message)
    }

    /// The seed's Agent Busy (-32000): the session cannot take this now (§1.10.3).
    pub fn agent_busy(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self::new(ErrorCode::Unavailable, jsonrpc::AGENT_BUSY, message)
            .with_detail("reason", "agent_busy")
            .retryable(Some(retry_after_ms))
    }

    /// The seed's Session Not Found (-32001), e.g. `session not found` of `chat.inject`.
    pub fn session_not_found(message: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::InvalidRequest,
            jsonrpc::SESSION_NOT_FOUND,
            message,
        )
    }

    /// A catalog method whose capability has not been built yet. Never fake data.
    pub fn not_implemented(method: &str) -> Self {
        Self::unavailable(format!(
            "{method} is not implemented yet in this Argent cluster release"
        ))
        .with_detail("reason", "not_implemented")
    }

    /// Adds or replaces one key of `details`.
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// The same error under another top-level code (v4's `FORBIDDEN`).
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }

    /// Marks the error as worth retrying, after `after_ms` when given.
    pub fn retryable(mut self, after_ms: Option<u64>) -> Self {
        self.retryable = Some(true);
        self.retry_after_ms = after_ms;
        self
    }

    /// The `details.jsonrpcCode` this error carries.
    pub fn jsonrpc_code(&self) -> i64 {
        self.details
            .get("jsonrpcCode")
            .and_then(Value::as_i64)
            .unwrap_or(jsonrpc::INTERNAL_ERROR)
    }

    pub fn to_shape(&self) -> ErrorShape {
        ErrorShape {
            code: self.code.as_str().to_string(),
            message: self.message.clone(),
            details: Some(Value::Object(self.details.clone())),
            retryable: self.retryable,
            retry_after_ms: self.retry_after_ms,
        }
    }

    /// Rebuilds an error received from elsewhere (a node's gRPC reply), keeping its details.
    pub fn from_parts(
        code: &str,
        message: String,
        details: Option<Map<String, Value>>,
        retryable: Option<bool>,
        retry_after_ms: Option<u64>,
    ) -> Self {
        let code = ErrorCode::parse(code);
        let default_rpc = match code {
            ErrorCode::InvalidRequest => jsonrpc::INVALID_REQUEST,
            ErrorCode::NotPaired | ErrorCode::Forbidden => jsonrpc::AUTH_FAILED,
            ErrorCode::AgentTimeout => jsonrpc::AGENT_TIMEOUT,
            ErrorCode::NotLinked => jsonrpc::NOT_LINKED,
            ErrorCode::Unavailable => jsonrpc::INTERNAL_ERROR,
        };
        let mut err = RpcError::new(code, default_rpc, message);
        if let Some(details) = details {
            err.details.extend(details);
        }
        err.retryable = retryable;
        err.retry_after_ms = retry_after_ms;
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_carries_string_code_and_jsonrpc_number() {
        let shape = RpcError::invalid_params("chat.send", "at root: x").to_shape();
        let json = serde_json::to_value(&shape).unwrap();
        assert_eq!(json["code"], "INVALID_REQUEST");
        assert_eq!(json["message"], "invalid chat.send params: at root: x");
        assert_eq!(json["details"]["jsonrpcCode"], -32602);
        assert!(json.get("retryable").is_none(), "absent fields are omitted");
    }

    #[test]
    fn quirky_codes_map_to_real_ones() {
        assert_eq!(ErrorCode::parse("INTERNAL_ERROR"), ErrorCode::Unavailable);
        assert_eq!(
            ErrorCode::parse("INVALID_PARAMS"),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn retryable_unavailable() {
        let e = RpcError::unavailable("no node").retryable(Some(500));
        let json = serde_json::to_value(e.to_shape()).unwrap();
        assert_eq!(json["retryable"], true);
        assert_eq!(json["retryAfterMs"], 500);
        assert_eq!(json["details"]["jsonrpcCode"], -32603);
    }
}
