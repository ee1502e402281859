//! What the fuzz targets of `fuzz_targets/` share (README.md says how to run them):
//!
//! * [`Choices`] — secondary decisions (which field to flip, which scopes to hold) drawn
//!   from a hash of the whole input, so the input itself can stay a realistic frame or
//!   document and the same input always makes the same decisions.
//! * [`json_eq`] — JSON equality that tolerates the last-digit drift of serde_json's
//!   default float parser (it does not promise exact float round trips without its
//!   `float_roundtrip` feature, which this build leaves as production has it).
//! * [`check_error`], [`check_error_frame`] — what every wire error must satisfy
//!   (PROTOCOL.md §1.6): a non-empty message, a string code, `details.jsonrpcCode`, and a
//!   `res` frame with exactly the allowed keys and no `null`.
//! * [`connect_params_json`] — typed `connect` params back to JSON, for round trips.
//! * [`nesting_depth`] — how deep a text nests, to run deep inputs on a small stack.

#![forbid(unsafe_code)]

use serde_json::{json, Map, Value};

use argent_proto::connect::ConnectParams;
use argent_proto::errors::{jsonrpc, ErrorShape, RpcError};
use argent_proto::frames::encode_error;

/// A deterministic stream of choices seeded by the input (FNV-1a, then splitmix64).
pub struct Choices(u64);

impl Choices {
    pub fn new(data: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in data {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Choices(hash)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// Equal as JSON, floats within a relative 1e-12 (integers exactly).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => p == q || (p - q).abs() <= 1e-12 * p.abs().max(q.abs()),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, p)| y.get(key).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

/// How deep the brackets of a text nest (strings are not skipped: an upper bound).
pub fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for byte in text.bytes() {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// How deep a value nests.
pub fn value_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The stack of a tokio worker thread, where every request handler runs.
pub const TOKIO_WORKER_STACK: usize = 2 * 1024 * 1024;

/// Runs `check` on a thread with a tokio worker's stack: what recurses per nesting level
/// must not overflow there (a stack overflow aborts the whole gateway).
pub fn on_worker_stack(text: &str, check: fn(&str)) {
    let owned = text.to_owned();
    let worker = std::thread::Builder::new()
        .stack_size(TOKIO_WORKER_STACK)
        .spawn(move || check(&owned))
        .expect("a thread starts");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

/// What every error that reaches a client must satisfy.
pub fn check_error(err: &RpcError) {
    assert!(
        !err.message.trim().is_empty(),
        "empty error message: {err:?}"
    );
    let code = err.jsonrpc_code();
    assert_eq!(
        err.details.get("jsonrpcCode").and_then(Value::as_i64),
        Some(code),
        "details.jsonrpcCode missing: {err:?}"
    );
    assert!(
        [
            jsonrpc::PARSE_ERROR,
            jsonrpc::INVALID_REQUEST,
            jsonrpc::METHOD_NOT_FOUND,
            jsonrpc::INVALID_PARAMS,
            jsonrpc::INTERNAL_ERROR,
            jsonrpc::AGENT_BUSY,
            jsonrpc::SESSION_NOT_FOUND,
            jsonrpc::AUTH_FAILED,
            jsonrpc::AGENT_TIMEOUT,
            jsonrpc::NOT_LINKED,
        ]
        .contains(&code),
        "unknown jsonrpcCode {code}: {err:?}"
    );
    // The wire shape reads back as itself.
    let shape = err.to_shape();
    let wire = serde_json::to_value(&shape).expect("error shapes serialize");
    assert_eq!(wire["code"], err.code.as_str());
    let back: ErrorShape = serde_json::from_value(wire).expect("error shapes deserialize");
    assert_eq!(back, shape);
}

/// The `res` frame of an error: exactly `type`, `id`, `ok`, `error`; no `null` anywhere in
/// the frame's own keys or the error object's (PROTOCOL.md §1.3).
pub fn check_error_frame(id: &str, err: &RpcError) {
    check_error(err);
    let frame: Value = serde_json::from_str(&encode_error(id, err)).expect("error frames are JSON");
    let mut keys: Vec<&str> = frame
        .as_object()
        .expect("frames are objects")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "id", "ok", "type"], "{frame}");
    assert_eq!(frame["type"], "res");
    assert_eq!(frame["id"], id);
    assert_eq!(frame["ok"], false);
    let error = frame["error"].as_object().expect("error is an object");
    for (key, value) in error {
        assert!(
            ["code", "message", "details", "retryable", "retryAfterMs"].contains(&key.as_str()),
            "unexpected error key {key}: {frame}"
        );
        assert!(!value.is_null(), "null {key} in {frame}");
    }
}

/// `connect` params as a client would send them (every field the parser keeps).
pub fn connect_params_json(p: &ConnectParams) -> Value {
    fn put(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
        if let Some(value) = value {
            map.insert(key.to_string(), json!(value));
        }
    }
    let c = &p.client;
    let mut client = Map::new();
    client.insert("id".into(), json!(c.id));
    client.insert("version".into(), json!(c.version));
    client.insert("platform".into(), json!(c.platform));
    client.insert("mode".into(), json!(c.mode));
    put(&mut client, "displayName", &c.display_name);
    put(&mut client, "deviceFamily", &c.device_family);
    put(&mut client, "modelIdentifier", &c.model_identifier);
    put(&mut client, "instanceId", &c.instance_id);
    put(&mut client, "buildId", &c.build_id);
    put(&mut client, "timeZone", &c.time_zone);

    let mut root = Map::new();
    root.insert("minProtocol".into(), json!(p.min_protocol));
    root.insert("maxProtocol".into(), json!(p.max_protocol));
    root.insert("client".into(), Value::Object(client));
    root.insert("caps".into(), json!(p.caps));
    root.insert("commands".into(), json!(p.commands));
    root.insert("permissions".into(), Value::Object(p.permissions.clone()));
    put(&mut root, "pathEnv", &p.path_env);
    put(&mut root, "role", &p.role);
    if let Some(scopes) = &p.scopes {
        root.insert("scopes".into(), json!(scopes));
    }
    if let Some(d) = &p.device {
        let mut device = Map::new();
        device.insert("id".into(), json!(d.id));
        device.insert("publicKey".into(), json!(d.public_key));
        device.insert("signature".into(), json!(d.signature));
        device.insert("signedAt".into(), json!(d.signed_at));
        put(&mut device, "nonce", &d.nonce);
        root.insert("device".into(), Value::Object(device));
    }
    let mut auth = Map::new();
    put(&mut auth, "token", &p.auth.token);
    put(&mut auth, "password", &p.auth.password);
    put(&mut auth, "deviceToken", &p.auth.device_token);
    put(&mut auth, "bootstrapToken", &p.auth.bootstrap_token);
    root.insert("auth".into(), Value::Object(auth));
    put(&mut root, "locale", &p.locale);
    put(&mut root, "userAgent", &p.user_agent);
    Value::Object(root)
}
