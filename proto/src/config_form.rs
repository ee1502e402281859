//! The config's JSON Schema as the Control UI's settings forms read it (`config.schema`),
//! and `config.schema.lookup`'s walk over it.
//!
//! schemars writes draft 2020-12 with named types under `$defs`, optionals as
//! `anyOf: [X, {type: null}]` and free-form values as bare `true`/`{}`. The UI's form
//! renderer resolves none of that: it shows "Unsupported schema node" for a `$ref`, a nested
//! `anyOf`, or a node without a type. So the schema is rewritten once, here: references
//! inlined, nullability dropped (a setting left out is the null), and free-form values made
//! explicit JSON values (the form offers a JSON editor). Validation-only keywords the
//! renderer rejects are dropped; the server validates every write against the typed config.

use serde_json::{json, Map, Value};

/// Keywords the UI's renderer does not accept and that only validate.
const DROPPED: [&str; 8] = [
    "$defs",
    "definitions",
    "unevaluatedProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "dependentSchemas",
];

/// A value the config leaves free: any JSON.
fn any_json(description: Option<&Value>) -> Value {
    let mut node = json!({"anyOf": [
        {"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "object"},
        {"type": "array", "items": {}}
    ]});
    if let Some(description) = description {
        node["description"] = description.clone();
    }
    node
}

fn is_null_type(node: &Value) -> bool {
    node.get("type") == Some(&json!("null"))
}

/// Whether the renderer can tell what `node` holds.
fn has_shape(node: &Map<String, Value>) -> bool {
    [
        "type",
        "properties",
        "additionalProperties",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
    ]
    .iter()
    .any(|k| node.contains_key(*k))
}

/// The schema of `schemars::schema_for!` output rewritten for the form renderer.
pub fn form_schema(raw: &Value) -> Value {
    let defs = raw
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut root = rewrite(raw, &defs, 0);
    if let Some(object) = root.as_object_mut() {
        object.remove("$schema");
    }
    root
}

/// References deeper than this are a cycle (the config has none); they become any JSON.
const MAX_DEPTH: usize = 32;

fn rewrite(node: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    let Some(object) = node.as_object() else {
        // `true` (anything goes) or `false`.
        return match node {
            Value::Bool(true) => any_json(None),
            other => other.clone(),
        };
    };
    if depth > MAX_DEPTH {
        return any_json(object.get("description"));
    }
    let mut out = Map::new();
    // An inlined reference, under this node's own annotations.
    if let Some(target) = object
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
    {
        if let Value::Object(inlined) = rewrite(target, defs, depth + 1) {
            out.extend(inlined);
        }
    }
    for (key, value) in object {
        if key == "$ref" || DROPPED.contains(&key.as_str()) {
            continue;
        }
        let rewritten = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .map(|props| {
                        props
                            .iter()
                            .map(|(k, v)| (k.clone(), rewrite(v, defs, depth + 1)))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            "items" => rewrite(value, defs, depth + 1),
            "additionalProperties" if value.is_object() => rewrite(value, defs, depth + 1),
            "anyOf" | "oneOf" | "allOf" => Value::Array(
                value
                    .as_array()
                    .map(|variants| {
                        variants
                            .iter()
                            .filter(|v| !is_null_type(v))
                            .map(|v| rewrite(v, defs, depth + 1))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            "type" => match value {
                // `[T, "null"]` → `T`.
                Value::Array(types) => {
                    let kept: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                    match kept.as_slice() {
                        [one] => (*one).clone(),
                        _ => Value::Array(kept.into_iter().cloned().collect()),
                    }
                }
                other => other.clone(),
            },
            _ => value.clone(),
        };
        // Annotations of this node win over the inlined definition's.
        out.insert(key.clone(), rewritten);
    }
    collapse_compositions(&mut out);
    if !has_shape(&out) {
        return any_json(out.get("description"));
    }
    Value::Object(out)
}

/// `anyOf: [X]` (what is left of an optional) is `X`; `anyOf: [anyOf: […]]` is flat.
fn collapse_compositions(node: &mut Map<String, Value>) {
    for keyword in ["anyOf", "oneOf"] {
        let Some(Value::Array(variants)) = node.get(keyword) else {
            continue;
        };
        let flat: Vec<Value> = variants
            .iter()
            .flat_map(|v| match v.get(keyword).or_else(|| v.get("anyOf")) {
                Some(Value::Array(inner)) if v.as_object().is_some_and(|o| o.len() <= 2) => {
                    inner.clone()
                }
                _ => vec![v.clone()],
            })
            .collect();
        node.remove(keyword);
        match <[Value; 1]>::try_from(flat) {
            Ok([Value::Object(only)]) => {
                for (k, v) in only {
                    node.entry(k).or_insert(v);
                }
            }
            Ok([other]) => {
                node.insert(keyword.into(), Value::Array(vec![other]));
            }
            Err(flat) => {
                node.insert(keyword.into(), Value::Array(flat));
            }
        }
    }
}

/// `config.schema.lookup`: the node at a dotted `path` (`a.b`, `a.*`, `a[0]`, `.` for the
/// root) with its direct children; `None` when the schema does not describe it.
pub fn lookup(schema: &Value, hints: &Value, path: &str) -> Option<Value> {
    let normalized = path.replace("[]", ".*").replace('[', ".").replace(']', "");
    let segments: Vec<&str> = if normalized == "." {
        Vec::new()
    } else {
        normalized.split('.').filter(|s| !s.is_empty()).collect()
    };
    if segments.len() > 32
        || segments
            .iter()
            .any(|s| matches!(*s, "__proto__" | "prototype" | "constructor"))
    {
        return None;
    }
    let mut node = schema;
    for segment in &segments {
        node = child(node, segment)?;
    }
    let here = if segments.is_empty() {
        ".".to_string()
    } else {
        segments.join(".")
    };
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let prefix = |key: &str| {
        if segments.is_empty() {
            key.to_string()
        } else {
            format!("{here}.{key}")
        }
    };
    let mut children: Vec<Value> = node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            child_row(
                key,
                &prefix(key),
                value,
                required.contains(&key.as_str()),
                hints,
            )
        })
        .collect();
    let wildcard = node
        .get("additionalProperties")
        .filter(|a| a.is_object())
        .or_else(|| node.get("items"));
    if let Some(value) = wildcard {
        children.push(child_row("*", &prefix("*"), value, false, hints));
    }
    let mut out = json!({"path": here, "schema": stripped(node, 0), "children": children});
    if let Some(hint) = hint_for(hints, &here) {
        out["hint"] = hint.0;
        out["hintPath"] = json!(hint.1);
    }
    Some(out)
}

fn child<'a>(node: &'a Value, segment: &str) -> Option<&'a Value> {
    if let Some(found) = node.get("properties").and_then(|p| p.get(segment)) {
        return Some(found);
    }
    if segment == "*" || segment.parse::<usize>().is_ok() {
        if let Some(items) = node.get("items") {
            return Some(items);
        }
    }
    for keyword in ["anyOf", "oneOf", "allOf"] {
        if let Some(found) = node
            .get(keyword)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|v| child(v, segment))
        {
            return Some(found);
        }
    }
    node.get("additionalProperties").filter(|a| a.is_object())
}

