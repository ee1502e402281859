//! Where the gateway keeps its files, and its shared secret (PROTOCOL.md §2.5).
//!
//! The token is read from `<state dir>/argent.json` at `gateway.auth.token` (or the
//! `gateway.token` alias), else from `ARGENT_GATEWAY_TOKEN`. The file is re-read whenever it
//! changed, so rotating the token needs no restart. On the first run of the one-process
//! default, when no secret exists anywhere, a 48-hex-character token is generated and written
//! with mode 0600.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde_json::{json, Value};

/// `~/.argentos`, or `ARGENT_STATE_DIR`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ARGENT_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".argentos")
}

/// The config file inside a state dir.
/// `gateway.port` of the state dir's config, when it sets one (as upstream's config does).
pub fn configured_port(state_dir: &Path) -> Option<u16> {
    let config = ConfigFile::new(config_path(state_dir)).load().ok()?;
    config["gateway"]["port"]
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
}

pub fn config_path(state_dir: &Path) -> PathBuf {
    state_dir.join("argent.json")
}

/// Which shared secret the gateway accepts (`gateway.auth.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Token,
    Password,
}

/// The shared secrets in force for one handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSecrets {
    pub mode: AuthMode,
    pub token: Option<String>,
    pub password: Option<String>,
    /// Where the token came from, for `argent gateway status`.
    pub token_source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
}

type Stamp = Option<(SystemTime, u64)>;

/// A parsed config document and its generation (bumped whenever the file changed).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub document: Arc<Value>,
    pub generation: u64,
}

struct Cache {
    stamp: Stamp,
    loaded: Option<Loaded>,
}

/// Reads the config file, re-parsing it only when its modification time or size changed.
pub struct ConfigFile {
    path: PathBuf,
    cache: Mutex<Cache>,
}

