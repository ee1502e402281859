//! Model providers (`models.providers` of the shared config), spoken through the `genai`
//! crate: OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp, LM Studio,
//! OpenRouter) and Anthropic Messages, streaming, with tool calls.
//!
//! API keys come from environment variables named in the config (`apiKeyEnv`, or
//! `apiKey: "${NAME}"`); a literal `apiKey` works too but is never echoed by any method.
//! A failed request is retried with exponential backoff on 429/5xx and on transport errors
//! that happen before anything was streamed; once output has streamed, a failure ends the
//! turn (it cannot be replayed without duplicating text).

use std::time::Duration;

use futures_util::StreamExt;
use genai::adapter::AdapterKind;
use genai::chat::{ChatMessage, ChatOptions, ChatRequest, ChatStreamEvent, Tool, ToolCall};
use genai::resolver::{AuthData, Endpoint};
use genai::{ModelIden, ServiceTarget};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use argent_proto::secret::SecretRef;

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAiCompletions,
    AnthropicMessages,
}

impl Api {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "openai-completions" | "openai" | "openai-compatible" | "ollama" => {
                Some(Api::OpenAiCompletions)
            }
            "anthropic-messages" | "anthropic" => Some(Api::AnthropicMessages),
            _ => None,
        }
    }

    fn adapter(self) -> AdapterKind {
        match self {
            Api::OpenAiCompletions => AdapterKind::OpenAI,
            Api::AnthropicMessages => AdapterKind::Anthropic,
        }
    }

    fn default_base(self) -> &'static str {
        match self {
            Api::OpenAiCompletions => "https://api.openai.com/v1/",
            Api::AnthropicMessages => "https://api.anthropic.com/v1/",
        }
    }
}

/// A model a provider offers, as configured (`models.providers.<id>.models[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    pub name: String,
    pub context_window: Option<u64>,
    pub reasoning: Option<bool>,
    pub input: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub id: String,
    pub api: Api,
    base_url: String,
    api_key_env: Option<String>,
    literal_key: Option<String>,
    pub models: Vec<ModelInfo>,
    pub max_retries: u32,
    /// Longest silence tolerated between two stream events (and before the first).
    pub idle_timeout: Duration,
}

/// Why a provider configuration or call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    Config(String),
    #[error("model provider {provider} failed: {message}")]
    Call {
        provider: String,
        message: String,
        status: Option<u16>,
    },
    #[error("model stream from {provider} interrupted: {message}")]
    Interrupted { provider: String, message: String },
    #[error("model provider {provider} sent nothing for {seconds} s")]
    Idle { provider: String, seconds: u64 },
}

/// What the README says about configuring a provider, quoted in errors.
pub const HOW_TO_CONFIGURE: &str = "no model provider is configured: add one under models.providers in the config (e.g. {\"models\":{\"providers\":{\"ollama\":{\"api\":\"openai-completions\",\"baseUrl\":\"http://127.0.0.1:11434/v1\",\"models\":[{\"id\":\"llama3.2\"}]}}}} or an Anthropic provider with \"api\":\"anthropic-messages\" and \"apiKeyEnv\":\"ANTHROPIC_API_KEY\"); see the README";

