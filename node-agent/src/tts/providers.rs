//! The speech providers, each speaking its service's own wire format: OpenAI-compatible
//! `POST {baseUrl}/audio/speech`, ElevenLabs `POST {baseUrl}/v1/text-to-speech/{voiceId}`,
//! and a local command (`espeak-ng` by default) that works offline. Edge (upstream's
//! keyless default) needs Microsoft's online service and is never available here.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use serde_json::{json, Map, Value};
use tokio::io::AsyncReadExt;

use argent_proto::config::{CliTtsConfig, ElevenLabsTtsConfig, OpenAiTtsConfig, TtsConfig};
use argent_proto::limits::MAX_GRPC_MESSAGE;
use argent_proto::secret;

use super::audio::{self, Output};

/// A provider of `messages.tts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderId {
    OpenAi,
    ElevenLabs,
    Cli,
    Edge,
}

/// Upstream's order of fallbacks (its `minimax` slot is our offline `cli`).
pub const ORDER: [ProviderId; 4] = [
    ProviderId::ElevenLabs,
    ProviderId::OpenAi,
    ProviderId::Cli,
    ProviderId::Edge,
];

impl ProviderId {
    pub fn parse(id: &str) -> Option<Self> {
        match id {
            "openai" => Some(ProviderId::OpenAi),
            "elevenlabs" => Some(ProviderId::ElevenLabs),
            "cli" => Some(ProviderId::Cli),
            "edge" => Some(ProviderId::Edge),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::OpenAi => "openai",
            ProviderId::ElevenLabs => "elevenlabs",
            ProviderId::Cli => "cli",
            ProviderId::Edge => "edge",
        }
    }
}

/// Why edge never speaks here.
pub const EDGE_UNAVAILABLE: &str = "Edge TTS is not available in Argent cluster: it needs Microsoft's online speech service. Configure messages.tts.openai (any OpenAI-compatible server), messages.tts.elevenlabs, or the offline messages.tts.cli (espeak-ng)";

pub const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";
pub const OPENAI_DEFAULT_MODEL: &str = "gpt-4o-mini-tts";
pub const OPENAI_DEFAULT_VOICE: &str = "alloy";
pub const OPENAI_MODELS: [&str; 3] = ["gpt-4o-mini-tts", "tts-1", "tts-1-hd"];
pub const OPENAI_VOICES: [&str; 9] = [
    "alloy", "ash", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
];
pub const ELEVENLABS_DEFAULT_BASE: &str = "https://api.elevenlabs.io";
pub const ELEVENLABS_DEFAULT_VOICE: &str = "cgSgspJ2msm6clMCkdW9";
pub const ELEVENLABS_DEFAULT_MODEL: &str = "eleven_multilingual_v2";
pub const ELEVENLABS_MODELS: [&str; 3] = [
    "eleven_multilingual_v2",
    "eleven_turbo_v2_5",
    "eleven_monolingual_v1",
];

/// The most audio one conversion may return: as base64 in a JSON answer it must fit one
/// gRPC message from the node-agent to the gateway (with room for the rest of the answer).
const MAX_AUDIO_BYTES: usize = (MAX_GRPC_MESSAGE - (1 << 20)) / 4 * 3;
/// What is read of a provider's error answer, and quoted of its message.
const ERROR_BODY_BYTES: usize = 4096;
const ERROR_MESSAGE_CHARS: usize = 200;

/// Audio a provider produced.
pub struct Spoken {
    pub bytes: Vec<u8>,
    pub output_format: String,
    pub extension: String,
    pub voice_compatible: bool,
}

/// One conversion: the text, the channel's output, and the caller's `overrides`.
pub struct Job<'a> {
    pub text: &'a str,
    pub output: Output,
    pub overrides: &'a Map<String, Value>,
    pub timeout: Duration,
}

