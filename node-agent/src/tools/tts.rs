//! `tts`: the agent speaks a text into an audio file (upstream's tool: the model gets a
//! `MEDIA:<path>` line to copy into its reply; `[[audio_as_voice]]` first when the audio is a
//! voice note). The person gets the audio itself, as an attachment of the tool's result.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::{text_arg, Tool};
use crate::runtime::providers::ToolSpec;
use crate::runtime::tools::ToolOutcome;
use crate::runtime::Runtime;
use crate::tts::Speech;

/// Audio larger than this stays on the node-agent's disk only (a transcript entry and an
/// event frame are no place for minutes of audio); the client then has `tts.convert`.
const MAX_ATTACHED_BYTES: usize = 512 * 1024;

pub struct Speak(pub Arc<Speech>);

fn mime_type(format: &str) -> &'static str {
    match format {
        f if f.starts_with("mp3") => "audio/mpeg",
        f if f.starts_with("opus") => "audio/ogg; codecs=opus",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        _ => "application/octet-stream",
    }
}

#[async_trait]
impl Tool for Speak {
    fn name(&self) -> &'static str {
        "tts"
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name(),
            description: "Convert text to speech and return a MEDIA: path. Use when the user requests audio or TTS is enabled. Copy the MEDIA line exactly.",
            schema: json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 1, "description": "Text to convert to speech."},
                    "channel": {"type": "string", "description": "Optional channel id to pick output format (e.g. telegram)."}
                },
                "required": ["text"]
            }),
        }
    }

    async fn run(&self, rt: &Runtime, _agent_id: &str, args: &Value) -> ToolOutcome {
        let Some(text) = text_arg(args, "text")
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return ToolOutcome::failed("text required");
        };
        let config = match rt.config.current().await {
            Ok(config) => config.tts(),
            Err(err) => return ToolOutcome::failed(err.to_string()),
        };
        let channel = text_arg(args, "channel");
        let done = match self.0.convert(&config, text, channel, &Map::new()).await {
            Ok(done) => done,
            Err(err) => return ToolOutcome::failed(err.to_string()),
        };
        let mut lines = Vec::new();
        if done.voice_compatible {
            lines.push("[[audio_as_voice]]".to_string());
        }
        lines.push(format!("MEDIA:{}", done.audio_path.display()));
        let mut outcome = ToolOutcome::done(lines.join("\n"));
        if done.audio.len() <= MAX_ATTACHED_BYTES {
            outcome.attachments.push(json!({
                "type": "audio",
                "mimeType": mime_type(&done.output_format),
                "format": done.output_format,
                "provider": done.provider,
                "data": base64::engine::general_purpose::STANDARD.encode(&done.audio),
            }));
        }
        outcome
    }
}
