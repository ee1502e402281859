//! The shared configuration document (`argent.json`, PROTOCOL.md §5.3): how it is parsed
//! (JSON5), validated (the typed sections below; unknown sections are kept untouched), and
//! described (`config.schema`: a JSON Schema generated from these types, plus UI hints).
//!
//! Every field is optional: an empty document is a valid config. Components read their
//! settings through [`SharedConfig`], the snapshot parsed once per change of the document;
//! these types are the contract the validation and the schema enforce.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// How deep objects and arrays may nest in a config text: far beyond any real config, and
/// well within what the recursive JSON5 parser can take on a 2 MiB worker stack.
pub const MAX_NESTING: usize = 128;

/// Parses a config text (JSON5: comments, trailing commas, unquoted keys allowed).
pub fn parse(raw: &str) -> Result<Value, String> {
    // Checked first: the JSON5 parser recurses per level, and a text nested a few thousand
    // levels deep would overflow the stack and abort the process.
    if nesting_depth(raw) > MAX_NESTING {
        return Err(format!(
            "the config nests objects and arrays deeper than {MAX_NESTING} levels"
        ));
    }
    json5::from_str::<Value>(raw).map_err(|e| e.to_string())
}

/// The deepest nesting of `{`/`[` in a JSON5 text, not counting those inside strings or
/// comments (an over-estimate for text that is not JSON5 at all, which fails to parse
/// anyway).
fn nesting_depth(raw: &str) -> usize {
    let bytes = raw.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Lowercase hex SHA-256 of the raw text: the `hash` / `baseHash` of `config.*`.
pub fn hash(raw: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// One validation problem, as `config.get`'s `issues` and `config.set`'s `details.issues`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl Issue {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Parses a duration such as `"30s"`, `"20m"`, `"1h 30m"`, or a number of milliseconds.
pub fn parse_duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_millis)
            .ok_or_else(|| "must be a positive number of milliseconds".to_string()),
        Value::String(s) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("not a duration like \"30m\" or \"1h 30m\": {e}")),
        _ => Err("must be a duration string (\"30m\") or milliseconds".to_string()),
    }
}

/// Validates a parsed document: its shape against the typed sections, then the rules types
/// cannot say (durations, ranges, unique agent ids).
pub fn validate(document: &Value) -> Result<ArgentConfig, Vec<Issue>> {
    if !document.is_object() {
        return Err(vec![Issue::new("", "the config must be an object")]);
    }
    let typed: ArgentConfig = serde_path_to_error::deserialize(document).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![Issue::new(path, e.inner().to_string())]
    })?;
    let mut issues = Vec::new();
    if let Some(ms) = typed.gateway.as_ref().and_then(|g| g.tick_interval_ms) {
        if !(1_000..=3_600_000).contains(&ms) {
            issues.push(Issue::new(
                "gateway.tickIntervalMs",
                "must be between 1000 and 3600000",
            ));
        }
    }
    if let Some(agents) = &typed.agents {
        if let Some(defaults) = &agents.defaults {
            check_schedules(
                "agents.defaults",
                &defaults.heartbeat,
                &defaults.execution_worker,
                &mut issues,
            );
        }
        let mut seen = Vec::new();
        for (i, agent) in agents.list.iter().flatten().enumerate() {
            let id = agent.id.trim().to_ascii_lowercase();
            if id.is_empty() {
                issues.push(Issue::new(
                    format!("agents.list.{i}.id"),
                    "must not be empty",
                ));
            } else if seen.contains(&id) {
                issues.push(Issue::new(
                    format!("agents.list.{i}.id"),
                    format!("duplicate agent id \"{id}\""),
                ));
            }
            seen.push(id);
            check_schedules(
                &format!("agents.list.{i}"),
                &agent.heartbeat,
                &agent.execution_worker,
                &mut issues,
            );
        }
    }
    if issues.is_empty() {
        Ok(typed)
    } else {
        Err(issues)
    }
}

fn check_schedules(
    at: &str,
    heartbeat: &Option<HeartbeatConfig>,
    worker: &Option<ExecutionWorkerConfig>,
    issues: &mut Vec<Issue>,
) {
    let every = [
        (
            heartbeat.as_ref().and_then(|h| h.every.as_ref()),
            "heartbeat",
        ),
        (
            worker.as_ref().and_then(|w| w.every.as_ref()),
            "executionWorker",
        ),
    ];
    for (value, section) in every {
        if let Some(value) = value {
            if let Err(message) = parse_duration(value) {
                issues.push(Issue::new(format!("{at}.{section}.every"), message));
            }
        }
    }
}

