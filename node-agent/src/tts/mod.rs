//! Text-to-speech on node-agents (capability `tts`): which provider speaks (the user's
//! preference, then the config, then the first one configured), falling back to the next
//! one when a provider fails, and what `tts.status` / `tts.providers` report about them.
//!
//! * [`providers`] — OpenAI-compatible, ElevenLabs, and a local command (`espeak-ng`).
//! * [`prefs`] — the user's preferences, in shared state (one cluster, one choice).
//! * [`audio`] — output formats per channel and the audio files kept for tools.

pub mod audio;
pub mod prefs;
pub mod providers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use argent_planes::state::{StateError, StateStore};
use argent_proto::config::TtsConfig;

use providers::{configured, not_configured, Job, ProviderId, ORDER};

pub use prefs::TtsPrefs;

/// Default longest text (upstream's `maxTextLength`).
const DEFAULT_MAX_TEXT: usize = 4096;
/// Whatever the config says, one conversion converts at most this much text.
const HARD_MAX_TEXT: usize = 100_000;
/// Default time one provider may take (upstream's `timeoutMs`).
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// One conversion, all fallbacks included, ends within this (the gateway waits 130 s).
const CONVERSION_BUDGET: Duration = Duration::from_secs(120);
/// Conversions one node-agent runs at once (each may hold a process and megabytes of
/// audio); more wait their turn, at most [`QUEUE_WAIT`].
const CONCURRENT_CONVERSIONS: usize = 16;
const QUEUE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    /// Upstream's text, counted as JavaScript counts (UTF-16 units).
    #[error("Text too long ({len} chars, max {max})")]
    TooLong { len: usize, max: usize },
    #[error("TTS conversion failed: {0}")]
    Failed(String),
    /// Every conversion slot stayed taken for [`QUEUE_WAIT`]: retry shortly.
    #[error("speech is busy on this node-agent ({CONCURRENT_CONVERSIONS} conversions running); retry shortly")]
    Busy,
    #[error(transparent)]
    State(#[from] StateError),
}

/// A finished conversion.
pub struct Converted {
    pub audio: Vec<u8>,
    /// The copy kept on this node-agent for a few minutes.
    pub audio_path: PathBuf,
    pub provider: &'static str,
    pub output_format: String,
    pub voice_compatible: bool,
}

/// The speech service of one node-agent.
pub struct Speech {
    http: reqwest::Client,
    state: Arc<dyn StateStore>,
    slots: tokio::sync::Semaphore,
}