impl Job<'_> {
    fn override_of(&self, provider: &str, key: &str) -> Option<&Value> {
        self.overrides.get(provider)?.get(key)
    }

    fn override_str(&self, provider: &str, key: &str) -> Option<String> {
        self.override_of(provider, key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

fn openai(config: &TtsConfig) -> OpenAiTtsConfig {
    config.openai.clone().unwrap_or_default()
}

fn elevenlabs(config: &TtsConfig) -> ElevenLabsTtsConfig {
    config.elevenlabs.clone().unwrap_or_default()
}

fn nonblank(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// OpenAI's base URL: `messages.tts.openai.baseUrl` [EXT], else `OPENAI_TTS_BASE_URL` (as
/// upstream), else OpenAI's.
pub fn openai_base(config: &TtsConfig) -> String {
    nonblank(openai(config).base_url.as_deref())
        .or_else(|| nonblank(std::env::var("OPENAI_TTS_BASE_URL").ok().as_deref()))
        .unwrap_or_else(|| OPENAI_DEFAULT_BASE.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// The key sent to OpenAI's base URL: the configured one; the node's own `OPENAI_API_KEY`
/// only when the shared config names no other server (whoever edits the config must not
/// be able to send a node's key to a server of their choice).
pub fn openai_key(config: &TtsConfig) -> Option<String> {
    let settings = openai(config);
    secret::resolve(settings.api_key.as_deref()).or_else(|| {
        nonblank(settings.base_url.as_deref())
            .is_none()
            .then(|| secret::resolve(Some("${OPENAI_API_KEY}")))
            .flatten()
    })
}

/// The key sent to ElevenLabs: the configured one; the node's own `ELEVENLABS_API_KEY` or
/// `XI_API_KEY` only for ElevenLabs' own server (as for OpenAI).
pub fn elevenlabs_key(config: &TtsConfig) -> Option<String> {
    let settings = elevenlabs(config);
    secret::resolve(settings.api_key.as_deref()).or_else(|| {
        nonblank(settings.base_url.as_deref())
            .is_none()
            .then(|| {
                secret::resolve(Some("${ELEVENLABS_API_KEY}"))
                    .or_else(|| secret::resolve(Some("${XI_API_KEY}")))
            })
            .flatten()
    })
}

/// The local command: the configured one, else `espeak-ng` when it is installed.
pub fn cli_command(config: &TtsConfig) -> Option<Vec<String>> {
    let cli: CliTtsConfig = config.cli.clone().unwrap_or_default();
    if let Some(words) = cli.command.map(|c| c.words()).filter(|w| !w.is_empty()) {
        return Some(words);
    }
    espeak_ng().map(|program| {
        [
            program.to_string_lossy().as_ref(),
            "-w",
            "{{OUTPUT_FILE}}",
            "-f",
            "{{TEXT_FILE}}",
        ]
        .map(str::to_string)
        .to_vec()
    })
}

/// Where `espeak-ng` is on `PATH`; looked up at most every 30 s (status calls ask often,
/// and an engine installed while the node runs is still found).
fn espeak_ng() -> Option<PathBuf> {
    static FOUND: Mutex<Option<(Instant, Option<PathBuf>)>> = Mutex::new(None);
    let mut found = FOUND.lock();
    match &*found {
        Some((at, path)) if at.elapsed() < Duration::from_secs(30) => path.clone(),
        _ => {
            let path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join("espeak-ng"))
                .find(|path| path.is_file());
            *found = Some((Instant::now(), path.clone()));
            path
        }
    }
}

/// Whether a provider can be tried: a key (or, for OpenAI, a server of one's own, which may
/// need none), a command, never edge.
pub fn configured(provider: ProviderId, config: &TtsConfig) -> bool {
    match provider {
        ProviderId::OpenAi => {
            openai_key(config).is_some() || openai_base(config) != OPENAI_DEFAULT_BASE
        }
        ProviderId::ElevenLabs => elevenlabs_key(config).is_some(),
        ProviderId::Cli => cli_command(config).is_some(),
        ProviderId::Edge => false,
    }
}

/// Why a provider cannot be tried (upstream's texts where it has one).
pub fn not_configured(provider: ProviderId) -> String {
    match provider {
        ProviderId::OpenAi | ProviderId::ElevenLabs => {
            format!("No API key for {}", provider.as_str())
        }
        ProviderId::Cli => {
            "cli: no messages.tts.cli.command is configured and espeak-ng is not installed".into()
        }
        ProviderId::Edge => format!("edge: {EDGE_UNAVAILABLE}"),
    }
}

/// Speaks with one provider; the error is `<provider>: <what went wrong>`.
pub async fn speak(
    http: &reqwest::Client,
    provider: ProviderId,
    config: &TtsConfig,
    job: &Job<'_>,
) -> Result<Spoken, String> {
    let name = provider.as_str();
    let attempt = async {
        match provider {
            ProviderId::OpenAi => speak_openai(http, config, job).await,
            ProviderId::ElevenLabs => speak_elevenlabs(http, config, job).await,
            ProviderId::Cli => speak_cli(config, job).await,
            ProviderId::Edge => Err(EDGE_UNAVAILABLE.to_string()),
        }
    };
    match tokio::time::timeout(job.timeout, attempt).await {
        Ok(Ok(spoken)) if spoken.bytes.is_empty() => Err(format!("{name}: returned no audio")),
        Ok(Ok(spoken)) => Ok(spoken),
        Ok(Err(message)) => Err(redacted(format!("{name}: {message}"), provider, config)),
        Err(_) => Err(format!("{name}: request timed out")),
    }
}

/// An error text without the provider's key, whatever the server put in its answer (a
/// server echoing the request must not hand the key to whoever reads the error).
fn redacted(mut message: String, provider: ProviderId, config: &TtsConfig) -> String {
    let key = match provider {
        ProviderId::OpenAi => openai_key(config),
        ProviderId::ElevenLabs => elevenlabs_key(config),
        ProviderId::Cli | ProviderId::Edge => None,
    };
    if let Some(key) = key.filter(|k| k.len() >= 4) {
        message = message.replace(&key, "[redacted]");
    }
    message
}

async fn speak_openai(
    http: &reqwest::Client,
    config: &TtsConfig,
    job: &Job<'_>,
) -> Result<Spoken, String> {
    let settings = openai(config);
    let model = job
        .override_str("openai", "model")
        .or_else(|| nonblank(settings.model.as_deref()))
        .unwrap_or_else(|| OPENAI_DEFAULT_MODEL.into());
    let voice = job
        .override_str("openai", "voice")
        .or_else(|| nonblank(settings.voice.as_deref()))
        .unwrap_or_else(|| OPENAI_DEFAULT_VOICE.into());
    let mut request = http
        .post(format!("{}/audio/speech", openai_base(config)))
        .json(&json!({
            "model": model, "input": job.text, "voice": voice,
            "response_format": job.output.openai,
        }));
    if let Some(key) = openai_key(config) {
        request = request.bearer_auth(key);
    }
    let bytes = fetch(request, "OpenAI TTS API error").await?;
    Ok(Spoken {
        bytes,
        output_format: job.output.openai.into(),
        extension: job.output.extension.into(),
        voice_compatible: job.output.voice_compatible,
    })
}

/// ElevenLabs voice ids are short alphanumeric strings (upstream's rule); checking keeps a
/// configured or overridden id from changing the request path.
fn valid_voice_id(id: &str) -> bool {
    (10..=40).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `voice_settings`: defaults, the config's, then the call's, each checked in range.
fn voice_settings(config: &ElevenLabsTtsConfig, job: &Job<'_>) -> Result<Value, String> {
    let defaults = json!({"stability": 0.5, "similarityBoost": 0.75, "style": 0.0,
                          "useSpeakerBoost": true, "speed": 1.0});
    let mut merged = defaults.as_object().cloned().unwrap_or_default();
    let layers = [
        config.voice_settings.as_ref(),
        job.override_of("elevenlabs", "voiceSettings")
            .and_then(Value::as_object),
    ];
    for layer in layers.into_iter().flatten() {
        for (key, value) in layer {
            if merged.contains_key(key) && !value.is_null() {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    let number = |key: &str, min: f64, max: f64| -> Result<f64, String> {
        match merged[key].as_f64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "voiceSettings.{key} must be between {min} and {max}"
            )),
        }
    };
    Ok(json!({
        "stability": number("stability", 0.0, 1.0)?,
        "similarity_boost": number("similarityBoost", 0.0, 1.0)?,
        "style": number("style", 0.0, 1.0)?,
        "use_speaker_boost": merged["useSpeakerBoost"].as_bool().unwrap_or(true),
        "speed": number("speed", 0.5, 2.0)?,
    }))
}

async fn speak_elevenlabs(
    http: &reqwest::Client,
    config: &TtsConfig,
    job: &Job<'_>,
) -> Result<Spoken, String> {
    let settings = elevenlabs(config);
    let voice_id = job
        .override_str("elevenlabs", "voiceId")
        .or_else(|| nonblank(settings.voice_id.as_deref()))
        .unwrap_or_else(|| ELEVENLABS_DEFAULT_VOICE.into());
    if !valid_voice_id(&voice_id) {
        return Err("Invalid voiceId format".into());
    }
    let model_id = job
        .override_str("elevenlabs", "modelId")
        .or_else(|| nonblank(settings.model_id.as_deref()))
        .unwrap_or_else(|| ELEVENLABS_DEFAULT_MODEL.into());
    let mut body = json!({
        "text": job.text, "model_id": model_id,
        "voice_settings": voice_settings(&settings, job)?,
    });
    let seed = match job.override_of("elevenlabs", "seed") {
        None | Some(Value::Null) => settings.seed,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or("seed must be between 0 and 4294967295")?,
        ),
    };
    if let Some(seed) = seed {
        if seed > u64::from(u32::MAX) {
            return Err("seed must be between 0 and 4294967295".into());
        }
        body["seed"] = json!(seed);
    }
    let normalization = job
        .override_str("elevenlabs", "applyTextNormalization")
        .or_else(|| nonblank(settings.apply_text_normalization.as_deref()));
    if let Some(mode) = normalization {
        if !matches!(mode.as_str(), "auto" | "on" | "off") {
            return Err("applyTextNormalization must be one of: auto, on, off".into());
        }
        body["apply_text_normalization"] = json!(mode);
    }
    let language = job
        .override_str("elevenlabs", "languageCode")
        .or_else(|| nonblank(settings.language_code.as_deref()));
    if let Some(code) = language {
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err("languageCode must be a 2-letter ISO 639-1 code (e.g. en, de, fr)".into());
        }
        body["language_code"] = json!(code.to_ascii_lowercase());
    }
    let base =
        nonblank(settings.base_url.as_deref()).unwrap_or_else(|| ELEVENLABS_DEFAULT_BASE.into());
    let key = elevenlabs_key(config).ok_or("no API key")?;
    let request = http
        // The voice id was checked alphanumeric and the format is one of ours: neither
        // needs escaping.
        .post(format!(
            "{}/v1/text-to-speech/{voice_id}?output_format={}",
            base.trim_end_matches('/'),
            job.output.elevenlabs
        ))
        .header("xi-api-key", key)
        .header("accept", "audio/mpeg")
        .json(&body);
    let bytes = fetch(request, "ElevenLabs API error").await?;
    Ok(Spoken {
        bytes,
        output_format: job.output.elevenlabs.into(),
        extension: job.output.extension.into(),
        voice_compatible: job.output.voice_compatible,
    })
}

/// Sends a request and reads the audio, at most [`MAX_AUDIO_BYTES`]. A refusal reads as
/// `<label> (<status>): <the provider's message>` (the message field of its JSON error, cut
/// short; never the raw body).
async fn fetch(request: reqwest::RequestBuilder, label: &str) -> Result<Vec<u8>, String> {
    let mut response = request.send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    if !status.is_success() {
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = ERROR_BODY_BYTES - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= ERROR_BODY_BYTES {
                break;
            }
        }
        return Err(match error_message(&body) {
            Some(said) => format!("{label} ({}): {said}", status.as_u16()),
            None => format!("{label} ({})", status.as_u16()),
        });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if bytes.len() + chunk.len() > MAX_AUDIO_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn too_large() -> String {
    format!(
        "the audio is larger than {} MiB (the most one answer carries): ask for a shorter text",
        MAX_AUDIO_BYTES >> 20
    )
}

/// The message of a provider's JSON error (OpenAI `{error: {message}}`, ElevenLabs
/// `{detail: {message}}` or `{detail: "…"}`), cut short; nothing of a body that is not one.
fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let message = [
        value.pointer("/error/message"),
        value.pointer("/detail/message"),
        value.get("detail"),
        value.get("message"),
    ]
    .into_iter()
    .flatten()
    .find_map(Value::as_str)?;
    Some(message.trim().chars().take(ERROR_MESSAGE_CHARS).collect())
}

/// A transport error with its cause (reqwest's own text stops at "error sending request").
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs the local command on a text file and reads what it wrote. It runs without a shell,
/// with the text in a file (never on the command line), under the provider timeout (the
/// process is killed when the call is dropped).
async fn speak_cli(config: &TtsConfig, job: &Job<'_>) -> Result<Spoken, String> {
    let words = cli_command(config).ok_or_else(|| {
        "no messages.tts.cli.command is configured and espeak-ng is not installed".to_string()
    })?;
    let dir = audio::directory().map_err(|e| format!("no directory for the audio: {e}"))?;
    let work = WorkDir(dir.join(format!("cli-{}", uuid::Uuid::new_v4().simple())));
    tokio::fs::create_dir(&work.0)
        .await
        .map_err(|e| format!("cannot create {}: {e}", work.0.display()))?;
    run_command(&words, &work.0, job).await
}

/// A conversion's scratch directory, removed however the conversion ends (also when its
/// timeout drops it mid-run; the command itself is killed then).
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0) {
            tracing::debug!(dir = %self.0.display(), %err, "cli work dir not removed");
        }
    }
}

