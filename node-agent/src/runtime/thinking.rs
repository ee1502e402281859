//! Thinking levels: what a session (`sessions.patch` `thinkingLevel`) or a turn (`chat.send`
//! `thinking`) asks of the model's reasoning, in upstream's vocabulary, and how a provider
//! hears it (genai's reasoning effort: OpenAI's `reasoning_effort`, Anthropic's thinking
//! budget, Ollama's `think`…).
//!
//! Which levels a model offers follows its config: `reasoning: false` offers only `off`;
//! otherwise every level (a model whose config does not say is trusted with what the user
//! picks, and its server's answer says whether it can).

use genai::chat::ReasoningEffort;

/// Every level, lowest first, as upstream names them.
pub const LEVELS: [&str; 8] = [
    "off", "minimal", "low", "medium", "high", "xhigh", "max", "adaptive",
];

/// A level as upstream normalizes what users type (`Think Harder` → `medium`).
pub fn normalize(raw: &str) -> Option<&'static str> {
    let folded: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .collect();
    Some(match folded.as_str() {
        "adaptive" | "auto" => "adaptive",
        "max" => "max",
        "ultra" | "xhigh" | "extrahigh" => "xhigh",
        "off" | "none" => "off",
        "on" | "enable" | "enabled" | "low" | "thinkhard" => "low",
        "min" | "minimal" | "think" => "minimal",
        "mid" | "med" | "medium" | "thinkharder" | "harder" => "medium",
        "high" | "ultrathink" | "thinkhardest" | "highest" => "high",
        _ => return None,
    })
}

/// The levels a model offers, given its config's `reasoning` flag.
pub fn levels_for(reasoning: Option<bool>) -> &'static [&'static str] {
    match reasoning {
        Some(false) => &LEVELS[..1],
        _ => &LEVELS,
    }
}

/// `[{id, label}]` rows of the levels a model offers (`resolved.thinkingLevels`).
pub fn level_rows(reasoning: Option<bool>) -> Vec<serde_json::Value> {
    levels_for(reasoning)
        .iter()
        .map(|id| {
            let mut label = id.to_string();
            label[..1].make_ascii_uppercase();
            serde_json::json!({"id": id, "label": label})
        })
        .collect()
}

/// What the provider is asked for. `adaptive` leaves the provider's default; a model
/// configured as not reasoning (`reasoning: false`) is asked for nothing, whatever the level
/// (some servers refuse the parameter); `off` asks for no reasoning only from a model
/// configured as a reasoning model.
pub fn effort(level: &str, reasoning: Option<bool>) -> Option<ReasoningEffort> {
    if reasoning == Some(false) {
        return None;
    }
    Some(match level {
        "off" if reasoning == Some(true) => ReasoningEffort::Zero,
        "minimal" => ReasoningEffort::Minimal,
        "low" => ReasoningEffort::Low,
        "medium" => ReasoningEffort::Medium,
        "high" => ReasoningEffort::High,
        "xhigh" => ReasoningEffort::XHigh,
        "max" => ReasoningEffort::Max,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_normalize_as_upstream_and_map_to_efforts() {
        assert_eq!(normalize("Think Harder"), Some("medium"));
        assert_eq!(normalize("ULTRA_THINK"), Some("high"));
        assert_eq!(normalize("none"), Some("off"));
        assert_eq!(normalize("auto"), Some("adaptive"));
        assert_eq!(normalize("extra-high"), Some("xhigh"));
        assert_eq!(normalize("lots"), None);
        assert_eq!(levels_for(Some(false)), ["off"]);
        assert_eq!(levels_for(None).len(), LEVELS.len());
        assert!(matches!(effort("high", None), Some(ReasoningEffort::High)));
        assert!(effort("off", None).is_none() && effort("adaptive", Some(true)).is_none());
        assert!(matches!(
            effort("off", Some(true)),
            Some(ReasoningEffort::Zero)
        ));
        assert_eq!(
            level_rows(Some(false)),
            [serde_json::json!({"id": "off", "label": "Off"})]
        );
    }
}