impl Speech {
    pub fn new(state: Arc<dyn StateStore>) -> Arc<Self> {
        // Timeouts are per provider and per call (`Job::timeout`). No redirects: neither API
        // redirects, and ElevenLabs' key header would follow one to another host.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Arc::new(Speech {
            http,
            state,
            slots: tokio::sync::Semaphore::new(CONCURRENT_CONVERSIONS),
        })
    }

    pub async fn prefs(&self) -> Result<TtsPrefs, StateError> {
        prefs::read(self.state.as_ref()).await
    }

    pub async fn update_prefs(&self, change: impl Fn(&mut TtsPrefs)) -> Result<(), StateError> {
        prefs::update(self.state.as_ref(), change).await
    }

    /// Converts `text` (already trimmed, not empty) for `channel`, trying the providers in
    /// order until one speaks.
    pub async fn convert(
        &self,
        config: &TtsConfig,
        text: &str,
        channel: Option<&str>,
        overrides: &Map<String, Value>,
    ) -> Result<Converted, TtsError> {
        let max = max_text(config);
        let len = text_len(text);
        if len > max {
            return Err(TtsError::TooLong { len, max });
        }
        let _slot = tokio::time::timeout(QUEUE_WAIT, self.slots.acquire())
            .await
            .map_err(|_| TtsError::Busy)?
            .expect("the semaphore is never closed");
        let prefs = self.prefs().await?;
        let primary = overrides
            .get("provider")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| active_provider(config, &prefs));
        let job = Job {
            text,
            output: audio::output_for(channel),
            overrides,
            timeout: Duration::from_millis(
                config
                    .timeout_ms
                    .unwrap_or(DEFAULT_TIMEOUT_MS)
                    .clamp(1_000, 120_000),
            ),
        };
        let started = Instant::now();
        let (mut failures, mut skipped) = (Vec::new(), Vec::new());
        for slot in order(&primary, config) {
            let provider = match slot {
                Slot::Known(p) if configured(p, config) => p,
                Slot::Known(p) => {
                    skipped.push(not_configured(p));
                    continue;
                }
                Slot::Unknown(name) => {
                    skipped.push(format!(
                        "{name}: unknown provider (use openai, elevenlabs or cli)"
                    ));
                    continue;
                }
            };
            let left = CONVERSION_BUDGET.saturating_sub(started.elapsed());
            if left.is_zero() {
                failures.push(format!("{}: no time left", provider.as_str()));
                break;
            }
            let job = Job {
                timeout: job.timeout.min(left),
                ..job
            };
            match providers::speak(&self.http, provider, config, &job).await {
                Ok(spoken) => {
                    let audio_path = audio::keep(&spoken.bytes, &spoken.extension)
                        .await
                        .map_err(|e| TtsError::Failed(format!("cannot keep the audio: {e}")))?;
                    tracing::info!(
                        provider = provider.as_str(),
                        bytes = spoken.bytes.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "speech converted"
                    );
                    return Ok(Converted {
                        audio: spoken.bytes,
                        audio_path,
                        provider: provider.as_str(),
                        output_format: spoken.output_format,
                        voice_compatible: spoken.voice_compatible,
                    });
                }
                Err(message) => {
                    tracing::warn!(provider = provider.as_str(), %message, "speech provider failed; trying the next");
                    failures.push(message);
                }
            }
        }
        // What was tried and failed says most; when nothing could be tried, why not.
        let reasons = if failures.is_empty() {
            skipped
        } else {
            failures
        };
        Err(TtsError::Failed(reasons.join("; ")))
    }
}

/// A text's length as upstream counts it (JavaScript string length: UTF-16 units).
fn text_len(text: &str) -> usize {
    text.encode_utf16().count()
}

fn max_text(config: &TtsConfig) -> usize {
    config
        .max_text_length
        .unwrap_or(DEFAULT_MAX_TEXT)
        .clamp(1, HARD_MAX_TEXT)
}

/// The provider that speaks first: the preference, the config, the first configured of
/// OpenAI, ElevenLabs and the local command, else upstream's keyless default `edge` (which
/// then explains itself).
pub fn active_provider(config: &TtsConfig, prefs: &TtsPrefs) -> String {
    let chosen = |p: &Option<String>| {
        p.as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
    };
    chosen(&prefs.provider)
        .or_else(|| chosen(&config.provider))
        .or_else(|| {
            [ProviderId::OpenAi, ProviderId::ElevenLabs, ProviderId::Cli]
                .into_iter()
                .find(|p| configured(*p, config))
                .map(|p| p.as_str().to_string())
        })
        .unwrap_or_else(|| ProviderId::Edge.as_str().to_string())
}

/// Automatic speech for replies: the preference, the legacy preference switch, the config.
pub fn auto_mode(config: &TtsConfig, prefs: &TtsPrefs) -> &'static str {
    let normalize = |mode: Option<&str>| match mode.map(|m| m.trim().to_ascii_lowercase()) {
        Some(m) if m == "off" => Some("off"),
        Some(m) if m == "always" => Some("always"),
        Some(m) if m == "inbound" => Some("inbound"),
        Some(m) if m == "tagged" => Some("tagged"),
        _ => None,
    };
    let switch = |enabled: bool| if enabled { "always" } else { "off" };
    normalize(prefs.auto.as_deref())
        .or(prefs.enabled.map(switch))
        .or_else(|| normalize(config.auto.as_deref()))
        .unwrap_or(switch(config.enabled == Some(true)))
}

