//! What the node-agent's services (runtime, scheduler, workspace, config) fail with. Each
//! kind says what went wrong, so callers `match` it instead of reading a message back; the
//! wire shape of each kind is decided in one place, [`crate::respond`].

use argent_planes::state::StateError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// The state plane or the transcript log failed (unreachable, a lost race, …).
    #[error(transparent)]
    State(#[from] StateError),
    /// A stored record cannot be read (what, and why).
    #[error("{0}")]
    Unreadable(String),
    /// Another writer keeps changing the record; a retry (after `retry_after_ms`) may pass.
    #[error("{message}")]
    Contended {
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// The session cannot take this now (a turn holds it, or its queue is full).
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_ms: u64,
    },
    /// No model provider can run the agent's turn (how to configure one).
    #[error("{0}")]
    NoProvider(String),
    /// A model provider failed (or none could run) where the operation needed one.
    #[error("{0}")]
    ProviderFailed(String),
    /// The session does not exist (or has no transcript yet).
    #[error("{0}")]
    SessionNotFound(String),
    /// The caller's input is invalid; `detail` names the path (`at /schedule/kind: …`).
    #[error("invalid {method} params: {detail}")]
    InvalidInput { method: String, detail: String },
    /// A cron job id that does not exist.
    #[error("Error: unknown cron job id: {0}")]
    UnknownJob(String),
    /// The acting agent may not do this (knowledge collection access): said as it is,
    /// `INVALID_REQUEST`.
    #[error("{0}")]
    Denied(String),
    /// Valid input that breaks a rule of the operation (e.g. a payload the target refuses).
    #[error("Error: {0}")]
    Refused(String),
}

impl ServiceError {
    pub fn invalid(method: &str, detail: impl Into<String>) -> Self {
        ServiceError::InvalidInput {
            method: method.to_string(),
            detail: detail.into(),
        }
    }
}
