//! The protocol-4 `chat` delta stream (PROTOCOL-v4.md §8.2).
//!
//! Node-agents publish `chat` deltas with the cumulative text in `message` (the v3 form).
//! For v4 connections each delta also carries `deltaText`: the suffix since the run's
//! previous delta, or the whole text with `replace:true` when it is not a continuation.
//! The gateway remembers the last text of each live run and encodes the v4 variants once
//! per event; a connection that is not in step with a run (it joined late, or missed a
//! delta because it was slow) gets the `replace:true` variant instead of a suffix.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use serde_json::Value;

use argent_proto::frames::EncodedEvent;

/// Live runs remembered at once; forgetting one only makes its next delta a `replace`.
const MAX_RUNS: usize = 4096;

/// What v4 connections get for one `chat` event.
pub enum V4Chat {
    Delta(V4Delta),
    /// The run ended (`final`, `aborted`, `error`): the v3 frame, then forget the run.
    End(Arc<str>),
}

/// One v4 `chat` delta, in its variants.
pub struct V4Delta {
    pub run_id: Arc<str>,
    /// For connections in step with the run: the suffix variant, or `None` when nothing
    /// was added (nothing to send). Unset when the text is not a continuation.
    step: Option<Option<Arc<EncodedEvent>>>,
    payload: Value,
    text: String,
    droppable: bool,
    /// `deltaText` = the whole text, `replace:true`: encoded when first needed.
    full: OnceLock<Arc<EncodedEvent>>,
}

impl V4Delta {
    /// The frame for a connection (`in_step`: it got this run's previous delta), or
    /// `None` when there is nothing new for it.
    pub fn frame_for(&self, in_step: bool) -> Option<Arc<EncodedEvent>> {
        match (&self.step, in_step) {
            (Some(step), true) => step.clone(),
            _ => Some(self.full().clone()),
        }
    }

    fn full(&self) -> &Arc<EncodedEvent> {
        self.full.get_or_init(|| {
            let mut payload = self.payload.clone();
            payload["deltaText"] = Value::from(self.text.as_str());
            payload["replace"] = Value::Bool(true);
            encode(&payload, self.droppable)
        })
    }
}

fn encode(payload: &Value, droppable: bool) -> Arc<EncodedEvent> {
    Arc::new(EncodedEvent::from_value("chat", payload, None).with_droppable(droppable))
}

/// The assistant text of a `chat` payload's `message` (its text parts, joined).
fn message_text(payload: &Value) -> String {
    match &payload["message"]["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

/// The last delta text of each live run, as this gateway delivered it.
#[derive(Default)]
pub struct DeltaTexts {
    last: Mutex<HashMap<Arc<str>, String>>,
}

impl DeltaTexts {
    /// Forgets every run: with no v4 connection here nobody is in step with any of them.
    pub fn clear(&self) {
        let mut last = self.last.lock();
        if !last.is_empty() {
            last.clear();
        }
    }

    /// The v4 view of a `chat` event (its JSON text), or `None` when v4 connections get it
    /// unchanged.
    pub fn observe(&self, payload_json: &str, droppable: bool) -> Option<V4Chat> {
        let payload: Value = serde_json::from_str(payload_json).ok()?;
        let run_id: Arc<str> = Arc::from(payload["runId"].as_str()?);
        match payload["state"].as_str()? {
            "delta" => {}
            "final" | "aborted" | "error" => {
                self.last.lock().remove(&run_id);
                return Some(V4Chat::End(run_id));
            }
            _ => return None,
        }
        let text = message_text(&payload);
        let previous = {
            let mut last = self.last.lock();
            if last.len() >= MAX_RUNS && !last.contains_key(&run_id) {
                let evicted = last.keys().next().cloned();
                if let Some(key) = evicted {
                    last.remove(&key);
                }
            }
            last.insert(run_id.clone(), text.clone())
        };
        // Rule 2 of §8.2: a continuation sends only what was added (nothing if nothing was).
        let step = previous
            .as_deref()
            .and_then(|prev| text.strip_prefix(prev))
            .map(|added| {
                (!added.is_empty()).then(|| {
                    let mut payload = payload.clone();
                    payload["deltaText"] = Value::from(added);
                    encode(&payload, droppable)
                })
            });
        Some(V4Chat::Delta(V4Delta {
            run_id,
            step,
            payload,
            text,
            droppable,
            full: OnceLock::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn delta(run: &str, text: &str) -> String {
        json!({"runId": run, "sessionKey": "agent:main:main", "seq": 1, "state": "delta",
               "message": {"role": "assistant", "content": [{"type": "text", "text": text}], "timestamp": 1}})
        .to_string()
    }

    fn payload(frame: Option<Arc<EncodedEvent>>) -> Option<Value> {
        frame.map(|f| serde_json::from_str::<Value>(&f.frame(None)).unwrap()["payload"].clone())
    }

    fn as_delta(chat: Option<V4Chat>) -> V4Delta {
        match chat {
            Some(V4Chat::Delta(d)) => d,
            _ => panic!("not a delta"),
        }
    }

    #[test]
    fn suffixes_replacements_and_catch_up() {
        let texts = DeltaTexts::default();
        let first = as_delta(texts.observe(&delta("r", "Hel"), true));
        let p = payload(first.frame_for(true)).unwrap();
        assert_eq!(
            (p["deltaText"].as_str(), p["replace"].as_bool()),
            (Some("Hel"), Some(true))
        );
        assert_eq!(
            p["message"]["content"][0]["text"], "Hel",
            "message stays cumulative"
        );

        let next = as_delta(texts.observe(&delta("r", "Hello wor"), true));
        let p = payload(next.frame_for(true)).unwrap();
        assert_eq!(p["deltaText"], "lo wor");
        assert!(p.get("replace").is_none());
        // A connection that missed the previous delta gets the whole text.
        let p = payload(next.frame_for(false)).unwrap();
        assert_eq!(
            (p["deltaText"].as_str(), p["replace"].as_bool()),
            (Some("Hello wor"), Some(true))
        );

        let same = as_delta(texts.observe(&delta("r", "Hello wor"), true));
        assert!(
            same.frame_for(true).is_none(),
            "nothing added, nothing sent"
        );
        assert!(same.frame_for(false).is_some());

        let rewrite = as_delta(texts.observe(&delta("r", "Hi there"), true));
        let p = payload(rewrite.frame_for(true)).unwrap();
        assert_eq!(
            (p["deltaText"].as_str(), p["replace"].as_bool()),
            (Some("Hi there"), Some(true))
        );

        let end = json!({"runId": "r", "sessionKey": "s", "seq": 9, "state": "final"}).to_string();
        assert!(matches!(texts.observe(&end, false), Some(V4Chat::End(_))));
        assert!(texts.last.lock().is_empty());
    }
}
