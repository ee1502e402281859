//! The channel accounts of the shared config, read as upstream writes them:
//! `channels.<id>` is the channel's default account (`channels.telegram.botToken`), and
//! `channels.<id>.accounts.<accountId>` adds more, each inheriting the channel-level keys it
//! does not set. Secrets are literals or `"${ENV}"` references resolved on the node-agent
//! that uses them; every platform's API base URL can be moved with `apiBaseUrl` [EXT].

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use argent_proto::agents::AgentsConfig;
use argent_proto::config::SharedConfig;
use argent_proto::secret;

/// The platforms this release speaks, in `channelOrder` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelId {
    WhatsApp,
    Telegram,
    Slack,
    Discord,
    Signal,
    Webhook,
}

impl ChannelId {
    pub const ALL: [ChannelId; 6] = [
        ChannelId::WhatsApp,
        ChannelId::Telegram,
        ChannelId::Slack,
        ChannelId::Discord,
        ChannelId::Signal,
        ChannelId::Webhook,
    ];

    pub fn parse(raw: &str) -> Option<ChannelId> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == raw.trim().to_ascii_lowercase())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelId::WhatsApp => "whatsapp",
            ChannelId::Telegram => "telegram",
            ChannelId::Slack => "slack",
            ChannelId::Discord => "discord",
            ChannelId::Signal => "signal",
            ChannelId::Webhook => "webhook",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ChannelId::WhatsApp => "WhatsApp",
            ChannelId::Telegram => "Telegram",
            ChannelId::Slack => "Slack",
            ChannelId::Discord => "Discord",
            ChannelId::Signal => "Signal",
            ChannelId::Webhook => "Webhook",
        }
    }

    pub fn detail_label(self) -> &'static str {
        match self {
            ChannelId::WhatsApp => "WhatsApp Business Cloud API",
            ChannelId::Telegram => "Telegram Bot",
            ChannelId::Slack => "Slack Bot",
            ChannelId::Discord => "Discord Bot",
            ChannelId::Signal => "Signal (signal-cli)",
            ChannelId::Webhook => "Signed HTTP webhook",
        }
    }
}

/// The account a channel's top-level keys describe.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Who may talk to the agent in a direct message (upstream's `dmPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmPolicy {
    /// Unknown senders are told how to be let in; only `allowFrom` reaches the agent
    /// (upstream's default).
    Pairing,
    /// Only `allowFrom`; others are ignored without an answer.
    Allowlist,
    /// Everyone (upstream requires `"*"` in `allowFrom` for it; so do we).
    Open,
    /// Nobody.
    Disabled,
}

impl DmPolicy {
    fn parse(raw: Option<&str>) -> DmPolicy {
        match raw.map(str::trim) {
            Some("allowlist") => DmPolicy::Allowlist,
            Some("open") => DmPolicy::Open,
            Some("disabled") => DmPolicy::Disabled,
            _ => DmPolicy::Pairing,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DmPolicy::Pairing => "pairing",
            DmPolicy::Allowlist => "allowlist",
            DmPolicy::Open => "open",
            DmPolicy::Disabled => "disabled",
        }
    }
}

/// One (channel, account): its merged settings.
#[derive(Debug, Clone)]
pub struct Account {
    pub channel: ChannelId,
    pub id: String,
    pub settings: Map<String, Value>,
}

/// Whether a sender may reach the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Not allowed; answer with how to be let in.
    Tell,
    /// Not allowed; say nothing.
    Ignore,
}