/// The shared config as every component reads it: parsed and validated once per change of
/// the stored document, then shared as an `Arc`. Settings are read through its accessors,
/// never by walking the document by path; the document itself is kept verbatim (unknown
/// sections included) for `config.get` and for components that forward it whole.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    document: Value,
    typed: ArgentConfig,
    agents: crate::agents::AgentsConfig,
    /// Why the document did not validate (its settings then read as defaults).
    problems: Vec<Issue>,
}

impl SharedConfig {
    /// Validates a parsed document into its snapshot. An invalid document (a hand-edited
    /// file) still yields one, read section by section: what is valid counts, an invalid
    /// section (or agent, or provider) reads as absent, and [`SharedConfig::problems`] says
    /// why.
    pub fn from_document(document: Value) -> Self {
        let (typed, problems) = match validate(&document) {
            Ok(typed) => (typed, Vec::new()),
            Err(issues) => (lenient(&document), issues),
        };
        SharedConfig {
            agents: crate::agents::AgentsConfig::from_config(&document),
            document,
            typed,
            problems,
        }
    }

    /// The document as stored.
    pub fn document(&self) -> &Value {
        &self.document
    }

    pub fn problems(&self) -> &[Issue] {
        &self.problems
    }

    /// The configured agents, the default agent, the main key and the session scope.
    pub fn agents(&self) -> &crate::agents::AgentsConfig {
        &self.agents
    }

    /// `gateway.controlUi`, defaults applied: enabled, the folder (when set), and the base
    /// path normalised as upstream does it (leading `/`, no trailing `/`, `/` is empty).
    pub fn control_ui(&self) -> ControlUi {
        let ui = self
            .typed
            .gateway
            .as_ref()
            .and_then(|g| g.control_ui.as_ref());
        let base = ui.and_then(|ui| ui.base_path.as_deref()).unwrap_or("");
        let trimmed = base.trim().trim_matches('/');
        ControlUi {
            enabled: ui.and_then(|ui| ui.enabled).unwrap_or(true),
            root: ui.and_then(|ui| ui.root.clone()),
            base_path: if trimmed.is_empty() {
                String::new()
            } else {
                format!("/{trimmed}")
            },
        }
    }

    /// `gateway.tickIntervalMs`.
    pub fn tick_interval_ms(&self) -> Option<u64> {
        self.typed.gateway.as_ref()?.tick_interval_ms
    }

    /// `cron.enabled` (default true).
    pub fn cron_enabled(&self) -> bool {
        self.typed.cron.as_ref().and_then(|c| c.enabled) != Some(false)
    }

    /// `cron.catchUp` (default `once`).
    pub fn cron_catch_up(&self) -> CatchUp {
        self.typed
            .cron
            .as_ref()
            .and_then(|c| c.catch_up)
            .unwrap_or_default()
    }

    fn agent_entry(&self, agent_id: &str) -> Option<&AgentConfig> {
        let list = self.typed.agents.as_ref()?.list.as_ref()?;
        list.iter().find(|a| a.id.eq_ignore_ascii_case(agent_id))
    }

    fn defaults(&self) -> Option<&AgentDefaults> {
        self.typed.agents.as_ref()?.defaults.as_ref()
    }

    /// The agent's heartbeat interval (its own, else `agents.defaults`); `None`: no heartbeat.
    pub fn heartbeat_every(&self, agent_id: &str) -> Option<Duration> {
        let own = self
            .agent_entry(agent_id)
            .and_then(|a| a.heartbeat.as_ref());
        let every = own
            .and_then(|h| h.every.as_ref())
            .or_else(|| self.defaults()?.heartbeat.as_ref()?.every.as_ref())?;
        parse_duration(every).ok().filter(|d| !d.is_zero())
    }

    /// `agents.defaults.memorySearch`.
    pub fn memory_search(&self) -> Option<&MemorySearchConfig> {
        self.defaults()?.memory_search.as_ref()
    }

    /// `knowledge` (limits of ingest).
    pub fn knowledge(&self) -> KnowledgeConfig {
        self.typed.knowledge.clone().unwrap_or_default()
    }

    /// `messages.tts` (speech).
    pub fn tts(&self) -> TtsConfig {
        (self.typed.messages.as_ref())
            .and_then(|m| m.tts.clone())
            .unwrap_or_default()
    }

    /// `agents.defaults.heartbeat.prompt`.
    pub fn heartbeat_prompt(&self) -> Option<&str> {
        self.defaults()?.heartbeat.as_ref()?.prompt.as_deref()
    }