impl Provider {
    fn from_config(id: &str, config: &Value) -> Result<Self, ProviderError> {
        let text = |key: &str| config.get(key).and_then(Value::as_str).map(str::to_string);
        let api_name = text("api").unwrap_or_else(|| "openai-completions".into());
        let api = Api::parse(&api_name).ok_or_else(|| {
            ProviderError::Config(format!(
                "models.providers.{id}.api {api_name:?} is not supported (use \"openai-completions\" or \"anthropic-messages\")"
            ))
        })?;
        let mut base_url = text("baseUrl").unwrap_or_else(|| api.default_base().to_string());
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        // `apiKey: "${NAME}"` names a variable, like `apiKeyEnv: "NAME"`.
        let (api_key_env, literal_key) = match (text("apiKeyEnv"), text("apiKey")) {
            (Some(env), _) => (Some(env), None),
            (None, Some(key)) => match SecretRef::parse(&key) {
                Some(SecretRef::Env(env)) => (Some(env.to_string()), None),
                Some(SecretRef::Literal(_)) => (None, Some(key)),
                None => (None, None),
            },
            (None, None) => (None, None),
        };
        let models = config
            .get("models")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(model_info).collect())
            .unwrap_or_default();
        Ok(Provider {
            id: id.to_string(),
            api,
            base_url,
            api_key_env,
            literal_key,
            models,
            max_retries: config
                .get("maxRetries")
                .and_then(Value::as_u64)
                .unwrap_or(3)
                .min(10) as u32,
            idle_timeout: Duration::from_millis(
                config
                    .get("timeoutMs")
                    .and_then(Value::as_u64)
                    .unwrap_or(120_000)
                    .clamp(100, 3_600_000),
            ),
        })
    }

    fn key(&self) -> Result<String, ProviderError> {
        if let Some(env) = &self.api_key_env {
            return std::env::var(env).map_err(|_| {
                ProviderError::Config(format!(
                    "models.providers.{}: environment variable {env} (its API key) is not set on this node-agent",
                    self.id
                ))
            });
        }
        // Local servers (Ollama, llama.cpp) take any key.
        Ok(self.literal_key.clone().unwrap_or_else(|| "none".into()))
    }

    fn target(&self, model: &str) -> Result<ServiceTarget, ProviderError> {
        Ok(ServiceTarget {
            endpoint: Endpoint::from_owned(self.base_url.clone()),
            auth: AuthData::from_single(self.key()?),
            model: ModelIden::new(self.api.adapter(), model.to_string()),
        })
    }

    fn call_error(&self, err: &genai::Error) -> ProviderError {
        ProviderError::Call {
            provider: self.id.clone(),
            message: first_line(&err.to_string()),
            status: err.status().map(|s| s.as_u16()),
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(400)
        .collect()
}

fn model_info(item: &Value) -> Option<ModelInfo> {
    let id = item.get("id").and_then(Value::as_str)?.to_string();
    Some(ModelInfo {
        name: item
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(&id)
            .to_string(),
        context_window: item.get("contextWindow").and_then(Value::as_u64),
        reasoning: item.get("reasoning").and_then(Value::as_bool),
        input: item.get("input").filter(|v| v.is_array()).cloned(),
        id,
    })
}

/// The providers of one config version, and the model each agent uses.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    pub list: Vec<Provider>,
    default_model: Option<String>,
    agent_models: Vec<(String, String)>,
}

/// A resolved `provider/model` choice.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    pub provider: Provider,
    pub model: String,
    pub context_window: Option<u64>,
    /// The config's `reasoning` flag of the model, when it says.
    pub reasoning: Option<bool>,
    /// The reasoning asked of this turn (`runtime::thinking`); `None`: the provider's default.
    pub effort: Option<genai::chat::ReasoningEffort>,
}

