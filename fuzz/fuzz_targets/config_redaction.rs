//! Secrets in the shared config: `config::redacted` (what protocol-4 readers get from
//! `config.get`) and `config::restore_redacted` (what `config.set`/`config.apply` do with
//! the markers a Control UI sends back), on any document `config::parse` accepts.
//!
//! Why: the contract is "a UI that saves the document it was shown keeps the secrets it
//! never saw" (proto/src/config.rs) — if the round trip fails, saving an unchanged config
//! from the Control UI is refused, or worse, silently stores one entry's secret in
//! another's place. Checked, beyond "no panic":
//! * the masked document has the document's exact shape: same keys, same array lengths,
//!   every non-string value unchanged, every string either unchanged or the marker;
//! * every value the documented sensitive settings name (`config::ui_hints()` entries with
//!   `sensitive: true`: the gateway token and password, provider API keys) is masked;
//! * masking twice changes nothing;
//! * restoring the masked document against the stored one gives back the stored document,
//!   exactly;
//! * a marker where nothing is stored is refused, naming its path.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

use argent_fuzz::nesting_depth;
use argent_proto::config::{self, REDACTED};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Deep nesting is the `config` target's subject.
    if nesting_depth(text) > 64 {
        return;
    }
    let Ok(doc) = config::parse(text) else {
        return;
    };

    let masked = config::redacted(&doc);
    same_shape(&doc, &masked, "");
    for (path, hint) in config::ui_hints().as_object().expect("hints are an object") {
        if hint["sensitive"] == true {
            let segments: Vec<&str> = path.split('.').collect();
            sensitive_masked(&doc, &masked, &segments, path);
        }
    }
    assert_eq!(
        config::redacted(&masked),
        masked,
        "masking is not idempotent"
    );

    let mut back = masked.clone();
    if let Err(path) = config::restore_redacted(&mut back, &doc) {
        panic!("the document a reader was shown cannot be saved back: marker at {path}");
    }
    assert_eq!(
        back, doc,
        "restoring the markers did not give the stored document back"
    );

    // A marker where nothing is stored names its path.
    if doc
        .pointer("/gateway/auth/token")
        .is_none_or(Value::is_null)
    {
        let mut orphan = json!({"gateway": {"auth": {"token": REDACTED}}});
        assert_eq!(
            config::restore_redacted(&mut orphan, &doc),
            Err("gateway.auth.token".to_string())
        );
    }
});

/// Same keys, same lengths, same non-string values; strings kept or masked.
fn same_shape(doc: &Value, masked: &Value, at: &str) {
    match (doc, masked) {
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.len(), b.len(), "keys changed at {at:?}");
            for (key, value) in a {
                let inner = b.get(key).unwrap_or_else(|| panic!("{key} lost at {at:?}"));
                same_shape(value, inner, &format!("{at}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "length changed at {at:?}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                same_shape(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::String(a), Value::String(b)) => {
            assert!(b == a || b == REDACTED, "{a:?} became {b:?} at {at:?}");
        }
        (a, b) => assert_eq!(a, b, "changed at {at:?}"),
    }
}

/// Every string under a sensitive hint path (`*`: any key or element) is the marker.
fn sensitive_masked(doc: &Value, masked: &Value, path: &[&str], hint: &str) {
    let Some((first, rest)) = path.split_first() else {
        if let Value::String(_) = doc {
            assert_eq!(masked, REDACTED, "{hint} is shown");
        }
        return;
    };
    match (doc, masked, *first) {
        (Value::Object(a), Value::Object(b), "*") => {
            for (key, value) in a {
                if let Some(inner) = b.get(key) {
                    sensitive_masked(value, inner, rest, hint);
                }
            }
        }
        (Value::Array(a), Value::Array(b), "*") => {
            for (x, y) in a.iter().zip(b) {
                sensitive_masked(x, y, rest, hint);
            }
        }
        (Value::Object(a), Value::Object(b), key) => {
            if let (Some(x), Some(y)) = (a.get(key), b.get(key)) {
                sensitive_masked(x, y, rest, hint);
            }
        }
        _ => {}
    }
}
