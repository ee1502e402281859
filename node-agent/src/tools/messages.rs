//! `send_message`: the agent sends a message on a chat channel (the `send` method's path:
//! the account's platform, the idempotency record, the transcript mirror).

use std::sync::{OnceLock, Weak};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{text_arg, Tool};
use crate::channels::outbound::{self, SendRequest};
use crate::channels::Channels;
use crate::runtime::providers::ToolSpec;
use crate::runtime::tools::ToolOutcome;
use crate::runtime::Runtime;

/// The channel service starts after the runtime it drives (which holds this tool): the
/// worker hands it in once it runs. Weak, so the service and the runtime do not keep each
/// other alive.
pub type ChannelsSlot = std::sync::Arc<OnceLock<Weak<Channels>>>;

pub struct SendMessage(pub ChannelsSlot);

#[async_trait]
impl Tool for SendMessage {
    fn name(&self) -> &'static str {
        "send_message"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name(),
            description: "Send a message to someone on a chat channel (telegram, whatsapp, slack, discord, signal, webhook). Only when asked to message someone; a reply to the current chat needs no tool.",
            schema: json!({
                "type": "object",
                "properties": {
                    "to": {"type": "string", "minLength": 1, "description": "Recipient on the channel: chat id, phone number, channel id."},
                    "message": {"type": "string", "minLength": 1},
                    "channel": {"type": "string", "description": "telegram, whatsapp (default), slack, discord, signal or webhook."},
                    "accountId": {"type": "string", "description": "The channel account, when there are several."}
                },
                "required": ["to", "message"]
            }),
        }
    }

    async fn run(&self, _rt: &Runtime, _agent_id: &str, args: &Value) -> ToolOutcome {
        let Some(channels) = self.0.get().and_then(Weak::upgrade) else {
            return ToolOutcome::failed("this node-agent runs no chat channels");
        };
        let arg = |key| {
            text_arg(args, key)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let (Some(to), Some(message)) = (arg("to"), arg("message")) else {
            return ToolOutcome::failed("to and message are required");
        };
        let request = SendRequest {
            to,
            message,
            idempotency_key: format!("tool-{}", uuid::Uuid::new_v4()),
            channel: arg("channel"),
            account_id: arg("accountId"),
            media_urls: Vec::new(),
            session_key: None,
        };
        match outbound::send(&channels, request).await {
            Ok(sent) => ToolOutcome::done(format!(
                "sent on {} (message id {})",
                sent["channel"].as_str().unwrap_or("?"),
                sent["messageId"].as_str().unwrap_or("?")
            )),
            Err(err) => ToolOutcome::failed(err.to_string()),
        }
    }
}
