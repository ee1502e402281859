//! The `connect` request params (PROTOCOL.md §2.3) and their strict validation.
//!
//! Upstream validates `connect` against a schema that forbids unknown properties and a fixed
//! list of client ids and modes; a failure ends the handshake with
//! `invalid connect params: <details>`. The details read like upstream's
//! (`at /client/id: must be equal to one of the allowed values`).

use serde_json::{Map, Value};

/// Allowed `client.id` values: ArgentOS's, then OpenClaw's (PROTOCOL-v4.md §3.2). Compared
/// exactly, as upstream does.
pub const CLIENT_IDS: [&str; 22] = [
    "webchat-ui",
    "argent-control-ui",
    "webchat",
    "cli",
    "gateway-client",
    "argent-macos",
    "argent-ios",
    "argent-android",
    "node-host",
    "test",
    "fingerprint",
    "argent-probe",
    "openclaw-control-ui",
    "openclaw-browser-copilot",
    "openclaw-tui",
    "openclaw-macos",
    "openclaw-linux",
    "openclaw-ios",
    "openclaw-watchos",
    "openclaw-android",
    "openclaw-worker",
    "openclaw-probe",
];

/// Allowed `client.mode` values (`worker` is OpenClaw's).
pub const CLIENT_MODES: [&str; 8] = [
    "webchat", "cli", "ui", "backend", "node", "probe", "test", "worker",
];

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientInfo {
    pub id: String,
    pub version: String,
    pub platform: String,
    pub mode: String,
    pub display_name: Option<String>,
    pub device_family: Option<String>,
    pub model_identifier: Option<String>,
    pub instance_id: Option<String>,
    /// OpenClaw's build id and IANA time zone (v4 clients; accepted on both versions).
    pub build_id: Option<String>,
    pub time_zone: Option<String>,
}

impl ClientInfo {
    /// ArgentOS's or OpenClaw's Control UI: the same rules apply to both (§2.4 step 8a).
    pub fn is_control_ui(&self) -> bool {
        self.id == "argent-control-ui" || self.id == "openclaw-control-ui"
    }

    /// A webchat client (upstream's rule: mode `webchat`, or the `webchat-ui` client).
    pub fn is_webchat(&self) -> bool {
        self.id == "webchat-ui" || self.mode == "webchat"
    }

    /// Webchat clients and the Control UI are subject to the browser origin check (§2.7).
    pub fn is_browser(&self) -> bool {
        self.is_control_ui() || self.is_webchat()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProof {
    pub id: String,
    pub public_key: String,
    pub signature: String,
    pub signed_at: i64,
    pub nonce: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthParams {
    pub token: Option<String>,
    pub password: Option<String>,
    /// v4 clients send their stored device token here instead of in `token`.
    pub device_token: Option<String>,
    /// OpenClaw's setup-code token; not supported here (refused when sent).
    pub bootstrap_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConnectParams {
    pub min_protocol: u64,
    pub max_protocol: u64,
    pub client: ClientInfo,
    pub caps: Vec<String>,
    pub commands: Vec<String>,
    pub permissions: Map<String, Value>,
    pub path_env: Option<String>,
    pub role: Option<String>,
    /// The requested scopes exactly as sent (order kept: the device signature covers them).
    pub scopes: Option<Vec<String>>,
    pub device: Option<DeviceProof>,
    pub auth: AuthParams,
    pub locale: Option<String>,
    pub user_agent: Option<String>,
}

const ROOT_KEYS: [&str; 16] = [
    "minProtocol",
    "maxProtocol",
    "client",
    "caps",
    "commands",
    "permissions",
    "pathEnv",
    "role",
    "scopes",
    "device",
    "auth",
    "locale",
    "userAgent",
    // OpenClaw (PROTOCOL-v4.md §3.2): accepted and ignored.
    "modelCatalog",
    "computerUse",
    "workerRuns",
];
const CLIENT_KEYS: [&str; 10] = [
    "id",
    "version",
    "platform",
    "mode",
    "displayName",
    "deviceFamily",
    "modelIdentifier",
    "instanceId",
    "buildId",
    "timeZone",
];
const DEVICE_KEYS: [&str; 5] = ["id", "publicKey", "signature", "signedAt", "nonce"];
const AUTH_KEYS: [&str; 6] = [
    "token",
    "password",
    "deviceToken",
    "bootstrapToken",
    // Upstream-internal: accepted and ignored.
    "approvalRuntimeToken",
    "agentRuntimeIdentityToken",
];

/// Collects schema issues while reading an object, in upstream's wording.
struct Reader<'o, 'i> {
    obj: &'o Map<String, Value>,
    path: String,
    issues: &'i mut Vec<String>,
}

impl<'o, 'i> Reader<'o, 'i> {
    fn new(
        obj: &'o Map<String, Value>,
        path: &str,
        allowed: &[&str],
        issues: &'i mut Vec<String>,
    ) -> Self {
        let at = if path.is_empty() { "root" } else { path };
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                issues.push(format!("at {at}: unexpected property '{key}'"));
            }
        }
        Reader {
            obj,
            path: path.to_string(),
            issues,
        }
    }

    fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.path)
    }

