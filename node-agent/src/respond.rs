//! The one place where a node-agent error becomes a wire error (PROTOCOL.md §1.6, §1.10).
//! Method adapters return [`RpcError`]; `?` on a service call converts through here.

use argent_planes::state::StateError;
use argent_proto::errors::RpcError;

use crate::channels::platform::ChannelError;
use crate::error::ServiceError;
use crate::runtime::providers::ProviderError;
use crate::tts::TtsError;

/// How long a client should wait before retrying after a passing state-plane failure.
const STATE_RETRY_AFTER_MS: u64 = 1000;

impl From<ServiceError> for RpcError {
    fn from(err: ServiceError) -> Self {
        let message = err.to_string();
        match err {
            // ARCHITECTURE.md failure model: state methods fail fast with a retryable
            // `UNAVAILABLE` while NATS is gone, or when another writer won a race.
            ServiceError::State(StateError::Unavailable(_) | StateError::WrongRevision) => {
                RpcError::unavailable(message).retryable(Some(STATE_RETRY_AFTER_MS))
            }
            // A name built from the caller's input that the store cannot hold: the caller's
            // mistake, said without the store's key layout.
            ServiceError::State(StateError::InvalidKey(_)) => {
                RpcError::bad_params(argent_proto::params::INVALID_ID)
            }
            // Too large to store: the caller's to shrink, never retryable.
            ServiceError::State(StateError::TooLarge { .. }) => RpcError::bad_params(message),
            ServiceError::State(_)
            | ServiceError::Unreadable(_)
            | ServiceError::UnknownJob(_)
            | ServiceError::ProviderFailed(_)
            | ServiceError::Refused(_) => RpcError::unavailable(message),
            ServiceError::Contended {
                retry_after_ms: Some(after),
                ..
            } => RpcError::unavailable(message).retryable(Some(after)),
            ServiceError::Contended { .. } => RpcError::unavailable(message),
            ServiceError::Busy { retry_after_ms, .. } => {
                RpcError::agent_busy(message, retry_after_ms)
            }
            ServiceError::NoProvider(_) => {
                RpcError::unavailable(message).with_detail("reason", "no_model_provider")
            }
            ServiceError::SessionNotFound(_) => RpcError::session_not_found(message),
            ServiceError::Denied(_) => RpcError::invalid_request(message),
            ServiceError::InvalidInput { method, detail } => {
                RpcError::invalid_params(&method, &detail)
            }
        }
    }
}

/// Speech: every failure is `UNAVAILABLE` as upstream answers it (§5.11), too long a text
/// included; a busy node says when to retry.
impl From<TtsError> for RpcError {
    fn from(err: TtsError) -> Self {
        match err {
            TtsError::TooLong { .. } | TtsError::Failed(_) => {
                RpcError::unavailable(err.to_string())
            }
            TtsError::Busy => RpcError::unavailable(err.to_string()).retryable(Some(1000)),
            TtsError::State(err) => state(err),
        }
    }
}

/// Channels (§5.9): what the caller can fix is `INVALID_REQUEST` (an unknown channel as
/// upstream words it, a target the platform cannot address, an account not configured);
/// a platform that did not take the message is `UNAVAILABLE`.
impl From<ChannelError> for RpcError {
    fn from(err: ChannelError) -> Self {
        let message = err.to_string();
        match err {
            ChannelError::Unsupported(_)
            | ChannelError::NotConfigured(_)
            | ChannelError::BadTarget(_)
            | ChannelError::Malformed(_) => RpcError::invalid_request(message),
            ChannelError::Delivery(_) | ChannelError::Unknown(_) | ChannelError::Forbidden(_) => {
                RpcError::unavailable(message)
            }
            ChannelError::State(err) => state(err),
        }
    }
}

/// A model provider that cannot be used (its configuration), met by a method adapter.
pub fn provider(err: ProviderError) -> RpcError {
    ServiceError::ProviderFailed(err.to_string()).into()
}

/// A state-plane failure met directly by a method adapter.
pub fn state(err: StateError) -> RpcError {
    ServiceError::from(err).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_wire_shape() {
        let busy = RpcError::from(ServiceError::Busy {
            message: "agent busy".into(),
            retry_after_ms: 2000,
        });
        assert_eq!(
            (busy.jsonrpc_code(), busy.retry_after_ms),
            (-32000, Some(2000))
        );
        let gone = state(StateError::Unavailable("nats down".into()));
        assert_eq!(gone.retryable, Some(true));
        assert_eq!(gone.message, "state store unavailable: nats down");
        let invalid = RpcError::from(ServiceError::invalid("cron.add", "at /name: x"));
        assert_eq!(invalid.message, "invalid cron.add params: at /name: x");
        assert_eq!(invalid.jsonrpc_code(), -32602);
        let no_model = RpcError::from(ServiceError::NoProvider("configure one".into()));
        assert_eq!(no_model.details["reason"], "no_model_provider");
        let job = RpcError::from(ServiceError::UnknownJob("j1".into()));
        assert_eq!(job.message, "Error: unknown cron job id: j1");
    }
}
