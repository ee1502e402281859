//! Embeddings through an OpenAI-compatible endpoint (`POST {baseUrl}/embeddings`): Ollama,
//! OpenAI, LM Studio, vLLM… configured by upstream's `agents.defaults.memorySearch`
//! (`{provider, model, remote: {baseUrl, apiKey}}`, `apiKey` also as `${ENV}`).

use std::time::Duration;

use serde_json::{json, Value};

use argent_proto::config::SharedConfig;

/// Inputs per request (every server accepts this many).
const BATCH: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("embeddings endpoint {url} failed: {message}")]
    Failed { url: String, message: String },
    #[error("{0}")]
    Config(String),
}

/// A configured embeddings endpoint.
#[derive(Debug, Clone)]
pub struct Embedder {
    http: reqwest::Client,
    url: String,
    pub model: String,
    api_key: Option<String>,
}

impl Embedder {
    /// The endpoint `memorySearch` names; `Ok(None)` when semantic search is not configured
    /// (or `enabled: false`).
    pub fn from_config(config: &SharedConfig) -> Result<Option<Embedder>, EmbedError> {
        let Some(settings) = config.memory_search() else {
            return Ok(None);
        };
        if settings.enabled == Some(false) {
            return Ok(None);
        }
        let provider = settings
            .provider
            .as_deref()
            .unwrap_or("ollama")
            .to_ascii_lowercase();
        let remote = settings.remote.as_ref();
        let base = remote
            .and_then(|r| r.base_url.clone())
            .filter(|u| !u.trim().is_empty())
            .or_else(|| default_base(&provider).map(str::to_string))
            .ok_or_else(|| {
                EmbedError::Config(format!(
                    "agents.defaults.memorySearch: provider {provider:?} needs remote.baseUrl"
                ))
            })?;
        let model = settings
            .model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .or_else(|| default_model(&provider).map(str::to_string))
            .ok_or_else(|| {
                EmbedError::Config("agents.defaults.memorySearch.model is required".into())
            })?;
        let api_key = match remote.and_then(|r| r.api_key.as_deref()) {
            Some(key) => argent_proto::secret::resolve(Some(key)),
            None if provider == "openai" => std::env::var("OPENAI_API_KEY").ok(),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| EmbedError::Config(format!("HTTP client: {e}")))?;
        Ok(Some(Embedder {
            http,
            url: format!("{}/embeddings", base.trim_end_matches('/')),
            model,
            api_key,
        }))
    }

    /// One vector per input, in order.
    pub async fn embed(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(BATCH) {
            out.extend(self.embed_batch(batch).await?);
        }
        Ok(out)
    }

    async fn embed_batch(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let failed = |message: String| EmbedError::Failed {
            url: self.url.clone(),
            message,
        };
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({"model": self.model, "input": inputs}));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| failed(format!("HTTP {status}: unreadable answer: {e}")))?;
        if !status.is_success() {
            let message = body
                .pointer("/error/message")
                .or_else(|| body.get("error"))
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
                .unwrap_or_default();
            return Err(failed(format!("HTTP {status}: {message}")));
        }
        let data = body
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| failed("the answer has no data[]".into()))?;
        let mut vectors: Vec<(usize, Vec<f32>)> = Vec::with_capacity(data.len());
        for (position, item) in data.iter().enumerate() {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .map_or(position, |i| i as usize);
            let vector: Vec<f32> = item
                .get("embedding")
                .and_then(Value::as_array)
                .ok_or_else(|| failed("an item has no embedding".into()))?
                .iter()
                .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                .collect();
            if vector.is_empty() {
                return Err(failed("an embedding is empty".into()));
            }
            vectors.push((index, vector));
        }
        if vectors.len() != inputs.len() {
            return Err(failed(format!(
                "{} embeddings for {} inputs",
                vectors.len(),
                inputs.len()
            )));
        }
        vectors.sort_by_key(|(index, _)| *index);
        Ok(vectors.into_iter().map(|(_, v)| v).collect())
    }
}

fn default_base(provider: &str) -> Option<&'static str> {
    match provider {
        "openai" => Some("https://api.openai.com/v1"),
        "ollama" => Some("http://127.0.0.1:11434/v1"),
        "lmstudio" => Some("http://127.0.0.1:1234/v1"),
        _ => None,
    }
}

/// Upstream's default model per provider.
fn default_model(provider: &str) -> Option<&'static str> {
    match provider {
        "openai" => Some("text-embedding-3-small"),
        "ollama" => Some("nomic-embed-text"),
        "lmstudio" => Some("text-embedding-nomic-embed-text-v1.5"),
        _ => None,
    }
}