    fn missing(&mut self, key: &str) {
        let at = if self.path.is_empty() {
            "root".to_string()
        } else {
            self.path.clone()
        };
        self.issues
            .push(format!("at {at}: must have required property '{key}'"));
    }

    fn string(&mut self, key: &str, required: bool, non_empty: bool) -> Option<String> {
        match self.obj.get(key) {
            None => {
                if required {
                    self.missing(key);
                }
                None
            }
            Some(Value::String(s)) if non_empty && s.is_empty() => {
                let at = self.at(key);
                self.issues
                    .push(format!("at {at}: must NOT have fewer than 1 characters"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                let at = self.at(key);
                self.issues.push(format!("at {at}: must be string"));
                None
            }
        }
    }

    /// An optional string of 1..=`max` characters.
    fn bounded(&mut self, key: &str, max: usize) -> Option<String> {
        let value = self.string(key, false, true)?;
        if value.chars().count() > max {
            let at = self.at(key);
            self.issues
                .push(format!("at {at}: must NOT have more than {max} characters"));
            return None;
        }
        Some(value)
    }

    fn integer(&mut self, key: &str, required: bool, min: i64) -> Option<i64> {
        match self.obj.get(key) {
            None => {
                if required {
                    self.missing(key);
                }
                None
            }
            Some(v) => {
                let at = self.at(key);
                match v.as_i64() {
                    Some(n) if n >= min => Some(n),
                    Some(_) => {
                        self.issues.push(format!("at {at}: must be >= {min}"));
                        None
                    }
                    None => {
                        self.issues.push(format!("at {at}: must be integer"));
                        None
                    }
                }
            }
        }
    }

    fn string_list(&mut self, key: &str) -> Option<Vec<String>> {
        let v = self.obj.get(key)?;
        let at = self.at(key);
        let Some(items) = v.as_array() else {
            self.issues.push(format!("at {at}: must be array"));
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some("") => self.issues.push(format!(
                    "at {at}/{i}: must NOT have fewer than 1 characters"
                )),
                Some(s) => out.push(s.to_string()),
                None => self.issues.push(format!("at {at}/{i}: must be string")),
            }
        }
        Some(out)
    }

    fn object(&mut self, key: &str, required: bool) -> Option<&'o Map<String, Value>> {
        match self.obj.get(key) {
            None => {
                if required {
                    self.missing(key);
                }
                None
            }
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                let at = self.at(key);
                self.issues.push(format!("at {at}: must be object"));
                None
            }
        }
    }

    fn one_of(&mut self, key: &str, value: Option<String>, allowed: &[&str]) -> Option<String> {
        let value = value?;
        if allowed.contains(&value.as_str()) {
            Some(value)
        } else {
            let at = self.at(key);
            self.issues.push(format!(
                "at {at}: must be equal to one of the allowed values"
            ));
            None
        }
    }
}