async fn run_command(words: &[String], work: &Path, job: &Job<'_>) -> Result<Spoken, String> {
    let text_file = work.join("input.txt");
    // Named for the format the channel wants: engines that pick their format by the file's
    // extension write that; the others write what they write, and the bytes tell.
    let output_file = work.join(format!("output.{}", job.output.extension));
    audio::write_private(&text_file, job.text.as_bytes())
        .await
        .map_err(|e| format!("cannot write the text file: {e}"))?;
    let fill = |word: &String| {
        word.replace("{{TEXT_FILE}}", &text_file.to_string_lossy())
            .replace("{{OUTPUT_FILE}}", &output_file.to_string_lossy())
    };
    let program = fill(&words[0]);
    let mut child = tokio::process::Command::new(&program)
        .args(words[1..].iter().map(fill))
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // Drained beside the wait (a command blocked on a full pipe would never exit); once it
    // exited, what a background child of it still holds open is not waited for long.
    let stderr = tokio::spawn(drain(child.stderr.take()));
    let status = child
        .wait()
        .await
        .map_err(|e| format!("{program} did not finish: {e}"))?;
    let stderr = tokio::time::timeout(Duration::from_secs(1), stderr)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    if !status.success() {
        let why = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!(
            "{program} failed ({status}){}{why}",
            if why.is_empty() { "" } else { ": " }
        ));
    }
    let metadata = tokio::fs::metadata(&output_file)
        .await
        .map_err(|_| format!("{program} wrote no {{{{OUTPUT_FILE}}}}"))?;
    if metadata.len() as usize > MAX_AUDIO_BYTES {
        return Err(too_large());
    }
    let bytes = tokio::fs::read(&output_file)
        .await
        .map_err(|e| format!("cannot read the audio: {e}"))?;
    // The command decides the format: it is read from the bytes, never assumed.
    let (format, extension, voice_compatible) = audio::sniff(&bytes)
        .ok_or_else(|| format!("{program} wrote no audio this recognises (WAV, MP3, Ogg, FLAC)"))?;
    Ok(Spoken {
        bytes,
        output_format: format.into(),
        extension: extension.into(),
        voice_compatible,
    })
}

