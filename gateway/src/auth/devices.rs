//! Paired devices, their tokens and pending pairing requests (PROTOCOL.md §2.9, §2.10,
//! §5.13), kept in the state plane (`argent_auth`) so every gateway sees the same records.
//! Tokens are stored only as SHA-256 hashes; a token is shown once, when it is issued.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use argent_planes::state::{modify_json, StateError, StateStore};
use argent_proto::errors::RpcError;
use argent_proto::subjects::BUCKET_AUTH;

/// Pending requests expire after five minutes (§1.8).
pub const PENDING_TTL_MS: u64 = 300_000;

/// One token of a device, for one role: only its hash is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub hash: String,
    pub scopes: Vec<String>,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at_ms: Option<u64>,
    /// The hash of the token this one replaced, so the replaced token is told apart from a
    /// token the device never held (`device token mismatch` against `gateway token
    /// mismatch`, as upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PairedDevice {
    pub device_id: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenRecord>,
    pub created_at_ms: u64,
    pub approved_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingRequest {
    pub request_id: String,
    pub device_id: String,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<String>,
    pub role: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    pub silent: bool,
    pub is_repair: bool,
    pub ts: u64,
}

impl PendingRequest {
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.ts) > PENDING_TTL_MS
    }
}

/// When a token may be minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenGrant {
    /// At connect: only while the device is paired for the role and scopes, not revoked.
    IfPaired,
    /// An operator's explicit rotation (`device.token.rotate`).
    Rotation,
}

/// Why a device token was refused (§2.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    /// A token of this device that does not open this role now: revoked, rotated away, or
    /// another role's.
    Mismatch,
    /// Not a token this device held (as far as is stored): answered like a wrong shared
    /// token, as upstream does.
    Unknown,
    /// Valid, but the requested scopes exceed its grant.
    ScopeMismatch,
}