fn child_row(key: &str, path: &str, value: &Value, required: bool, hints: &Value) -> Value {
    let has_children = value.get("properties").is_some()
        || value.get("items").is_some()
        || value
            .get("additionalProperties")
            .is_some_and(Value::is_object);
    let mut row =
        json!({"key": key, "path": path, "required": required, "hasChildren": has_children});
    if let Some(kind) = value.get("type") {
        row["type"] = kind.clone();
    }
    if let Some((hint, hint_path)) = hint_for(hints, path) {
        row["hint"] = hint;
        row["hintPath"] = json!(hint_path);
    }
    row
}

/// The hint of `path`, exact or through a `*` wildcard.
fn hint_for(hints: &Value, path: &str) -> Option<(Value, String)> {
    let hints = hints.as_object()?;
    if let Some(hint) = hints.get(path) {
        return Some((hint.clone(), path.to_string()));
    }
    let segments: Vec<&str> = path.split('.').collect();
    hints.iter().find_map(|(pattern, hint)| {
        let parts: Vec<&str> = pattern.split('.').collect();
        let matches = parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(p, s)| *p == "*" || p == s);
        matches.then(|| (hint.clone(), pattern.clone()))
    })
}

/// The node without its deeper structure (upstream keeps four levels).
fn stripped(node: &Value, depth: usize) -> Value {
    let Some(object) = node.as_object() else {
        return node.clone();
    };
    object
        .iter()
        .filter_map(|(key, value)| {
            let nested = matches!(
                key.as_str(),
                "properties" | "items" | "anyOf" | "oneOf" | "allOf" | "additionalProperties"
            );
            if !nested {
                return Some((key.clone(), value.clone()));
            }
            if depth >= 3 && (value.is_object() || value.is_array()) {
                return None;
            }
            let inner = match value {
                Value::Object(map) if key == "properties" => Value::Object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), stripped(v, depth + 1)))
                        .collect(),
                ),
                Value::Array(items) => {
                    Value::Array(items.iter().map(|v| stripped(v, depth + 1)).collect())
                }
                other => stripped(other, depth + 1),
            };
            Some((key.clone(), inner))
        })
        .collect::<Map<String, Value>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_nullability_are_inlined_for_the_form() {
        let raw = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "gateway": {"description": "Gateway", "anyOf": [{"$ref": "#/$defs/Gw"}, {"type": "null"}]},
                "model": {"anyOf": [{"$ref": "#/$defs/ModelRef"}, {"type": "null"}]},
                "every": {"description": "Interval"},
                "identity": true,
                "port": {"type": ["integer", "null"], "minimum": 1}
            },
            "$defs": {
                "Gw": {"type": "object", "properties": {"port": {"type": "integer"}},
                       "unevaluatedProperties": false},
                "ModelRef": {"anyOf": [{"type": "string"},
                    {"type": "object", "properties": {"primary": {"type": "string"}}}]}
            }
        });
        let form = form_schema(&raw);
        assert!(!form.to_string().contains("$ref") && !form.to_string().contains("$defs"));
        let props = &form["properties"];
        assert_eq!(props["gateway"]["type"], "object");
        assert_eq!(props["gateway"]["description"], "Gateway");
        assert_eq!(props["gateway"].get("unevaluatedProperties"), None);
        assert_eq!(props["model"]["anyOf"][0]["type"], "string");
        assert_eq!(props["model"]["anyOf"][1]["type"], "object");
        assert_eq!(props["every"]["anyOf"].as_array().unwrap().len(), 5);
        assert_eq!(props["every"]["description"], "Interval");
        assert!(props["identity"]["anyOf"].is_array());
        assert_eq!(props["port"]["type"], "integer");
    }

    #[test]
    fn lookup_walks_properties_wildcards_and_indexes() {
        let schema = json!({"type": "object", "properties": {
            "models": {"type": "object", "properties": {"providers": {"type": "object",
                "additionalProperties": {"type": "object", "required": ["baseUrl"], "properties": {
                    "baseUrl": {"type": "string"},
                    "models": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}}}}
                }}}}}
        }});
        let hints = json!({"models.providers.*.baseUrl": {"label": "Base URL"}});
        let root = lookup(&schema, &hints, ".").unwrap();
        assert_eq!(root["path"], ".");
        assert_eq!(root["children"][0]["path"], "models");
        let provider = lookup(&schema, &hints, "models.providers.openai").unwrap();
        assert_eq!(provider["children"][0]["key"], "baseUrl");
        assert_eq!(provider["children"][0]["required"], true);
        assert_eq!(
            provider["children"][0]["hintPath"],
            "models.providers.*.baseUrl"
        );
        let item = lookup(&schema, &hints, "models.providers.x.models[0].id").unwrap();
        assert_eq!(item["schema"]["type"], "string");
        assert!(lookup(&schema, &hints, "models.nothing").is_none());
        assert!(lookup(&schema, &hints, "models.__proto__").is_none());
    }
}