impl ConfigFile {
    pub fn new(path: PathBuf) -> Self {
        ConfigFile {
            path,
            cache: Mutex::new(Cache {
                stamp: None,
                loaded: None,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed document (`{}` when the file does not exist).
    pub fn load(&self) -> Result<Value, ConfigError> {
        Ok((*self.load_shared()?.document).clone())
    }

    /// The parsed document, shared, with its generation; one `stat` when unchanged.
    pub fn load_shared(&self) -> Result<Loaded, ConfigError> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut cache = self.cache.lock();
        if let Some(loaded) = &cache.loaded {
            if cache.stamp == stamp {
                return Ok(loaded.clone());
            }
        }
        let parsed = match stamp {
            None => Ok(json!({})),
            Some(_) => std::fs::read_to_string(&self.path)
                .map_err(|e| ConfigError::Read {
                    path: self.path.display().to_string(),
                    message: e.to_string(),
                })
                .and_then(|text| {
                    argent_proto::config::parse(&text).map_err(|e| ConfigError::Read {
                        path: self.path.display().to_string(),
                        message: format!("not valid JSON5: {e}"),
                    })
                }),
        };
        let value = match (parsed, cache.loaded.clone()) {
            (Ok(value), _) => value,
            // A broken edit must not lock everyone out: keep serving the last good
            // document until the file is fixed (said once per change of the file).
            (Err(err), Some(previous)) => {
                tracing::error!(%err, "config file is broken; still using its last good version");
                cache.stamp = stamp;
                return Ok(previous);
            }
            (Err(err), None) => return Err(err),
        };
        let generation = cache.loaded.as_ref().map_or(1, |l| l.generation + 1);
        let loaded = Loaded {
            document: Arc::new(value),
            generation,
        };
        cache.stamp = stamp;
        cache.loaded = Some(loaded.clone());
        Ok(loaded)
    }
}

/// The strings of the array at `pointer` (`[]` when absent or not an array).
pub fn string_list(config: &Value, pointer: &str) -> Vec<String> {
    config
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn non_empty(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn env_var(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// Which token wins when both the config file and `ARGENT_GATEWAY_TOKEN` have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precedence {
    /// Upstream's order: the file, then the environment (one-process default, CLI).
    FileFirst,
    /// Cluster mode: the environment is how one secret reaches every member, so it wins
    /// over a token a local run once wrote into the same state dir.
    EnvFirst,
}

/// Resolves the secrets from a config document and the environment.
pub fn resolve_secrets(
    config: &Value,
    config_path: &Path,
    precedence: Precedence,
) -> SharedSecrets {
    let file = |pointer: &str, key: &str| {
        non_empty(config.pointer(pointer))
            .map(|t| (t, format!("{} ({key})", config_path.display())))
    };
    let from_file = file("/gateway/auth/token", "gateway.auth.token")
        .or_else(|| file("/gateway/token", "gateway.token"));
    let from_env = env_var(&["ARGENT_GATEWAY_TOKEN", "CLAWDBOT_GATEWAY_TOKEN"])
        .map(|t| (t, "environment variable ARGENT_GATEWAY_TOKEN".to_string()));
    let chosen = match precedence {
        Precedence::FileFirst => from_file.or(from_env),
        Precedence::EnvFirst => from_env.or(from_file),
    };
    let (token, token_source) = match chosen {
        Some((token, source)) => (Some(token), source),
        None => (None, "nowhere (no token configured)".to_string()),
    };
    let password = non_empty(config.pointer("/gateway/auth/password"))
        .or_else(|| env_var(&["ARGENT_GATEWAY_PASSWORD", "CLAWDBOT_GATEWAY_PASSWORD"]));
    let mode = match config.pointer("/gateway/auth/mode").and_then(Value::as_str) {
        Some("password") => AuthMode::Password,
        Some("token") => AuthMode::Token,
        _ if password.is_some() => AuthMode::Password,
        _ => AuthMode::Token,
    };
    SharedSecrets {
        mode,
        token,
        password,
        token_source,
    }
}

/// 24 random bytes as 48 lowercase hex characters, as upstream's onboarding writes.
pub fn generate_token() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}

/// Writes `gateway.auth.token` (and `mode: "token"`) into the config file, keeping whatever
/// else it holds, with mode 0600.
pub fn write_token(path: &Path, token: &str) -> Result<(), ConfigError> {
    let write_err = |message: String| ConfigError::Write {
        path: path.display().to_string(),
        message,
    };
    let mut config = if path.exists() {
        ConfigFile::new(path.to_path_buf())
            .load()
            .map_err(|e| write_err(e.to_string()))?
    } else {
        json!({})
    };
    if !config.is_object() {
        config = json!({});
    }
    let gateway = config
        .as_object_mut()
        .expect("made an object above")
        .entry("gateway")
        .or_insert_with(|| json!({}));
    if !gateway.is_object() {
        *gateway = json!({});
    }
    let auth = gateway
        .as_object_mut()
        .expect("made an object above")
        .entry("auth")
        .or_insert_with(|| json!({}));
    if !auth.is_object() {
        *auth = json!({});
    }
    auth["mode"] = json!("token");
    auth["token"] = json!(token);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_err(e.to_string()))?;
    }
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialize");
    write_private(path, &text).map_err(|e| write_err(e.to_string()))
}

/// Writes a file readable only by its owner, atomically (temp file + rename).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    #[cfg(unix)]
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
}

/// One process with everything, or a stateless edge of a NATS cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Local,
    Cluster { nats_url: String },
}

impl Mode {
    /// Which token wins when the config file and the environment both have one.
    pub fn precedence(&self) -> Precedence {
        match self {
            Mode::Local => Precedence::FileFirst,
            Mode::Cluster { .. } => Precedence::EnvFirst,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Cluster { .. } => "cluster",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_48_hex() {
        let t = generate_token();
        assert_eq!(t.len(), 48);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(t, generate_token());
    }

    #[test]
    fn alias_and_precedence() {
        let p = Path::new("/x/argent.json");
        let s = resolve_secrets(
            &json!({"gateway":{"token":"alias"}}),
            p,
            Precedence::FileFirst,
        );
        assert_eq!(s.token.as_deref(), Some("alias"));
        let s = resolve_secrets(
            &json!({"gateway":{"token":"alias","auth":{"token":"real"}}}),
            p,
            Precedence::FileFirst,
        );
        assert_eq!(s.token.as_deref(), Some("real"));
        assert_eq!(s.mode, AuthMode::Token);
        let s = resolve_secrets(
            &json!({"gateway":{"auth":{"password":"pw"}}}),
            p,
            Precedence::FileFirst,
        );
        assert_eq!(s.mode, AuthMode::Password);
    }

    #[test]
    fn write_token_keeps_other_settings_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("argent.json");
        std::fs::write(&path, r#"{"session":{"mainKey":"x"}}"#).unwrap();
        write_token(&path, "abc").unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["gateway"]["auth"]["token"], "abc");
        assert_eq!(v["session"]["mainKey"], "x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