    /// The agent's execution-worker settings: each field its own, else `agents.defaults`.
    pub fn execution_worker(&self, agent_id: &str) -> ExecutionWorkerConfig {
        let own = self
            .agent_entry(agent_id)
            .and_then(|a| a.execution_worker.clone())
            .unwrap_or_default();
        let Some(base) = self.defaults().and_then(|d| d.execution_worker.clone()) else {
            return own;
        };
        ExecutionWorkerConfig {
            enabled: own.enabled.or(base.enabled),
            every: own.every.or(base.every),
            model: own.model.or(base.model),
            max_run_minutes: own.max_run_minutes.or(base.max_run_minutes),
            max_tasks_per_cycle: own.max_tasks_per_cycle.or(base.max_tasks_per_cycle),
            session_main_key: own.session_main_key.or(base.session_main_key),
            scope: own.scope.or(base.scope),
            require_evidence: own.require_evidence.or(base.require_evidence),
            max_no_progress_attempts: own
                .max_no_progress_attempts
                .or(base.max_no_progress_attempts),
            other: own.other,
        }
    }

    /// The configured model providers, by id.
    pub fn providers(&self) -> Option<&BTreeMap<String, ProviderConfig>> {
        self.typed.models.as_ref()?.providers.as_ref()
    }
}

/// The parts of an invalid document that are valid on their own: each section, and each
/// agent and provider, is read separately, so one bad field does not turn off the rest (the
/// components read every setting on its own before the snapshot existed).
fn lenient(document: &Value) -> ArgentConfig {
    fn part<T: serde::de::DeserializeOwned>(value: Option<&Value>) -> Option<T> {
        value.and_then(|v| serde_json::from_value(v.clone()).ok())
    }
    let agents = document.get("agents").map(|agents| AgentsSection {
        defaults: part(agents.get("defaults")),
        list: agents
            .get("list")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(|agent| part(Some(agent))).collect()),
        other: Map::new(),
    });
    let models = document.get("models").map(|models| ModelsConfig {
        providers: models
            .get("providers")
            .and_then(Value::as_object)
            .map(|providers| {
                providers
                    .iter()
                    .filter_map(|(id, p)| Some((id.clone(), part(Some(p))?)))
                    .collect()
            }),
        other: Map::new(),
    });
    ArgentConfig {
        gateway: part(document.get("gateway")),
        session: part(document.get("session")),
        agents,
        models,
        cron: part(document.get("cron")),
        knowledge: part(document.get("knowledge")),
        messages: document.get("messages").map(|messages| MessagesConfig {
            tts: part(messages.get("tts")),
            other: Map::new(),
        }),
        other: Map::new(),
    }
}

impl Default for SharedConfig {
    /// The config of a cluster that has none yet: `{}`.
    fn default() -> Self {
        SharedConfig::from_document(Value::Object(Map::new()))
    }
}

/// The whole document. Sections this release does not read are kept as they are.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgentConfig {
    /// The gateways: listener, shared secret, protocol timings.
    pub gateway: Option<GatewayConfig>,
    /// Session keys.
    pub session: Option<SessionConfig>,
    /// The agents and their defaults.
    pub agents: Option<AgentsSection>,
    /// Model providers the node-agents call.
    pub models: Option<ModelsConfig>,
    /// The cron scheduler.
    pub cron: Option<CronConfig>,
    /// The knowledge library's limits.
    pub knowledge: Option<KnowledgeConfig>,
    /// Replies: text-to-speech.
    pub messages: Option<MessagesConfig>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayConfig {
    /// WebSocket port (default 18789).
    pub port: Option<u16>,
    /// `tick` period advertised in `hello-ok.policy` and used by every gateway (1000…3600000).
    pub tick_interval_ms: Option<u64>,
    /// Shared secret of the gateway (PROTOCOL.md §2.5).
    pub auth: Option<GatewayAuth>,
    /// Alias of `auth.token`.
    pub token: Option<String>,
    /// The browser dashboard every gateway serves on its WebSocket port.
    pub control_ui: Option<ControlUiConfig>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// What [`SharedConfig::control_ui`] answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlUi {
    pub enabled: bool,
    pub root: Option<String>,
    /// `""` or `/path`.
    pub base_path: String,
}