impl Account {
    pub fn key(&self) -> String {
        format!("{}.{}", self.channel.as_str(), self.id)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.settings
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// A secret setting, resolved here (`${ENV}` from this process's environment).
    pub fn secret(&self, key: &str) -> Option<String> {
        secret::resolve(self.text(key))
    }

    /// Where the secret comes from, for status (`config`, `env`, or `none`).
    pub fn secret_source(&self, key: &str) -> &'static str {
        match self.text(key).and_then(secret::SecretRef::parse) {
            Some(secret::SecretRef::Env(_)) if self.secret(key).is_some() => "env",
            Some(secret::SecretRef::Literal(_)) => "config",
            _ => "none",
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.get("enabled").and_then(Value::as_bool) != Some(false)
    }

    pub fn name(&self) -> Option<&str> {
        self.text("name")
    }

    /// The platform's API base URL without a trailing `/`: `apiBaseUrl` [EXT] or `default`.
    pub fn api_base(&self, default: &str) -> String {
        self.text("apiBaseUrl")
            .unwrap_or(default)
            .trim_end_matches('/')
            .to_string()
    }

    pub fn dm_policy(&self) -> DmPolicy {
        DmPolicy::parse(self.text("dmPolicy"))
    }

    /// `allowFrom` entries as strings (numbers are ids on some platforms).
    pub fn allow_from(&self) -> Vec<String> {
        self.settings
            .get("allowFrom")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| match v {
                        Value::String(s) => Some(s.trim().to_string()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `allowFrom` names the sender (any of its ids) itself, not through `"*"`.
    pub fn names(&self, sender_ids: &[&str]) -> bool {
        self.allow_from().iter().any(|a| {
            let a = a.trim_start_matches('@');
            sender_ids
                .iter()
                .any(|id| !id.is_empty() && id.trim_start_matches('@').eq_ignore_ascii_case(a))
        })
    }

    /// May `sender` (any of its ids: numeric id, user name, phone number) reach the agent?
    pub fn access(&self, sender_ids: &[&str]) -> Access {
        let allowed = self.allow_from();
        let listed = allowed.iter().any(|a| a == "*") || self.names(sender_ids);
        match self.dm_policy() {
            DmPolicy::Disabled => Access::Ignore,
            DmPolicy::Open if allowed.iter().any(|a| a == "*") => Access::Allowed,
            _ if listed => Access::Allowed,
            DmPolicy::Pairing => Access::Tell,
            _ => Access::Ignore,
        }
    }

    /// The agent that answers this account: `agentId` [EXT] when it names a configured
    /// agent, else the default agent.
    pub fn agent_id(&self, agents: &AgentsConfig) -> String {
        self.text("agentId")
            .map(str::to_ascii_lowercase)
            .filter(|id| agents.get(id).is_some())
            .unwrap_or_else(|| agents.default_id.clone())
    }
}

/// Keys that describe a channel rather than one account.
const CHANNEL_ONLY_KEYS: &[&str] = &["accounts", "defaultAccount"];

/// Keys a channel's top level may set for all its accounts without being an account.
const INHERITED_ONLY_KEYS: &[&str] = &[
    "enabled",
    "dmPolicy",
    "allowFrom",
    "apiBaseUrl",
    "agentId",
    "name",
];

/// Every configured account, by channel, in `channelOrder` order. A channel with `accounts`
/// and no account-level key of its own at the top has only the listed accounts.
pub fn accounts(config: &SharedConfig) -> BTreeMap<ChannelId, Vec<Account>> {
    let mut out = BTreeMap::new();
    let Some(channels) = config.document().get("channels").and_then(Value::as_object) else {
        return out;
    };
    for channel in ChannelId::ALL {
        let Some(section) = channels.get(channel.as_str()).and_then(Value::as_object) else {
            continue;
        };
        let base: Map<String, Value> = section
            .iter()
            .filter(|(k, _)| !CHANNEL_ONLY_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut list = Vec::new();
        let listed = section.get("accounts").and_then(Value::as_object);
        // The top level is an account of its own when it says more than what every
        // account inherits (a credential), or when no account is listed.
        let top_is_account = base
            .keys()
            .any(|k| !INHERITED_ONLY_KEYS.contains(&k.as_str()))
            || listed.is_none_or(|l| l.is_empty());
        if top_is_account && !listed.is_some_and(|l| l.contains_key(DEFAULT_ACCOUNT)) {
            list.push(Account {
                channel,
                id: DEFAULT_ACCOUNT.to_string(),
                settings: base.clone(),
            });
        }
        for (id, own) in listed.into_iter().flatten() {
            let Some(own) = own.as_object() else { continue };
            let id = id.trim().to_ascii_lowercase();
            if !valid_account_id(&id) {
                tracing::warn!(channel = channel.as_str(), account = %id, "account id skipped: use [a-z0-9_-]");
                continue;
            }
            let mut settings = base.clone();
            settings.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            list.push(Account {
                channel,
                id,
                settings,
            });
        }
        out.insert(channel, list);
    }
    out
}

/// The account `id` of `channel` (`None`: the channel's default account).
pub fn account(config: &SharedConfig, channel: ChannelId, id: Option<&str>) -> Option<Account> {
    let mut list = accounts(config).remove(&channel)?;
    let wanted = match id.map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => id.to_ascii_lowercase(),
        None => default_account_id(config, channel, &list)?,
    };
    let at = list.iter().position(|a| a.id == wanted)?;
    Some(list.swap_remove(at))
}

/// `channels.<id>.defaultAccount`, else `default`, else the first account.
pub fn default_account_id(
    config: &SharedConfig,
    channel: ChannelId,
    list: &[Account],
) -> Option<String> {
    let named = config
        .document()
        .pointer(&format!("/channels/{}/defaultAccount", channel.as_str()))
        .and_then(Value::as_str)
        .map(|s| s.trim().to_ascii_lowercase());
    named
        .filter(|n| list.iter().any(|a| &a.id == n))
        .or_else(|| {
            list.iter()
                .find(|a| a.id == DEFAULT_ACCOUNT)
                .map(|a| a.id.clone())
        })
        .or_else(|| list.first().map(|a| a.id.clone()))
}

/// Account ids become state keys and URL path segments.
pub fn valid_account_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(doc: Value) -> SharedConfig {
        SharedConfig::from_document(doc)
    }

    #[test]
    fn default_account_and_listed_accounts_inherit() {
        let c = config(json!({"channels": {"telegram": {
            "botToken": "t0", "dmPolicy": "allowlist", "allowFrom": [42],
            "accounts": {"Work": {"botToken": "t1"}, "bad id!": {"botToken": "x"}}
        }}}));
        let all = accounts(&c);
        let tg = &all[&ChannelId::Telegram];
        assert_eq!(
            tg.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["default", "work"]
        );
        assert_eq!(tg[1].secret("botToken").as_deref(), Some("t1"));
        assert_eq!(tg[1].dm_policy(), DmPolicy::Allowlist);
        assert_eq!(tg[1].allow_from(), ["42"]);
        assert_eq!(
            account(&c, ChannelId::Telegram, None).unwrap().id,
            "default"
        );
        assert_eq!(
            account(&c, ChannelId::Telegram, Some("WORK")).unwrap().id,
            "work"
        );
        assert!(account(&c, ChannelId::Slack, None).is_none());
    }

    #[test]
    fn only_listed_accounts_when_the_top_has_no_credentials() {
        let c = config(json!({"channels": {"slack": {
            "dmPolicy": "open", "accounts": {"a": {"botToken": "x"}}
        }}}));
        let all = accounts(&c);
        assert_eq!(all[&ChannelId::Slack].len(), 1);
        assert_eq!(account(&c, ChannelId::Slack, None).unwrap().id, "a");
    }

    #[test]
    fn access_follows_the_policy() {
        let acct = |policy: &str, allow: Value| Account {
            channel: ChannelId::Telegram,
            id: "default".into(),
            settings: json!({"dmPolicy": policy, "allowFrom": allow})
                .as_object()
                .unwrap()
                .clone(),
        };
        assert_eq!(acct("pairing", json!([])).access(&["1"]), Access::Tell);
        assert_eq!(
            acct("pairing", json!(["@Bob"])).access(&["1", "bob"]),
            Access::Allowed
        );
        assert_eq!(acct("allowlist", json!([2])).access(&["1"]), Access::Ignore);
        assert_eq!(acct("open", json!([])).access(&["1"]), Access::Ignore);
        assert_eq!(acct("open", json!(["*"])).access(&["1"]), Access::Allowed);
        assert_eq!(
            acct("disabled", json!(["*"])).access(&["1"]),
            Access::Ignore
        );
    }
}