impl TokenFailure {
    fn mismatch_if(held: bool) -> Self {
        if held {
            TokenFailure::Mismatch
        } else {
            TokenFailure::Unknown
        }
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 32 random bytes as 64 hex characters.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Scopes sorted and de-duplicated (how tokens record them).
pub fn normalized(scopes: &[String]) -> Vec<String> {
    let mut out = scopes.to_vec();
    out.sort();
    out.dedup();
    out
}

fn union(into: &mut Vec<String>, more: &[String]) {
    for item in more {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
    into.sort();
}

/// The device, pending-request and token records of the cluster.
#[derive(Clone)]
pub struct DeviceStore {
    state: Arc<dyn StateStore>,
}

fn device_key(device_id: &str) -> String {
    format!("device.{device_id}")
}

fn pending_key(request_id: &str) -> String {
    format!("pending.{request_id}")
}

fn unreadable(what: &str, err: serde_json::Error) -> RpcError {
    RpcError::unavailable(format!("stored {what} is unreadable: {err}"))
}

impl DeviceStore {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        DeviceStore { state }
    }

    /// A record and its revision.
    pub(crate) async fn read<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, RpcError> {
        let entry = self
            .state
            .get(BUCKET_AUTH, key)
            .await
            .map_err(crate::respond::state)?;
        entry
            .map(|e| {
                serde_json::from_slice(&e.value)
                    .map(|v| (v, e.revision))
                    .map_err(|err| unreadable(key, err))
            })
            .transpose()
    }

    pub async fn device(&self, device_id: &str) -> Result<Option<PairedDevice>, RpcError> {
        Ok(self.read(&device_key(device_id)).await?.map(|(d, _)| d))
    }

    /// Changes a device record with optimistic concurrency; `change` may refuse.
    pub async fn update_device<T>(
        &self,
        device_id: &str,
        mut change: impl FnMut(Option<PairedDevice>) -> Result<(PairedDevice, T), RpcError>,
    ) -> Result<T, RpcError> {
        let key = device_key(device_id);
        modify_json(self.state.as_ref(), BUCKET_AUTH, &key, |current| {
            change(current).map(Some).map_err(ChangeError::Refused)
        })
        .await
        .map_err(|err| match err {
            ChangeError::Store(err) => crate::respond::state(err),
            ChangeError::Refused(err) => err,
        })?
        .ok_or_else(|| RpcError::unavailable("device record was not written; retry"))
    }

    /// Every record under `prefix`.
    pub(crate) async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, RpcError> {
        let keys = self
            .state
            .keys(BUCKET_AUTH, prefix)
            .await
            .map_err(crate::respond::state)?;
        let mut out = Vec::new();
        for key in keys {
            if let Some((record, _)) = self.read::<T>(&key).await? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Writes a record unconditionally.
    pub(crate) async fn put<T: Serialize>(&self, key: &str, record: &T) -> Result<(), RpcError> {
        let bytes = Bytes::from(serde_json::to_vec(record).expect("records serialize"));
        self.state
            .put(BUCKET_AUTH, key, bytes)
            .await
            .map(|_| ())
            .map_err(crate::respond::state)
    }

    pub(crate) async fn remove(&self, key: &str) -> Result<(), RpcError> {
        self.state
            .delete(BUCKET_AUTH, key)
            .await
            .map_err(crate::respond::state)
    }

    pub async fn devices(&self) -> Result<Vec<PairedDevice>, RpcError> {
        self.list("device.").await
    }

    /// For every paired device, the roles it holds a live (issued, not revoked) token for.
    pub async fn live_roles(
        &self,
    ) -> Result<std::collections::HashMap<String, Vec<String>>, RpcError> {
        Ok(self
            .devices()
            .await?
            .into_iter()
            .map(|d| {
                let roles = d
                    .tokens
                    .iter()
                    .filter(|(_, t)| t.revoked_at_ms.is_none())
                    .map(|(role, _)| role.clone())
                    .collect();
                (d.device_id, roles)
            })
            .collect())
    }

    /// Ids of devices paired as `node` whose node token is not revoked.
    pub async fn valid_nodes(&self) -> Result<std::collections::HashSet<String>, RpcError> {
        Ok(self
            .devices()
            .await?
            .into_iter()
            .filter(|d| d.roles.iter().any(|r| r == "node"))
            .filter(|d| {
                d.tokens
                    .get("node")
                    .is_some_and(|t| t.revoked_at_ms.is_none())
            })
            .map(|d| d.device_id)
            .collect())
    }

    /// Live pending requests (expired ones are deleted on the way).
    pub async fn pending(&self) -> Result<Vec<PendingRequest>, RpcError> {
        let now = argent_proto::now_ms();
        let keys = self
            .state
            .keys(BUCKET_AUTH, "pending.")
            .await
            .map_err(crate::respond::state)?;
        let mut out = Vec::new();
        for key in keys {
            if let Some((request, _)) = self.read::<PendingRequest>(&key).await? {
                if request.expired(now) {
                    let _ = self.state.delete(BUCKET_AUTH, &key).await;
                } else {
                    out.push(request);
                }
            }
        }
        out.sort_by_key(|r| r.ts);
        Ok(out)
    }

    pub async fn pending_request(
        &self,
        request_id: &str,
    ) -> Result<Option<PendingRequest>, RpcError> {
        let now = argent_proto::now_ms();
        Ok(self
            .read::<PendingRequest>(&pending_key(request_id))
            .await?
            .map(|(r, _)| r)
            .filter(|r| !r.expired(now)))
    }

    /// The device's pending request, or this one stored as new (`true`).
    pub async fn open_request(
        &self,
        request: PendingRequest,
    ) -> Result<(PendingRequest, bool), RpcError> {
        if let Some(existing) = self
            .pending()
            .await?
            .into_iter()
            .find(|r| r.device_id == request.device_id)
        {
            return Ok((existing, false));
        }
        self.put(&pending_key(&request.request_id), &request)
            .await?;
        Ok((request, true))
    }

    pub async fn close_request(&self, request_id: &str) -> Result<(), RpcError> {
        self.remove(&pending_key(request_id)).await
    }

    /// Approval: the device is paired with the request's role and scopes merged into what it
    /// had (§2.10).
    pub async fn approve(&self, request: &PendingRequest) -> Result<PairedDevice, RpcError> {
        let now = argent_proto::now_ms();
        let device = self
            .update_device(&request.device_id, |current| {
                let mut device = current.unwrap_or_else(|| PairedDevice {
                    device_id: request.device_id.clone(),
                    public_key: request.public_key.clone(),
                    display_name: None,
                    platform: None,
                    client_id: None,
                    client_mode: None,
                    role: None,
                    roles: Vec::new(),
                    scopes: Vec::new(),
                    remote_ip: None,
                    tokens: BTreeMap::new(),
                    created_at_ms: now,
                    approved_at_ms: now,
                });
                if device.public_key != request.public_key {
                    // Re-paired with a new key: the old tokens belong to the old key.
                    device.public_key = request.public_key.clone();
                    device.tokens.clear();
                }
                // Approval after a revocation starts that role over: a fresh token follows.
                if device
                    .tokens
                    .get(&request.role)
                    .is_some_and(|t| t.revoked_at_ms.is_some())
                {
                    device.tokens.remove(&request.role);
                }
                union(&mut device.roles, &request.roles);
                union(&mut device.scopes, &request.scopes);
                device.role = Some(request.role.clone());
                device.display_name = request.display_name.clone().or(device.display_name);
                device.platform = request.platform.clone().or(device.platform);
                device.client_id = request.client_id.clone().or(device.client_id);
                device.client_mode = request.client_mode.clone().or(device.client_mode);
                device.remote_ip = request.remote_ip.clone().or(device.remote_ip);
                device.approved_at_ms = now;
                Ok((device.clone(), device))
            })
            .await?;
        self.close_request(&request.request_id).await?;
        Ok(device)
    }

    /// Checks `token` as the device token of (device, role) for `scopes` (§2.9).
    pub async fn check_token(
        &self,
        device_id: &str,
        role: &str,
        token: &str,
        scopes: &[String],
    ) -> Result<Result<(), TokenFailure>, RpcError> {
        let key = device_key(device_id);
        let Some((mut device, revision)) = self.read::<PairedDevice>(&key).await? else {
            return Ok(Err(TokenFailure::Unknown));
        };
        let hash = hash_token(token);
        let held = |r: &TokenRecord| {
            crate::auth::secrets_equal(&r.hash, &hash)
                || r.previous_hash
                    .as_deref()
                    .is_some_and(|p| crate::auth::secrets_equal(p, &hash))
        };
        // A token of this device that no longer opens this role: revoked, rotated away, or
        // another role's.
        let ever_held = device.tokens.values().any(held);
        let Some(record) = device.tokens.get_mut(role) else {
            return Ok(Err(TokenFailure::mismatch_if(ever_held)));
        };
        if record.revoked_at_ms.is_some() || !crate::auth::secrets_equal(&record.hash, &hash) {
            return Ok(Err(TokenFailure::mismatch_if(ever_held)));
        }
        if !scopes.iter().all(|s| record.scopes.contains(s)) {
            return Ok(Err(TokenFailure::ScopeMismatch));
        }
        record.last_used_at_ms = Some(argent_proto::now_ms());
        // Best effort: the timestamp is informational, a concurrent change wins.
        let bytes = Bytes::from(serde_json::to_vec(&device).expect("records serialize"));
        let _ = self.state.update(BUCKET_AUTH, &key, bytes, revision).await;
        Ok(Ok(()))
    }

    /// Mints a token for (device, role) with `scopes`, replacing the previous one; the token
    /// itself is returned once and never stored.
    pub async fn issue_token(
        &self,
        device_id: &str,
        role: &str,
        scopes: &[String],
        grant: TokenGrant,
    ) -> Result<(String, TokenRecord), RpcError> {
        let token = new_token();
        let now = argent_proto::now_ms();
        let record = TokenRecord {
            hash: hash_token(&token),
            scopes: normalized(scopes),
            created_at_ms: now,
            rotated_at_ms: None,
            revoked_at_ms: None,
            last_used_at_ms: Some(now),
            previous_hash: None,
        };
        let stored = record.clone();
        self.update_device(device_id, |current| {
            let mut device =
                current.ok_or_else(|| RpcError::bad_params("unknown deviceId/role"))?;
            // Checked again inside the write: a revocation or rejection that landed since
            // the handshake's check wins over this handshake.
            if grant == TokenGrant::IfPaired {
                let covered = device.roles.iter().any(|r| r == role)
                    && scopes.iter().all(|s| device.scopes.contains(s))
                    && device
                        .tokens
                        .get(role)
                        .is_none_or(|t| t.revoked_at_ms.is_none());
                if !covered {
                    return Err(RpcError::not_paired("pairing required"));
                }
            }
            let previous = device.tokens.get(role).map(|t| t.hash.clone());
            let mut record = stored.clone();
            if previous.is_some() {
                record.rotated_at_ms = Some(now);
                record.previous_hash = previous;
            }
            device.tokens.insert(role.to_string(), record);
            Ok((device, ()))
        })
        .await?;
        Ok((token, record))
    }
}

/// What changing a device record can fail with: the store, or the change refusing.
enum ChangeError {
    Store(StateError),
    Refused(RpcError),
}

impl From<StateError> for ChangeError {
    fn from(err: StateError) -> Self {
        ChangeError::Store(err)
    }
}