fn model_ref(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("primary").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Providers {
    pub fn from_config(config: &Value) -> Result<Self, ProviderError> {
        let mut list = Vec::new();
        if let Some(map) = config
            .pointer("/models/providers")
            .and_then(Value::as_object)
        {
            for (id, provider) in map {
                list.push(Provider::from_config(id, provider)?);
            }
        }
        let agent_models = config
            .pointer("/agents/list")
            .and_then(Value::as_array)
            .map(|agents| {
                agents
                    .iter()
                    .filter_map(|a| {
                        let id = a.get("id")?.as_str()?.to_ascii_lowercase();
                        Some((id, model_ref(a.get("model"))?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Providers {
            list,
            default_model: model_ref(config.pointer("/agents/defaults/model")),
            agent_models,
        })
    }

    /// The model for `agent_id`: its own, else the default, else the first configured.
    pub fn choose(&self, agent_id: &str) -> Result<ModelChoice, ProviderError> {
        self.choose_for_session(agent_id, None)
    }

    /// The model a session runs on: the one `sessions.patch` picked for it
    /// (`provider/model`), else its agent's (see [`Providers::choose`]). A pick whose
    /// provider has since left the config falls back to the agent's model: removing a
    /// provider must not leave sessions that cannot run.
    pub fn choose_for_session(
        &self,
        agent_id: &str,
        picked: Option<&str>,
    ) -> Result<ModelChoice, ProviderError> {
        if self.list.is_empty() {
            return Err(ProviderError::Config(HOW_TO_CONFIGURE.into()));
        }
        if let Some(reference) = picked {
            match self.choice_of(reference) {
                Ok(choice) => return Ok(choice),
                Err(err) => {
                    tracing::warn!(%err, picked = reference, agent = agent_id, "the session's model is no longer configured; the agent's model runs")
                }
            }
        }
        let wanted = self
            .agent_models
            .iter()
            .find(|(id, _)| id == agent_id)
            .map(|(_, m)| m.clone())
            .or_else(|| self.default_model.clone());
        match wanted {
            Some(reference) => self.choice_of(&reference),
            None => {
                let provider = &self.list[0];
                let model = provider.models.first().ok_or_else(|| {
                    ProviderError::Config(format!(
                        "models.providers.{} lists no models and agents.defaults.model is not set",
                        provider.id
                    ))
                })?;
                Ok(Self::choice(provider, &model.id))
            }
        }
    }

    /// The configured provider and model a `provider/model` reference names.
    fn choice_of(&self, reference: &str) -> Result<ModelChoice, ProviderError> {
        let (provider_id, model) = reference.split_once('/').ok_or_else(|| {
            ProviderError::Config(format!(
                "model {reference:?} must be written provider/model"
            ))
        })?;
        let provider = self
            .list
            .iter()
            .find(|p| p.id == provider_id)
            .ok_or_else(|| {
                ProviderError::Config(format!(
                    "model {reference:?} names provider {provider_id:?}, which is not under models.providers"
                ))
            })?;
        Ok(Self::choice(provider, model))
    }

    fn choice(provider: &Provider, model: &str) -> ModelChoice {
        let info = provider.models.iter().find(|m| m.id == model);
        ModelChoice {
            context_window: info.and_then(|m| m.context_window),
            reasoning: info.and_then(|m| m.reasoning),
            effort: None,
            provider: provider.clone(),
            model: model.to_string(),
        }
    }

    /// What a user typed for a session's model, as `(provider, model)`: `provider/model` of
    /// a configured provider (one of its listed models, when it lists them), or a bare model
    /// id that exactly one provider lists.
    pub fn resolve_pick(&self, raw: &str) -> Result<(String, String), String> {
        let invalid = || format!("invalid model: {raw}");
        let listed = |p: &Provider, model: &str| {
            p.models.is_empty() || p.models.iter().any(|m| m.id == model)
        };
        if let Some((provider_id, model)) = raw.split_once('/') {
            if let Some(provider) = self.list.iter().find(|p| p.id == provider_id) {
                return if !model.is_empty() && listed(provider, model) {
                    Ok((provider.id.clone(), model.to_string()))
                } else {
                    Err(invalid())
                };
            }
        }
        let mut owners = self
            .list
            .iter()
            .filter(|p| p.models.iter().any(|m| m.id == raw));
        match (owners.next(), owners.next()) {
            (Some(provider), None) => Ok((provider.id.clone(), raw.to_string())),
            _ => Err(invalid()),
        }
    }
}

/// What one streamed model turn produced, piece by piece.
#[derive(Debug)]
pub enum TurnEvent {
    Text(String),
    /// The turn ended: the tool calls it asked for, and usage when the provider sent it.
    Done {
        tool_calls: Vec<ToolCall>,
        input_tokens: u64,
        output_tokens: u64,
    },
}

/// The tool a model may call: name, description, JSON schema of its arguments.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: Value,
}

/// One HTTP client per process: connections to a provider are pooled across runs.
fn http_client() -> Result<&'static genai::Client, ProviderError> {
    static CLIENT: std::sync::OnceLock<genai::Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = genai::Client::new()
        .map_err(|e| ProviderError::Config(format!("cannot set up the HTTP client: {e}")))?;
    Ok(CLIENT.get_or_init(|| client))
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(6)).min(8_000))
}

fn retryable(err: &ProviderError) -> bool {
    match err {
        ProviderError::Call { status, .. } => match status {
            Some(code) => *code == 429 || *code >= 500,
            // Transport failure before any answer.
            None => true,
        },
        ProviderError::Interrupted { .. } => true,
        _ => false,
    }
}

/// One model turn, streamed into `events`: text as it arrives, then `Done`. Retries (429,
/// 5xx, transport errors) only while nothing has been streamed. The caller cancels by
/// dropping the task running this (which closes the HTTP stream).
pub async fn stream_turn(
    choice: ModelChoice,
    system: String,
    messages: Vec<ChatMessage>,
    tools: Vec<ToolSpec>,
    events: mpsc::Sender<TurnEvent>,
) -> Result<(), ProviderError> {
    let client = http_client()?;
    let mut request = ChatRequest::new(messages).with_system(system);
    if !tools.is_empty() {
        request = request.with_tools(tools.into_iter().map(|t| {
            Tool::new(t.name)
                .with_description(t.description)
                .with_schema(t.schema)
        }));
    }
    let mut options = ChatOptions::default()
        .with_capture_usage(true)
        .with_capture_tool_calls(true)
        .with_max_tokens(4096);
    if let Some(effort) = choice.effort.clone() {
        options = options.with_reasoning_effort(effort);
    }
    let provider = &choice.provider;
    let mut attempt = 0;
    loop {
        let mut streamed = false;
        match one_attempt(
            client,
            &choice,
            request.clone(),
            &options,
            &mut streamed,
            &events,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(err) if !streamed && attempt < provider.max_retries && retryable(&err) => {
                attempt += 1;
                tracing::warn!(provider = %provider.id, attempt, %err, "model call failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn one_attempt(
    client: &genai::Client,
    choice: &ModelChoice,
    request: ChatRequest,
    options: &ChatOptions,
    streamed: &mut bool,
    events: &mpsc::Sender<TurnEvent>,
) -> Result<(), ProviderError> {
    let provider = &choice.provider;
    let idle = |_| ProviderError::Idle {
        provider: provider.id.clone(),
        seconds: provider.idle_timeout.as_secs(),
    };
    let target = provider.target(&choice.model)?;
    let response = tokio::time::timeout(
        provider.idle_timeout,
        client.exec_chat_stream(target, request, Some(options)),
    )
    .await
    .map_err(idle)?
    .map_err(|e| provider.call_error(&e))?;
    let mut stream = response.stream;
    loop {
        let event = tokio::time::timeout(provider.idle_timeout, stream.next())
            .await
            .map_err(idle)?;
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(err)) => {
                let failure = provider.call_error(&err);
                return Err(match failure {
                    // An HTTP status is a refusal, not an interruption.
                    ProviderError::Call {
                        status: Some(_), ..
                    } => failure,
                    _ => ProviderError::Interrupted {
                        provider: provider.id.clone(),
                        message: first_line(&err.to_string()),
                    },
                });
            }
            None => {
                return Err(ProviderError::Interrupted {
                    provider: provider.id.clone(),
                    message: "the stream ended without its end event".into(),
                })
            }
        };
        let out = match event {
            ChatStreamEvent::Chunk(chunk) if !chunk.content.is_empty() => {
                *streamed = true;
                TurnEvent::Text(chunk.content)
            }
            ChatStreamEvent::End(end) => {
                let usage = end.captured_usage.clone().unwrap_or_default();
                let tool_calls = end.captured_into_tool_calls().unwrap_or_default();
                let done = TurnEvent::Done {
                    tool_calls,
                    input_tokens: usage.prompt_tokens.unwrap_or(0).max(0) as u64,
                    output_tokens: usage.completion_tokens.unwrap_or(0).max(0) as u64,
                };
                let _ = events.send(done).await;
                return Ok(());
            }
            _ => continue,
        };
        if events.send(out).await.is_err() {
            // Nobody listens any more (the run ended): stop streaming.
            return Ok(());
        }
    }
}

/// `models.list`: the configured models of every provider, plus what the provider's own
/// listing offers where it has one (OpenAI-compatible `/models`). A provider that cannot
/// be listed contributes its configured models only.
pub async fn list_models(providers: &Providers) -> Vec<Value> {
    let Ok(client) = http_client() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for provider in &providers.list {
        let mut ids: Vec<String> = Vec::new();
        for model in &provider.models {
            ids.push(model.id.clone());
            let mut entry = json!({"id": model.id, "name": model.name, "provider": provider.id});
            if let Some(window) = model.context_window {
                entry["contextWindow"] = json!(window);
            }
            if let Some(reasoning) = model.reasoning {
                entry["reasoning"] = json!(reasoning);
            }
            if let Some(input) = &model.input {
                entry["input"] = input.clone();
            }
            out.push(entry);
        }
        if provider.api != Api::OpenAiCompletions {
            continue;
        }
        let Ok(key) = provider.key() else { continue };
        let config = genai::resolver::ProviderConfig {
            endpoint: Some(Endpoint::from_owned(provider.base_url.clone())),
            auth: Some(AuthData::from_single(key)),
        };
        let listed = tokio::time::timeout(
            Duration::from_secs(5),
            client.all_model_names(provider.api.adapter(), config),
        )
        .await;
        match listed {
            Ok(Ok(names)) => {
                for name in names.into_iter().filter(|n| !ids.contains(n)) {
                    out.push(json!({"id": name, "name": name, "provider": provider.id}));
                }
            }
            Ok(Err(err)) => {
                tracing::info!(provider = %provider.id, err = %first_line(&err.to_string()), "model listing failed")
            }
            Err(_) => tracing::info!(provider = %provider.id, "model listing timed out"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_provider_says_how_to_configure_one() {
        let providers = Providers::from_config(&json!({})).unwrap();
        let err = providers.choose("main").unwrap_err().to_string();
        assert!(err.contains("models.providers"), "{err}");
    }

    #[test]
    fn chooses_the_agent_model_then_the_default_then_the_first() {
        let config = json!({
            "models": {"providers": {
                "local": {"api": "openai-completions", "baseUrl": "http://127.0.0.1:1/v1", "models": [{"id": "small", "contextWindow": 8192}]},
                "claude": {"api": "anthropic-messages", "apiKeyEnv": "NOPE_KEY", "models": [{"id": "sonnet"}]}
            }},
            "agents": {"defaults": {"model": {"primary": "local/small"}}, "list": [{"id": "ops", "model": "claude/sonnet"}]}
        });
        let providers = Providers::from_config(&config).unwrap();
        let main = providers.choose("main").unwrap();
        assert_eq!(
            (main.provider.id.as_str(), main.model.as_str()),
            ("local", "small")
        );
        assert_eq!(main.context_window, Some(8192));
        assert_eq!(main.provider.base_url, "http://127.0.0.1:1/v1/");
        let ops = providers.choose("ops").unwrap();
        assert_eq!(ops.provider.api, Api::AnthropicMessages);
        // The key is read from the environment at call time; a missing one is a clear error.
        assert!(ops
            .provider
            .key()
            .unwrap_err()
            .to_string()
            .contains("NOPE_KEY"));
    }

    #[test]
    fn unknown_api_is_refused() {
        let err = Providers::from_config(&json!({"models": {"providers": {"x": {"api": "smtp"}}}}))
            .unwrap_err();
        assert!(err.to_string().contains("not supported"));
    }

    #[test]
    fn only_throttling_and_server_errors_are_retried() {
        let call = |status| ProviderError::Call {
            provider: "p".into(),
            message: "m".into(),
            status,
        };
        assert!(retryable(&call(Some(429))));
        assert!(retryable(&call(Some(503))));
        assert!(retryable(&call(None)));
        assert!(!retryable(&call(Some(400))));
        assert!(!retryable(&call(Some(401))));
    }
}