/// One place in the order of providers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Known(ProviderId),
    Unknown(String),
}

/// The primary, then `fallbackOrder`, then the rest of upstream's order, each once.
fn order(primary: &str, config: &TtsConfig) -> Vec<Slot> {
    let mut slots = vec![match ProviderId::parse(primary) {
        Some(p) => Slot::Known(p),
        None => Slot::Unknown(primary.to_string()),
    }];
    let preferred = config
        .fallback_order
        .iter()
        .flatten()
        .filter_map(|p| ProviderId::parse(p.trim()));
    for provider in preferred.chain(ORDER) {
        if !slots.contains(&Slot::Known(provider)) {
            slots.push(Slot::Known(provider));
        }
    }
    slots
}

/// The providers that would be tried after the active one (`tts.status`).
pub fn fallback_providers(active: &str, config: &TtsConfig) -> Vec<&'static str> {
    order(active, config)
        .into_iter()
        .skip(1)
        .filter_map(|slot| match slot {
            Slot::Known(p) if configured(p, config) => Some(p.as_str()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> TtsConfig {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn order_puts_the_primary_first_then_the_preferred_fallbacks() {
        let c = config(json!({"fallbackOrder": ["cli", "nope"]}));
        assert_eq!(
            order("openai", &c),
            vec![
                Slot::Known(ProviderId::OpenAi),
                Slot::Known(ProviderId::Cli),
                Slot::Known(ProviderId::ElevenLabs),
                Slot::Known(ProviderId::Edge),
            ]
        );
        assert_eq!(order("x", &c)[0], Slot::Unknown("x".into()));
    }

    #[test]
    fn auto_mode_prefers_the_preference() {
        let c = config(json!({"enabled": true}));
        assert_eq!(auto_mode(&c, &TtsPrefs::default()), "always");
        let mut prefs = TtsPrefs::default();
        prefs::set_enabled(&mut prefs, false);
        assert_eq!(auto_mode(&c, &prefs), "off");
        let c = config(json!({"auto": "Tagged"}));
        assert_eq!(auto_mode(&c, &TtsPrefs::default()), "tagged");
        assert_eq!(
            auto_mode(&TtsConfig::default(), &TtsPrefs::default()),
            "off"
        );
    }

    #[test]
    fn active_provider_prefers_preference_then_config() {
        let c = config(json!({"provider": "elevenlabs"}));
        let prefs = TtsPrefs {
            provider: Some("openai".into()),
            ..Default::default()
        };
        assert_eq!(active_provider(&c, &prefs), "openai");
        assert_eq!(active_provider(&c, &TtsPrefs::default()), "elevenlabs");
        let local = config(json!({"openai": {"baseUrl": "http://127.0.0.1:9/v1"}}));
        assert_eq!(active_provider(&local, &TtsPrefs::default()), "openai");
    }

    #[test]
    fn text_limit_counts_utf16_units() {
        let c = config(json!({"maxTextLength": 3}));
        assert_eq!(max_text(&c), 3);
        assert_eq!(max_text(&TtsConfig::default()), DEFAULT_MAX_TEXT);
        // One emoji is two units, as in JavaScript; an accented letter one.
        assert_eq!(text_len("😀😀"), 4);
        assert_eq!(text_len("é"), 1);
    }

    #[tokio::test]
    async fn too_long_is_refused_before_any_provider() {
        let state = Arc::new(argent_planes::state_embedded::EmbeddedStore::open(None).unwrap());
        let speech = Speech::new(state);
        let err = speech
            .convert(
                &config(json!({"maxTextLength": 3})),
                "😀😀",
                None,
                &Map::new(),
            )
            .await
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "Text too long (4 chars, max 3)");
    }
}