/// `gateway.controlUi`: upstream's keys. Those this release does not read (origins, device
/// auth flags, …) stay in `other` and are read where they are used.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlUiConfig {
    /// Serve the UI (default true, when its files are there).
    pub enabled: Option<bool>,
    /// The folder of a built UI: the `dist/control-ui` of the `openclaw` package, or any
    /// build of the dashboard (default `<state dir>/control-ui`).
    pub root: Option<String>,
    /// The path the UI is served under, e.g. `/ui` (default: the root of the port).
    pub base_path: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAuth {
    pub mode: Option<AuthMode>,
    pub token: Option<String>,
    pub password: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Token,
    Password,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionConfig {
    /// Name of each agent's main session (default `main`).
    pub main_key: Option<String>,
    /// `per-sender` (default) or `global`.
    pub scope: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentsSection {
    /// Settings every agent inherits.
    pub defaults: Option<AgentDefaults>,
    /// The agents (none: the single agent `main`).
    pub list: Option<Vec<AgentConfig>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentDefaults {
    pub model: Option<ModelRef>,
    pub heartbeat: Option<HeartbeatConfig>,
    pub execution_worker: Option<ExecutionWorkerConfig>,
    /// Embeddings for the knowledge library's semantic search (upstream's key).
    pub memory_search: Option<MemorySearchConfig>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    pub id: String,
    pub name: Option<String>,
    /// The agent requests without an agent id go to.
    pub default: Option<bool>,
    /// How the agent presents itself (`name`, `emoji`, `avatar`…).
    #[schemars(with = "Option<Map<String, Value>>")]
    pub identity: Option<Value>,
    pub model: Option<ModelRef>,
    pub heartbeat: Option<HeartbeatConfig>,
    pub execution_worker: Option<ExecutionWorkerConfig>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `agents.defaults.memorySearch`: an OpenAI-compatible embeddings endpoint
/// (`POST {baseUrl}/embeddings`: Ollama, OpenAI, LM Studio, vLLM).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemorySearchConfig {
    /// `false` turns semantic search off (default on when `remote.baseUrl` or the provider
    /// names an endpoint).
    pub enabled: Option<bool>,
    /// `openai` (the default base URL is OpenAI's), `ollama`, or any OpenAI-compatible name.
    pub provider: Option<String>,
    /// The embeddings model, e.g. `nomic-embed-text` or `text-embedding-3-small`.
    pub model: Option<String>,
    pub remote: Option<MemorySearchRemote>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemorySearchRemote {
    pub base_url: Option<String>,
    /// A literal key, or `"${ENV_NAME}"` to read it from the node-agent's environment.
    pub api_key: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `knowledge` [EXT]: limits of the knowledge library's ingest.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeConfig {
    /// Files in one ingest call (default 100).
    pub max_files: Option<usize>,
    /// Bytes of one file after decoding (default 25 MiB).
    pub max_file_bytes: Option<usize>,
    /// Pages of one PDF read (default 2000); a longer PDF is read up to it and says so.
    pub pdf_max_pages: Option<usize>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `messages`: how replies are delivered.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagesConfig {
    /// Text-to-speech (`tts.*`, the agent's `tts` tool).
    pub tts: Option<TtsConfig>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `messages.tts`, upstream's keys plus `cli` and `openai.baseUrl` [EXT]. API keys are
/// literals or `"${ENV_NAME}"` references read on the node-agent that speaks.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TtsConfig {
    /// Automatic speech for replies: `off` (default), `always`, `inbound`, `tagged`.
    pub auto: Option<String>,
    /// Legacy switch, read when `auto` is unset (`true` = `always`).
    pub enabled: Option<bool>,
    /// `openai`, `elevenlabs` or `cli` (`edge` needs Microsoft's service: not available).
    pub provider: Option<String>,
    /// Providers tried after the first one fails, in this order (then the rest).
    pub fallback_order: Option<Vec<String>>,
    /// Longest text converted, in characters (default 4096).
    pub max_text_length: Option<usize>,
    /// Time one provider may take, in milliseconds (1000…120000, default 30000).
    pub timeout_ms: Option<u64>,
    pub openai: Option<OpenAiTtsConfig>,
    pub elevenlabs: Option<ElevenLabsTtsConfig>,
    pub cli: Option<CliTtsConfig>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// OpenAI-compatible speech: `POST {baseUrl}/audio/speech`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenAiTtsConfig {
    /// Default `https://api.openai.com/v1` (or `OPENAI_TTS_BASE_URL`); any server that
    /// speaks the API (a local one needs no key).
    pub base_url: Option<String>,
    /// A literal key or `"${ENV_NAME}"` (default: `OPENAI_API_KEY`).
    pub api_key: Option<String>,
    /// Default `gpt-4o-mini-tts`.
    pub model: Option<String>,
    /// Default `alloy`.
    pub voice: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// ElevenLabs: `POST {baseUrl}/v1/text-to-speech/{voiceId}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElevenLabsTtsConfig {
    /// Default `https://api.elevenlabs.io`.
    pub base_url: Option<String>,
    /// A literal key or `"${ENV_NAME}"` (default: `ELEVENLABS_API_KEY`, `XI_API_KEY`).
    pub api_key: Option<String>,
    pub voice_id: Option<String>,
    pub model_id: Option<String>,
    pub seed: Option<u64>,
    pub apply_text_normalization: Option<String>,
    pub language_code: Option<String>,
    pub voice_settings: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A local command that speaks offline [EXT]. Without `command`, `espeak-ng` when it is
/// installed.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CliTtsConfig {
    /// Program and arguments: a list, or one string split on whitespace.
    /// `{{TEXT_FILE}}` and `{{OUTPUT_FILE}}` are replaced by the files it reads and writes;
    /// it runs without a shell.
    pub command: Option<CommandLine>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A command as the config writes it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandLine {
    Words(Vec<String>),
    Line(String),
}

impl CommandLine {
    /// Program first, then its arguments.
    pub fn words(&self) -> Vec<String> {
        match self {
            CommandLine::Words(words) => words.clone(),
            CommandLine::Line(line) => line.split_whitespace().map(str::to_string).collect(),
        }
    }
}

/// `"provider/model"`, or `{primary, fallbacks}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ModelRef {
    Name(String),
    Choice {
        primary: String,
        #[serde(default)]
        fallbacks: Vec<String>,
    },
}

/// How a duration is written in the config, for its schema: `"30m"`, `"1h"`, or
/// milliseconds (the value itself is read by `parse_duration`).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum DurationSetting {
    Text(String),
    Milliseconds(u64),
}

/// The periodic heartbeat turn of an agent (one per agent across the cluster).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatConfig {
    /// Interval (`"30m"`, `"1h"`, or milliseconds); `"0"`/absent: no heartbeat.
    #[schemars(with = "Option<DurationSetting>")]
    pub every: Option<Value>,
    /// The message of each heartbeat turn.
    pub prompt: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The autonomous execution worker of an agent (PROTOCOL.md §5.8).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionWorkerConfig {
    pub enabled: Option<bool>,
    /// Cycle interval (`"20m"`, or milliseconds).
    #[schemars(with = "Option<DurationSetting>")]
    pub every: Option<Value>,
    pub model: Option<String>,
    pub max_run_minutes: Option<u64>,
    pub max_tasks_per_cycle: Option<u64>,
    pub session_main_key: Option<String>,
    pub scope: Option<String>,
    pub require_evidence: Option<bool>,
    pub max_no_progress_attempts: Option<u64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelsConfig {
    pub providers: Option<BTreeMap<String, ProviderConfig>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    pub api: Option<ProviderApi>,
    pub base_url: Option<String>,
    /// A literal key, or `"${ENV_NAME}"` to read it from the node-agent's environment.
    pub api_key: Option<String>,
    /// Environment variable holding the key on the node-agents.
    pub api_key_env: Option<String>,
    pub models: Option<Vec<ModelEntry>>,
    pub max_retries: Option<u32>,
    pub timeout_ms: Option<u64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
pub enum ProviderApi {
    #[serde(rename = "openai-completions")]
    OpenAiCompletions,
    #[serde(rename = "anthropic-messages")]
    AnthropicMessages,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelEntry {
    pub id: String,
    pub name: Option<String>,
    pub context_window: Option<u64>,
    pub reasoning: Option<bool>,
    pub input: Option<Vec<String>>,
    /// Prices, USD per million tokens (`usage.cost`).
    pub cost: Option<ModelCost>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelCost {
    pub input: Option<f64>,
    pub output: Option<f64>,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronConfig {
    /// `false` stops every scheduler (jobs stay stored; `cron.run` with `force` still runs).
    pub enabled: Option<bool>,
    /// After an outage: `"once"` (default) runs a job that missed occurrences once,
    /// `"skip"` only moves it to its next occurrence.
    pub catch_up: Option<CatchUp>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    #[default]
    Once,
    Skip,
}

/// `config.schema`'s `schema`: the typed config's JSON Schema, as the dashboard's forms
/// read it (`crate::config_form`).
pub fn schema() -> &'static Value {
    // Built once: it depends on the types only, and `config.schema.lookup` reads it often.
    static SCHEMA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let raw =
            serde_json::to_value(schemars::schema_for!(ArgentConfig)).expect("schemas serialize");
        crate::config_form::form_schema(&raw)
    })
}

/// What protocol-4 readers see in place of a secret: upstream's marker, which the Control
/// UI recognises (it offers no "reveal" for it and sends it back unchanged on save).
pub const REDACTED: &str = "__OPENCLAW_REDACTED__";

/// Whether a key names a secret (or a group of them): `…token`, `…password`, `…secret`,
/// API/private keys, credentials, HTTP headers and cookies (`maxTokens` is not one).
fn is_secret_key(key: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "token",
        "password",
        "secret",
        "secrets",
        "apikey",
        "apikeys",
        "api_key",
        "privatekey",
        "accesskey",
        "credentials",
        "authorization",
        "cookie",
        "cookies",
        "headers",
    ];
    let key = key.to_ascii_lowercase();
    key == "key" || SUFFIXES.iter().any(|word| key.ends_with(word))
}

/// The document with every secret replaced by [`REDACTED`] (gateway token and password,
/// provider keys, channel secrets), for readers without admin. Under a secret-named key
/// every string is masked, however deep (`apiKeys: [..]`, `token: {value}`, `headers`).
pub fn redacted(document: &Value) -> Value {
    mask(document, false)
}

/// Puts the stored value back wherever a client sent [`REDACTED`] (what `config.get` gave
/// it): a UI that saves the document it was shown keeps the secrets it never saw.
/// `Err(path)` when the marker stands where nothing is stored.
pub fn restore_redacted(value: &mut Value, stored: &Value) -> Result<(), String> {
    restore(value, Some(stored), "")
}

fn restore(value: &mut Value, stored: Option<&Value>, path: &str) -> Result<(), String> {
    match value {
        Value::String(text) if text == REDACTED => match stored {
            Some(kept) if !kept.is_null() => {
                *value = kept.clone();
                Ok(())
            }
            _ => Err(if path.is_empty() {
                "root".into()
            } else {
                path.to_string()
            }),
        },
        Value::Object(map) => map.iter_mut().try_for_each(|(key, v)| {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            restore(v, stored.and_then(|s| s.get(key.as_str())), &at)
        }),
        Value::Array(items) => {
            let stored = stored.and_then(Value::as_array);
            let same_length = stored.is_some_and(|s| s.len() == items.len());
            items.iter_mut().enumerate().try_for_each(|(i, v)| {
                // An element is matched by its identity (`id`, `name`, `accountId`), else
                // by position only when the array kept its length: a removed or inserted
                // element must not hand one entry's secret to another.
                // Where two stored elements share an identity, the one at the same position
                // is the one (else the first would hand its secret to both).
                let by_identity = identity(v).and_then(|(key, id)| {
                    let stored = stored?;
                    let same = |old: &&Value| old.get(key).and_then(Value::as_str) == Some(id);
                    stored
                        .get(i)
                        .filter(same)
                        .or_else(|| stored.iter().find(same))
                });
                let kept = match by_identity {
                    Some(old) => Some(old),
                    None if identity(v).is_none() && same_length => stored.and_then(|s| s.get(i)),
                    None => None,
                };
                restore(v, kept, &format!("{path}[{i}]"))
            })
        }
        _ => Ok(()),
    }
}

/// What names an element of an array of objects. A masked name (the element sits under a
/// secret-named key) names nothing: the element is then matched by position.
fn identity(value: &Value) -> Option<(&'static str, &str)> {
    ["id", "name", "accountId"].into_iter().find_map(|key| {
        let id = value.get(key)?.as_str()?;
        (id != REDACTED).then_some((key, id))
    })
}

fn mask(value: &Value, secret: bool) -> Value {
    match value {
        Value::String(_) if secret => Value::String(REDACTED.to_string()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, v)| (key.clone(), mask(v, secret || is_secret_key(key))))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| mask(v, secret)).collect()),
        other => other.clone(),
    }
}

/// `config.schema`'s `uiHints`: labels and groups of the main settings, and which are secret.
pub fn ui_hints() -> Value {
    let hints: &[(&str, &str, &str, bool)] = &[
        ("gateway.port", "Port", "Gateway", false),
        (
            "gateway.tickIntervalMs",
            "Tick interval (ms)",
            "Gateway",
            false,
        ),
        ("gateway.auth.mode", "Auth mode", "Gateway", false),
        ("gateway.auth.token", "Gateway token", "Gateway", true),
        ("gateway.auth.password", "Gateway password", "Gateway", true),
        ("gateway.token", "Gateway token (alias)", "Gateway", true),
        ("session.mainKey", "Main session key", "Sessions", false),
        ("session.scope", "Session scope", "Sessions", false),
        ("agents.defaults.model", "Default model", "Agents", false),
        (
            "agents.defaults.heartbeat.every",
            "Heartbeat interval",
            "Agents",
            false,
        ),
        (
            "agents.defaults.heartbeat.prompt",
            "Heartbeat prompt",
            "Agents",
            false,
        ),
        (
            "agents.defaults.executionWorker.every",
            "Execution worker interval",
            "Agents",
            false,
        ),
        ("agents.list", "Agents", "Agents", false),
        ("models.providers", "Model providers", "Models", false),
        ("models.providers.*.apiKey", "API key", "Models", true),
        (
            "models.providers.*.apiKeyEnv",
            "API key variable",
            "Models",
            false,
        ),
        ("cron.enabled", "Cron enabled", "Cron", false),
        ("cron.catchUp", "Missed runs", "Cron", false),
    ];
    let mut out = Map::new();
    for (order, (path, label, group, sensitive)) in hints.iter().enumerate() {
        let mut hint = json!({"label": label, "group": group, "order": order});
        if *sensitive {
            hint["sensitive"] = json!(true);
        }
        out.insert(path.to_string(), hint);
    }
    Value::Object(out)
}

/// RFC 7396 JSON merge patch: objects merge recursively, `null` deletes, the rest replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

#[cfg(test)]
mod tests {
    #[test]
    fn masked_arrays_are_restored_element_by_element() {
        use super::*;
        // Both found by the `config_redaction` fuzz target: an `id` masked under a
        // secret-named key could not be saved back, and two elements with one id both got
        // the first one's secret.
        for stored in [
            json!({"p": {"cookie": [{"id": "m"}, {"id": "n", "v": "x"}]}}),
            json!({"hooks": [{"id": "a", "token": "t1"}, {"id": "a", "token": "t2"}]}),
        ] {
            let mut shown = redacted(&stored);
            assert_ne!(shown, stored);
            restore_redacted(&mut shown, &stored).unwrap();
            assert_eq!(shown, stored);
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_the_parser_recurses() {
        use super::*;
        // 100,000 levels overflowed a 2 MiB stack and aborted the process before this check:
        // a `config.set` could take a gateway or node-agent down.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse(&deep).unwrap_err();
        assert!(err.contains("deeper than 128"), "{err}");
        let fine = format!(
            "{{a: {}1{} /* [[[[ */, b: '[[[[', // {{{{{{\n}}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(parse(&fine).is_ok(), "{:?}", parse(&fine));
    }

    #[test]
    fn snapshot_accessors_inherit_from_defaults() {
        let config = SharedConfig::from_document(json!({
            "agents": {
                "defaults": {"model": "p/base", "heartbeat": {"every": "30m", "prompt": "beat"},
                             "executionWorker": {"enabled": true, "every": "20m", "maxTasksPerCycle": 2}},
                "list": [{"id": "main"},
                         {"id": "Ops", "model": {"primary": "p/big", "fallbacks": ["p/small"]},
                          "heartbeat": {"every": "0"}, "executionWorker": {"maxTasksPerCycle": 5}}]
            },
            "cron": {"enabled": false, "catchUp": "skip"},
            "gateway": {"tickIntervalMs": 5000},
            "custom": {"kept": true}
        }));
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert_eq!(
            config.heartbeat_every("main"),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(config.heartbeat_every("ops"), None, "\"0\" turns it off");
        assert_eq!(config.heartbeat_prompt(), Some("beat"));
        let worker = config.execution_worker("ops");
        assert_eq!(
            (worker.enabled, worker.max_tasks_per_cycle),
            (Some(true), Some(5))
        );
        assert!(config.providers().is_none(), "no models section");
        assert!(!config.cron_enabled());
        assert_eq!(config.cron_catch_up(), CatchUp::Skip);
        assert_eq!(config.tick_interval_ms(), Some(5000));
        assert_eq!(config.document()["custom"]["kept"], true);
        assert_eq!(config.agents().default_id, "main");
    }

    #[test]
    fn an_invalid_document_keeps_its_valid_parts_and_says_why() {
        let config = SharedConfig::from_document(json!({
            "gateway": {"tickIntervalMs": "soon"},
            "cron": {"enabled": false},
            "agents": {
                "defaults": {"heartbeat": {"every": "30m"}},
                "list": [{"name": "no id"}, {"id": "ops", "heartbeat": {"every": "1h"}}]
            }
        }));
        assert!(!config.problems().is_empty());
        assert_eq!(
            config.tick_interval_ms(),
            None,
            "the invalid section reads as absent"
        );
        assert!(!config.cron_enabled(), "a valid section still counts");
        assert_eq!(config.agents().default_id, "ops");
        assert_eq!(
            config.heartbeat_every("ops"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            config.heartbeat_every("main"),
            Some(Duration::from_secs(1800))
        );
    }

    use super::*;

    #[test]
    fn json5_with_comments_parses_and_hashes_the_raw_text() {
        let raw = "{ // comment\n gateway: { tickIntervalMs: 5000, }, }";
        let value = parse(raw).unwrap();
        assert_eq!(value["gateway"]["tickIntervalMs"], 5000);
        assert_eq!(
            hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(parse("{ nope").is_err());
    }

    #[test]
    fn validation_names_the_path() {
        let issues = validate(&json!({"gateway": {"tickIntervalMs": "fast"}})).unwrap_err();
        assert_eq!(issues[0].path, "gateway.tickIntervalMs");
        let issues = validate(&json!({"gateway": {"tickIntervalMs": 5}})).unwrap_err();
        assert_eq!(issues[0].message, "must be between 1000 and 3600000");
        let issues =
            validate(&json!({"agents": {"list": [{"id": "a"}, {"id": "A"}]}})).unwrap_err();
        assert_eq!(issues[0].path, "agents.list.1.id");
        let issues = validate(&json!({"agents": {"defaults": {"heartbeat": {"every": "soon"}}}}))
            .unwrap_err();
        assert_eq!(issues[0].path, "agents.defaults.heartbeat.every");
        // Unknown sections are kept, not refused.
        assert!(validate(&json!({"channels": {"x": 1}, "models": {"providers": {}}})).is_ok());
        assert!(validate(&json!([])).is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "list": [1, 2], "gone": true});
        merge_patch(
            &mut doc,
            &json!({"a": {"b": 9, "c": null}, "list": [3], "gone": null, "new": {"x": 1}}),
        );
        assert_eq!(doc, json!({"a": {"b": 9}, "list": [3], "new": {"x": 1}}));
    }

    #[test]
    fn the_schema_describes_the_sections() {
        let schema = schema();
        let text = schema.to_string();
        assert!(text.contains("tickIntervalMs"), "{text}");
        assert!(text.contains("executionWorker"));
        assert!(ui_hints()["gateway.auth.token"]["sensitive"] == true);
    }

    #[test]
    fn redaction_masks_every_secret_and_keeps_the_rest() {
        let doc = serde_json::json!({
            "gateway": {"port": 1, "auth": {"mode": "token", "token": "s3cret", "password": "pw"}},
            "models": {"providers": {"openai": {"apiKey": "sk-1", "baseUrl": "http://x", "maxTokens": 9}}},
            "channels": [{"botToken": "b", "signingSecret": "c", "name": "slack"}],
            "more": {"apiKeys": ["k1"], "token": {"value": "t"}, "headers": {"Authorization": "Bearer x"}},
        });
        let masked = redacted(&doc);
        assert_eq!(masked["gateway"]["auth"]["token"], REDACTED);
        assert_eq!(masked["gateway"]["auth"]["password"], REDACTED);
        assert_eq!(masked["gateway"]["auth"]["mode"], "token");
        assert_eq!(masked["models"]["providers"]["openai"]["apiKey"], REDACTED);
        assert_eq!(
            masked["models"]["providers"]["openai"]["baseUrl"],
            "http://x"
        );
        assert_eq!(masked["channels"][0]["botToken"], REDACTED);
        assert_eq!(masked["channels"][0]["signingSecret"], REDACTED);
        assert_eq!(masked["channels"][0]["name"], "slack");
        assert!(!masked.to_string().contains("s3cret"));
        assert_eq!(masked["more"]["apiKeys"][0], REDACTED);
        assert_eq!(masked["more"]["token"]["value"], REDACTED);
        assert_eq!(masked["more"]["headers"]["Authorization"], REDACTED);
    }

    #[test]
    fn redacted_markers_take_back_the_stored_values() {
        let stored = json!({"gateway": {"auth": {"token": "t0k"}},
                            "models": {"providers": {"p": {"apiKey": "k", "models": [{"id": "m"}]}}}});
        let mut sent = redacted(&stored);
        sent["models"]["providers"]["p"]["models"][0]["id"] = json!("m2");
        restore_redacted(&mut sent, &stored).unwrap();
        assert_eq!(sent["gateway"]["auth"]["token"], "t0k");
        assert_eq!(sent["models"]["providers"]["p"]["apiKey"], "k");
        assert_eq!(sent["models"]["providers"]["p"]["models"][0]["id"], "m2");
        // Array elements are matched by identity: removing the first entry keeps each
        // secret with its own entry.
        let two = json!({"hooks": [{"id": "a", "token": "ta"}, {"id": "b", "token": "tb"}]});
        let mut one = json!({"hooks": [{"id": "b", "token": REDACTED}]});
        restore_redacted(&mut one, &two).unwrap();
        assert_eq!(one["hooks"][0]["token"], "tb");
        // Without an identity, only an array of the same length is matched by position.
        let plain = json!({"keys": [{"k": "1"}, {"k": "2"}]});
        let mut shorter = json!({"keys": [{"k": REDACTED}]});
        assert_eq!(
            restore_redacted(&mut shorter, &plain),
            Err("keys[0].k".to_string())
        );
        let mut orphan = json!({"channels": [{"botToken": REDACTED}]});
        assert_eq!(
            restore_redacted(&mut orphan, &stored),
            Err("channels[0].botToken".to_string())
        );
    }
}
