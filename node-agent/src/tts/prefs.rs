//! The user's speech preferences (`tts.enable`, `tts.disable`, `tts.setProvider`), shared by
//! the whole cluster: one JSON value in the state plane in upstream's file format
//! (`{"tts": {auto, enabled, provider, maxLength, summarize}}`), so a change through any
//! gateway applies on every node-agent from the next call on.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use argent_planes::state::{modify_json, StateError, StateStore};
use argent_proto::subjects::BUCKET_CONFIG;

/// Where the preferences are kept (`tts.status` reports it as `prefsPath`).
pub const PREFS_KEY: &str = "tts-prefs.json";

/// The `tts` part of the preferences. Other keys (upstream's `maxLength`, `summarize`, and
/// whatever a newer release writes) are kept as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TtsPrefs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PrefsFile {
    #[serde(default)]
    tts: TtsPrefs,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// `argent_config/tts-prefs.json`, as `prefsPath`.
pub fn prefs_path() -> String {
    format!("{BUCKET_CONFIG}/{PREFS_KEY}")
}

/// The stored preferences; none stored (or unreadable, as upstream treats a broken file)
/// reads as no preferences.
pub async fn read(state: &dyn StateStore) -> Result<TtsPrefs, StateError> {
    let Some(entry) = state.get(BUCKET_CONFIG, PREFS_KEY).await? else {
        return Ok(TtsPrefs::default());
    };
    Ok(serde_json::from_slice::<PrefsFile>(&entry.value)
        .map(|file| file.tts)
        .unwrap_or_else(|err| {
            tracing::warn!(%err, "tts preferences unreadable; reading as none");
            TtsPrefs::default()
        }))
}

/// Changes the preferences (compare-and-set: concurrent changes through two gateways both
/// land).
pub async fn update(
    state: &dyn StateStore,
    change: impl Fn(&mut TtsPrefs),
) -> Result<(), StateError> {
    modify_json(state, BUCKET_CONFIG, PREFS_KEY, |file: Option<Value>| {
        // A broken value is replaced rather than blocking every change forever.
        let mut file: PrefsFile = file
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        change(&mut file.tts);
        let value = serde_json::to_value(&file).expect("prefs serialize");
        Ok::<_, StateError>(Some((value, ())))
    })
    .await
    .map(|_| ())
}

/// `tts.enable` / `tts.disable`: upstream writes the auto mode and drops the legacy switch.
pub fn set_enabled(prefs: &mut TtsPrefs, enabled: bool) {
    prefs.enabled = None;
    prefs.auto = Some(if enabled { "always" } else { "off" }.to_string());
}
