//! The shared config document (PROTOCOL.md §5.3): `config::parse` (JSON5) then
//! `config::validate` on arbitrary text, and the snapshot every component reads settings
//! from (`SharedConfig::from_document`).
//!
//! Why: `config.set` / `config.patch` / `config.apply` parse text an admin client sends, and
//! every gateway and node-agent re-reads the stored document on each change; a document
//! that validates on one side and not the other, or a snapshot accessor that panics, takes
//! the cluster's settings down. Checked, beyond "no panic":
//! * a parse error has a message; what parses, written back as JSON, parses (as JSON5 and
//!   as strict JSON) to the same document;
//! * a document that validates still validates after that JSON round trip, and so does its
//!   typed form serialized (what `validate` returns is itself a valid config); a refused one
//!   has at least one issue, each with a message (`config.set` reports `issues[0]`), and a
//!   non-object gets exactly the documented root issue;
//! * the snapshot reports the same problems as `validate`, and answers every accessor for
//!   any document: a tick interval inside 1000…3600000 when the document is valid, a
//!   normalised Control UI base path, an agent list that is never empty, holds its default
//!   and has unique, trimmed, lower-case ids, heartbeat intervals that are never zero;
//! * `hash` is the 64-hex SHA-256 of the raw text.
//!
//! JSON5 nesting recurses: a text nesting deeper than 64 levels is parsed on a thread with
//! a tokio worker's 2 MiB stack, where the gateway's request handlers run.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use argent_fuzz::{json_eq, nesting_depth, on_worker_stack, value_depth};
use argent_proto::config::{self, Issue, SharedConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if nesting_depth(text) > 64 {
        on_worker_stack(text, check);
    } else {
        check(text);
    }
});

fn check(text: &str) {
    let hash = config::hash(text);
    assert!(hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));

    let doc = match config::parse(text) {
        Ok(doc) => doc,
        Err(message) => {
            assert!(
                !message.trim().is_empty(),
                "a parse error without a message"
            );
            return;
        }
    };

    // Written back as JSON (what `config.set` stores once secrets were restored), the same.
    let json_text = serde_json::to_string(&doc).expect("values serialize");
    let reparsed = config::parse(&json_text).expect("JSON is JSON5");
    assert!(json_eq(&reparsed, &doc), "{json_text}");
    if value_depth(&doc) < 100 {
        let strict: Value = serde_json::from_str(&json_text).expect("our JSON is JSON");
        assert!(json_eq(&strict, &doc), "{json_text}");
    }

    let verdict = config::validate(&doc);
    let snapshot = SharedConfig::from_document(doc.clone());
    match &verdict {
        Ok(typed) => {
            assert!(snapshot.problems().is_empty());
            assert!(
                config::validate(&reparsed).is_ok(),
                "valid, but not after a JSON round trip: {json_text}"
            );
            let typed_json = serde_json::to_value(typed).expect("typed configs serialize");
            if let Err(issues) = config::validate(&typed_json) {
                panic!("the typed form of a valid config is refused: {issues:?} in {typed_json}");
            }
            if let Some(ms) = snapshot.tick_interval_ms() {
                assert!((1_000..=3_600_000).contains(&ms), "{ms}");
            }
            let mut ids: Vec<String> = typed
                .agents
                .iter()
                .flat_map(|a| a.list.iter().flatten())
                .map(|agent| agent.id.trim().to_ascii_lowercase())
                .collect();
            assert!(ids.iter().all(|id| !id.is_empty()));
            let count = ids.len();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), count, "duplicate agent ids in a valid config");
        }
        Err(issues) => {
            assert!(!issues.is_empty(), "refused without an issue");
            for issue in issues {
                assert!(!issue.message.trim().is_empty(), "{issue:?}");
            }
            assert_eq!(snapshot.problems(), issues.as_slice());
            if !doc.is_object() {
                let root = Issue {
                    path: String::new(),
                    message: "the config must be an object".into(),
                };
                assert_eq!(issues, &vec![root]);
            }
        }
    }
    check_snapshot(&snapshot);
}

/// Every accessor answers, valid document or not, within what it promises.
fn check_snapshot(snapshot: &SharedConfig) {
    let ui = snapshot.control_ui();
    let base = ui.base_path.as_str();
    assert!(
        base.is_empty() || (base.len() > 1 && base.starts_with('/') && !base.ends_with('/')),
        "{base:?}"
    );
    let _ = (
        snapshot.cron_enabled(),
        snapshot.cron_catch_up(),
        snapshot.heartbeat_prompt(),
        snapshot.providers(),
        snapshot.document(),
    );

    let agents = snapshot.agents();
    assert!(!agents.agents.is_empty(), "no agent at all");
    assert!(
        agents.get(&agents.default_id).is_some(),
        "the default agent is not listed"
    );
    assert!(!agents.main_key.is_empty() && !agents.scope.is_empty());
    let mut ids: Vec<&str> = agents.agents.iter().map(|a| a.id.as_str()).collect();
    for id in &ids {
        assert!(
            !id.is_empty() && *id == id.trim() && *id == id.to_ascii_lowercase(),
            "{id:?}"
        );
    }
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate agent ids");

    for agent in &agents.agents {
        if let Some(every) = snapshot.heartbeat_every(&agent.id) {
            assert!(!every.is_zero());
        }
        let _ = snapshot.execution_worker(&agent.id);
    }
}
