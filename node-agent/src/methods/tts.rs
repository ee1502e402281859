//! `tts.*` (PROTOCOL.md §5.11): params read as upstream reads them (loosely), answers in
//! upstream's shapes. The work is the speech service's (`crate::tts`).

use base64::Engine;
use serde_json::{json, Map, Value};

use argent_proto::errors::RpcError;

use super::shared_config;
use crate::runtime::Runtime;
use crate::tts::providers::{self, ProviderId};
use crate::tts::{self, prefs, Speech};

/// `tts.status`.
pub async fn status(rt: &Runtime, speech: &Speech) -> Result<Value, RpcError> {
    let config = shared_config(rt).await?.tts();
    let prefs = speech.prefs().await.map_err(crate::respond::state)?;
    let auto = tts::auto_mode(&config, &prefs);
    let provider = tts::active_provider(&config, &prefs);
    let fallbacks = tts::fallback_providers(&provider, &config);
    Ok(json!({
        "enabled": auto != "off",
        "auto": auto,
        "provider": provider,
        "fallbackProvider": fallbacks.first(),
        "fallbackProviders": fallbacks,
        "prefsPath": prefs::prefs_path(),
        "hasOpenAIKey": providers::openai_key(&config).is_some(),
        "hasElevenLabsKey": providers::elevenlabs_key(&config).is_some(),
        "edgeEnabled": false,
    }))
}

/// `tts.providers`: upstream's three entries (edge never configured here, saying why),
/// then the local command [EXT].
pub async fn list(rt: &Runtime, speech: &Speech) -> Result<Value, RpcError> {
    let config = shared_config(rt).await?.tts();
    let prefs = speech.prefs().await.map_err(crate::respond::state)?;
    let configured = |p| providers::configured(p, &config);
    Ok(json!({
        "providers": [
            {"id": "openai", "name": "OpenAI", "configured": configured(ProviderId::OpenAi),
             "models": providers::OPENAI_MODELS, "voices": providers::OPENAI_VOICES},
            {"id": "elevenlabs", "name": "ElevenLabs",
             "configured": configured(ProviderId::ElevenLabs),
             "models": providers::ELEVENLABS_MODELS},
            {"id": "edge", "name": "Edge TTS", "configured": false, "models": [],
             "available": false, "reason": providers::EDGE_UNAVAILABLE},
            {"id": "cli", "name": "Local command (offline)",
             "configured": configured(ProviderId::Cli), "models": []},
        ],
        "active": tts::active_provider(&config, &prefs),
    }))
}

/// `tts.enable` / `tts.disable`.
pub async fn set_enabled(speech: &Speech, enabled: bool) -> Result<Value, RpcError> {
    speech
        .update_prefs(|p| prefs::set_enabled(p, enabled))
        .await
        .map_err(crate::respond::state)?;
    Ok(json!({ "enabled": enabled }))
}

/// `tts.setProvider {provider}`: `openai`, `elevenlabs`, or the local `cli` [EXT]; `edge`
/// is refused with the reason.
pub async fn set_provider(speech: &Speech, params: Value) -> Result<Value, RpcError> {
    let provider = params
        .get("provider")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    match ProviderId::parse(&provider) {
        Some(ProviderId::Edge) => Err(RpcError::bad_params(providers::EDGE_UNAVAILABLE)),
        Some(_) => {
            speech
                .update_prefs(|p| p.provider = Some(provider.clone()))
                .await
                .map_err(crate::respond::state)?;
            Ok(json!({ "provider": provider }))
        }
        None => Err(RpcError::bad_params(
            "Invalid provider. Use openai, elevenlabs, or cli.",
        )),
    }
}

/// `tts.convert {text, channel?, overrides?, includeAudio?}`.
pub async fn convert(rt: &Runtime, speech: &Speech, params: Value) -> Result<Value, RpcError> {
    let text = params
        .get("text")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default();
    if text.is_empty() {
        return Err(RpcError::bad_params("tts.convert requires text"));
    }
    let channel = params.get("channel").and_then(Value::as_str).map(str::trim);
    let overrides = params
        .get("overrides")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(Map::new);
    let include_audio = params.get("includeAudio") != Some(&Value::Bool(false));
    let config = shared_config(rt).await?.tts();
    let done = speech.convert(&config, text, channel, &overrides).await?;
    let mut result = json!({
        "audioPath": done.audio_path.to_string_lossy(),
        "provider": done.provider,
        "outputFormat": done.output_format,
        "voiceCompatible": done.voice_compatible,
    });
    if include_audio {
        result["audio"] = json!(base64::engine::general_purpose::STANDARD.encode(&done.audio));
    }
    Ok(result)
}