/// Validates `connect` params. `Err` holds the details for `invalid connect params: …`.
pub fn parse_connect_params(params: Option<&Value>) -> Result<ConnectParams, String> {
    let empty = Map::new();
    let obj = match params {
        None => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err("at root: must be object".to_string()),
    };
    let mut issues = Vec::new();
    let mut root = Reader::new(obj, "", &ROOT_KEYS, &mut issues);
    let min_protocol = root.integer("minProtocol", true, 1);
    let max_protocol = root.integer("maxProtocol", true, 1);
    let client_obj = root.object("client", true);
    let caps = root.string_list("caps").unwrap_or_default();
    let commands = root.string_list("commands").unwrap_or_default();
    let permissions = root
        .object("permissions", false)
        .cloned()
        .unwrap_or_default();
    let path_env = root.string("pathEnv", false, false);
    let role = root.string("role", false, true);
    let scopes = root.string_list("scopes");
    let device_obj = root.object("device", false);
    let auth_obj = root.object("auth", false);
    let locale = root.string("locale", false, false);
    let user_agent = root.string("userAgent", false, false);

    for (key, value) in &permissions {
        if !value.is_boolean() {
            issues.push(format!("at /permissions/{key}: must be boolean"));
        }
    }

    let client = client_obj.map(|c| {
        let mut r = Reader::new(c, "/client", &CLIENT_KEYS, &mut issues);
        let id = r.string("id", true, true);
        let id = r.one_of("id", id, &CLIENT_IDS);
        let version = r.string("version", true, true);
        let platform = r.string("platform", true, true);
        let mode = r.string("mode", true, true);
        let mode = r.one_of("mode", mode, &CLIENT_MODES);
        ClientInfo {
            id: id.unwrap_or_default(),
            version: version.unwrap_or_default(),
            platform: platform.unwrap_or_default(),
            mode: mode.unwrap_or_default(),
            display_name: r.string("displayName", false, true),
            device_family: r.string("deviceFamily", false, true),
            model_identifier: r.string("modelIdentifier", false, true),
            instance_id: r.string("instanceId", false, true),
            build_id: r.bounded("buildId", 96),
            time_zone: r.bounded("timeZone", 64),
        }
    });

    let device = device_obj.map(|d| {
        let mut r = Reader::new(d, "/device", &DEVICE_KEYS, &mut issues);
        DeviceProof {
            id: r.string("id", true, true).unwrap_or_default(),
            public_key: r.string("publicKey", true, true).unwrap_or_default(),
            signature: r.string("signature", true, true).unwrap_or_default(),
            signed_at: r.integer("signedAt", true, 0).unwrap_or_default(),
            nonce: r.string("nonce", false, true),
        }
    });

    let auth = auth_obj
        .map(|a| {
            let mut r = Reader::new(a, "/auth", &AUTH_KEYS, &mut issues);
            AuthParams {
                token: r.string("token", false, false),
                password: r.string("password", false, false),
                device_token: r.string("deviceToken", false, false),
                bootstrap_token: r.string("bootstrapToken", false, false),
            }
        })
        .unwrap_or_default();

    if !issues.is_empty() {
        return Err(issues.join("; "));
    }
    Ok(ConnectParams {
        min_protocol: min_protocol.unwrap_or_default() as u64,
        max_protocol: max_protocol.unwrap_or_default() as u64,
        client: client.unwrap_or_default(),
        caps,
        commands,
        permissions,
        path_env,
        role,
        scopes,
        device,
        auth,
        locale,
        user_agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"minProtocol":3,"maxProtocol":3,
               "client":{"id":"cli","version":"dev","platform":"linux","mode":"cli"},
               "auth":{"token":"t"}})
    }

    #[test]
    fn accepts_a_cli_connect() {
        let p = parse_connect_params(Some(&base())).unwrap();
        assert_eq!(p.client.id, "cli");
        assert_eq!(p.auth.token.as_deref(), Some("t"));
        assert_eq!(p.scopes, None);
    }

    #[test]
    fn rejects_unknown_keys_ids_and_modes() {
        let mut v = base();
        v["extra"] = json!(1);
        v["client"]["id"] = json!("ios-node");
        v["client"]["mode"] = json!("operator");
        let err = parse_connect_params(Some(&v)).unwrap_err();
        assert!(
            err.contains("at root: unexpected property 'extra'"),
            "{err}"
        );
        assert!(err.contains("at /client/id: must be equal to one of the allowed values"));
        assert!(err.contains("at /client/mode: must be equal to one of the allowed values"));
    }

    #[test]
    fn requires_protocol_bounds_and_client() {
        let err = parse_connect_params(Some(&json!({}))).unwrap_err();
        assert!(err.contains("must have required property 'minProtocol'"));
        assert!(err.contains("must have required property 'client'"));
        let err = parse_connect_params(Some(&json!([]))).unwrap_err();
        assert_eq!(err, "at root: must be object");
    }

    #[test]
    fn wrong_types_are_reported_with_paths() {
        let mut v = base();
        v["minProtocol"] = json!("3");
        v["scopes"] = json!(["operator.read", 5]);
        v["permissions"] = json!({"camera.capture": "yes"});
        let err = parse_connect_params(Some(&v)).unwrap_err();
        assert!(err.contains("at /minProtocol: must be integer"));
        assert!(err.contains("at /scopes/1: must be string"));
        assert!(err.contains("at /permissions/camera.capture: must be boolean"));
    }
}
