//! How transcript messages are shown to protocol-4 clients (PROTOCOL-v4.md §9): each with a
//! stable id and its position (`__openclaw: {id, seq}`), text blocks cut at a `maxChars`
//! with the mark the Control UI expands through `chat.message.get`.
//!
//! Ids are derived, not stored: a message's own `id` (injected messages have one), else the
//! digest of its stored JSON. So one message has one id on every node and after a compaction
//! that keeps it, transcripts written before ids existed have them too, and the stored form,
//! which protocol-3 clients read unchanged, stays as it was. Two messages with the same id
//! are the same JSON (same text, same millisecond), so either answers for it.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use argent_proto::version::{MessageView, TRUNCATED_MARK};

/// Key upstream clients read a message's id and position from.
pub const MARK_KEY: &str = "__openclaw";

/// The id of a stored message.
pub fn message_id(message: &Value) -> String {
    if let Some(id) = message
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
    {
        return id.to_string();
    }
    let digest = Sha256::digest(serde_json::to_vec(message).expect("JSON values serialize"));
    hex::encode(&digest[..16])
}

/// The v4 view of a stored message; `seq` is its 1-based position in the transcript, when
/// known.
pub fn project(mut message: Value, seq: Option<usize>, view: MessageView) -> Value {
    let mut mark = json!({"id": message_id(&message)});
    if let Some(seq) = seq {
        mark["seq"] = json!(seq);
    }
    // Upstream repeats the sending request's key in the mark, where clients look first.
    if let Some(key) = message.get("idempotencyKey").filter(|k| k.is_string()) {
        mark["idempotencyKey"] = key.clone();
    }
    cut_text(&mut message, view.max_chars);
    if let Some(object) = message.as_object_mut() {
        object.insert(MARK_KEY.into(), mark);
    }
    message
}

/// Cuts every text block (or a plain-string content) to `max_chars` characters.
fn cut_text(message: &mut Value, max_chars: usize) {
    match message.get_mut("content") {
        Some(Value::String(text)) => cut(text, max_chars),
        Some(Value::Array(parts)) => {
            for part in parts.iter_mut().filter(|p| p["type"] == "text") {
                if let Some(Value::String(text)) = part.get_mut("text") {
                    cut(text, max_chars);
                }
            }
        }
        _ => {}
    }
}

fn cut(text: &mut String, max_chars: usize) {
    if let Some((end, _)) = text.char_indices().nth(max_chars) {
        text.truncate(end);
        text.push_str(TRUNCATED_MARK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_prefer_the_stored_one() {
        let a =
            json!({"role": "user", "content": [{"type": "text", "text": "hi"}], "timestamp": 1});
        // Same JSON, read back from storage: same id.
        let again: Value = serde_json::from_slice(&serde_json::to_vec(&a).unwrap()).unwrap();
        assert_eq!(message_id(&a), message_id(&again));
        assert_eq!(message_id(&a).len(), 32);
        let b =
            json!({"role": "user", "content": [{"type": "text", "text": "hi"}], "timestamp": 2});
        assert_ne!(message_id(&a), message_id(&b));
        assert_eq!(
            message_id(&json!({"id": "inj-1", "role": "assistant"})),
            "inj-1"
        );
    }

    #[test]
    fn text_is_cut_on_a_character_boundary_and_marked() {
        let stored = json!({"role": "assistant", "timestamp": 5, "content": [
            {"type": "text", "text": "héllo wörld"},
            {"type": "toolCall", "id": "t", "arguments": "x".repeat(50)},
        ]});
        let shown = project(stored.clone(), Some(3), MessageView { max_chars: 4 });
        assert_eq!(shown["content"][0]["text"], format!("héll{TRUNCATED_MARK}"));
        assert_eq!(
            shown["content"][1], stored["content"][1],
            "only text is cut"
        );
        assert_eq!(
            shown[MARK_KEY],
            json!({"id": message_id(&stored), "seq": 3})
        );
        let whole = project(stored.clone(), None, MessageView { max_chars: 11 });
        assert_eq!(whole["content"][0]["text"], "héllo wörld");
        assert_eq!(whole[MARK_KEY], json!({"id": message_id(&stored)}));
        let plain = project(
            json!({"content": "abcdef"}),
            None,
            MessageView { max_chars: 2 },
        );
        assert_eq!(plain["content"], format!("ab{TRUNCATED_MARK}"));
    }
}