/// How much of a command's error output is kept for its error message.
const STDERR_KEPT: usize = 4096;

/// Reads a command's error output to its end (a command blocked on a full pipe would never
/// exit), keeping the first [`STDERR_KEPT`] bytes.
async fn drain(pipe: Option<tokio::process::ChildStderr>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let (mut kept, mut chunk) = (Vec::new(), [0u8; 4096]);
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_errors_quote_the_message_only() {
        let openai = br#"{"error": {"message": "Incorrect API key", "type": "invalid"}}"#;
        assert_eq!(error_message(openai).as_deref(), Some("Incorrect API key"));
        let eleven = br#"{"detail": {"status": "quota", "message": "Quota exceeded"}}"#;
        assert_eq!(error_message(eleven).as_deref(), Some("Quota exceeded"));
        assert_eq!(
            error_message(br#"{"detail": "Not found"}"#).as_deref(),
            Some("Not found")
        );
        assert_eq!(error_message(b"<html>proxy error</html>"), None);
        let config: TtsConfig =
            serde_json::from_value(json!({"openai": {"apiKey": "sk-secret-1"}})).unwrap();
        assert_eq!(
            redacted(
                "openai: echo sk-secret-1".into(),
                ProviderId::OpenAi,
                &config
            ),
            "openai: echo [redacted]"
        );
    }

    #[test]
    fn environment_keys_go_to_their_own_servers_only() {
        std::env::set_var("ELEVENLABS_API_KEY", "env-eleven");
        let own: TtsConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(elevenlabs_key(&own).as_deref(), Some("env-eleven"));
        let elsewhere: TtsConfig =
            serde_json::from_value(json!({"elevenlabs": {"baseUrl": "http://10.0.0.9"}})).unwrap();
        assert_eq!(elevenlabs_key(&elsewhere), None);
        let named: TtsConfig = serde_json::from_value(
            json!({"elevenlabs": {"baseUrl": "http://10.0.0.9", "apiKey": "${ELEVENLABS_API_KEY}"}}),
        )
        .unwrap();
        assert_eq!(elevenlabs_key(&named).as_deref(), Some("env-eleven"));
    }

    #[test]
    fn voice_ids_cannot_change_the_path() {
        assert!(valid_voice_id(ELEVENLABS_DEFAULT_VOICE));
        assert!(!valid_voice_id("../../v1/voices"));
        assert!(!valid_voice_id("short"));
    }

    #[test]
    fn voice_settings_merge_and_check() {
        let config = ElevenLabsTtsConfig {
            voice_settings: serde_json::from_value(json!({"stability": 0.2})).ok(),
            ..Default::default()
        };
        let overrides = json!({"elevenlabs": {"voiceSettings": {"speed": 1.5}}});
        let job = Job {
            text: "x",
            output: audio::output_for(None),
            overrides: overrides.as_object().unwrap(),
            timeout: Duration::from_secs(1),
        };
        let settings = voice_settings(&config, &job).unwrap();
        assert_eq!(settings["stability"], json!(0.2));
        assert_eq!(settings["speed"], json!(1.5));
        assert_eq!(settings["similarity_boost"], json!(0.75));
        let bad = json!({"elevenlabs": {"voiceSettings": {"speed": 9}}});
        let job = Job {
            overrides: bad.as_object().unwrap(),
            ..job
        };
        assert_eq!(
            voice_settings(&config, &job).unwrap_err(),
            "voiceSettings.speed must be between 0.5 and 2"
        );
    }
}
