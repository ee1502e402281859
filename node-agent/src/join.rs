//! Joining a cluster by pairing (PROTOCOL.md §2.10 [EXT], §6.2): the node-agent makes an
//! Ed25519 identity once, connects to a gateway as role `node` with that identity alone,
//! waits until an operator approves it, and keeps what the approval gives it — its node
//! device token and the credential gateways will present to it — in its state dir (0600).
//! On a restart it reconnects with its device token and needs no new approval.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use argent_client::device::DeviceKey;
use argent_client::{Client, ClientError, ConnectOptions};

const IDENTITY_FILE: &str = "node-identity.json";
const CREDENTIALS_FILE: &str = "node-credentials.json";
/// How often a waiting node asks again.
/// How often a node waiting for approval asks again.
const RETRY: Duration = Duration::from_secs(2);
/// A refused or unreachable gateway is asked again after this, doubling up to [`MAX_BACKOFF`]
/// (or after the gateway's `retryAfterMs` when longer).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    seed: String,
}

/// What an approved node keeps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub device_token: String,
    /// What gateways present on every gRPC call to this node.
    pub call_secret: String,
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The node's identity, created on first use.
pub fn identity(state_dir: &Path) -> anyhow::Result<DeviceKey> {
    let path = state_dir.join(IDENTITY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let file: IdentityFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is unreadable", path.display()))?;
        let seed: [u8; 32] = hex::decode(&file.seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("{} holds no valid key", path.display()))?;
        return Ok(DeviceKey::from_seed(seed));
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let key = DeviceKey::generate();
    let file = IdentityFile {
        seed: hex::encode(key.seed()),
    };
    write_private(&path, &serde_json::to_string(&file)?)?;
    Ok(key)
}

fn credentials_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CREDENTIALS_FILE)
}

fn stored(state_dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(credentials_path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Prints one JSON line on stdout (scripts and tests read it) and a sentence on stderr.
fn announce(request_id: &str, node_id: &str) {
    println!(
        "{}",
        serde_json::json!({"event": "pairing", "requestId": request_id, "nodeId": node_id,
                           "approve": format!("argent nodes approve {request_id}")})
    );
    eprintln!(
        "argent-node: waiting for approval of pairing request {request_id} (node {node_id}); an operator runs: argent nodes approve {request_id}"
    );
}

/// Connects until the gateway accepts this node; returns its credentials.
pub async fn join(
    gateway: &str,
    key: &DeviceKey,
    state_dir: &Path,
    name: &str,
) -> anyhow::Result<Credentials> {
    let node_id = key.id();
    let mut announced = String::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut wait = RETRY;
        let saved = stored(state_dir);
        let mut options =
            ConnectOptions::cli(gateway, saved.as_ref().map(|c| c.device_token.clone()));
        options.role = Some("node".into());
        options.scopes = Some(Vec::new());
        options.client_id = "node-host".into();
        options.client_mode = "node".into();
        options.display_name = Some(name.to_string());
        options.device = Some(key.clone());
        match Client::connect(&options).await {
            Ok(client) => {
                let hello = client.hello().clone();
                client.close().await;
                let credentials = Credentials {
                    device_token: hello["auth"]["deviceToken"]
                        .as_str()
                        .context("the gateway issued no device token")?
                        .to_string(),
                    call_secret: hello["cluster"]["nodeCallSecret"]
                        .as_str()
                        .context("the gateway handed no node credential (is it a cluster gateway with a token?)")?
                        .to_string(),
                };
                if saved.as_ref() != Some(&credentials) {
                    write_private(
                        &credentials_path(state_dir),
                        &serde_json::to_string(&credentials)?,
                    )?;
                }
                return Ok(credentials);
            }
            Err(ClientError::Rejected { error, .. }) if error.message == "pairing required" => {
                let request_id = error
                    .details
                    .as_ref()
                    .and_then(|d| d["requestId"].as_str())
                    .unwrap_or_default()
                    .to_string();
                if request_id != announced {
                    announce(&request_id, &node_id);
                    announced = request_id;
                }
                backoff = FIRST_BACKOFF;
            }
            // Revoked, rotated away or unknown to the gateway (removed, or another
            // cluster's): forget it and ask to be paired again.
            Err(ClientError::Rejected { error, .. })
                if error.message.contains("token mismatch") && saved.is_some() =>
            {
                tracing::warn!("the stored node token was refused; asking to be paired again");
                let _ = std::fs::remove_file(credentials_path(state_dir));
                continue;
            }
            // Busy, rate-limited or the state plane away: ask again later.
            Err(ClientError::Rejected { error, .. })
                if error.retryable == Some(true) || error.code == "UNAVAILABLE" =>
            {
                let asked = Duration::from_millis(error.retry_after_ms.unwrap_or(0));
                wait = asked.max(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tracing::warn!(message = %error.message, retry_in_ms = wait.as_millis() as u64, "gateway cannot take the request now; retrying");
            }
            // Final: rejected pairing, a refused identity, a gateway that cannot pair.
            Err(ClientError::Rejected { error, .. }) => {
                bail!(
                    "the gateway refused this node for good: {} ({}); fix that and start it again",
                    error.message,
                    error.code
                )
            }
            Err(err) => {
                wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tracing::warn!(%err, retry_in_ms = wait.as_millis() as u64, "gateway not reachable; retrying");
            }
        }
        tokio::time::sleep(wait).await;
    }
}
