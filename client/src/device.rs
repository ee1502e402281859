//! A device identity for clients (PROTOCOL.md §2.8): an Ed25519 key whose id is the
//! SHA-256 of the raw public key, signing the v2 payload over the socket's challenge.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct DeviceKey {
    key: SigningKey,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret half.
        write!(f, "DeviceKey({})", self.id())
    }
}

impl DeviceKey {
    /// From the 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        DeviceKey {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// A new random identity.
    pub fn generate() -> Self {
        Self::from_seed(rand_seed())
    }

    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// `device.id`: lowercase hex SHA-256 of the raw public key.
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(self.key.verifying_key().as_bytes()))
    }

    /// The raw public key, base64url without padding.
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// The `device` block for `connect` params (which must already hold client, role,
    /// scopes and auth: they are part of what is signed).
    pub fn prove(&self, params: &Value, nonce: &str, signed_at: u64) -> Value {
        let scopes: Vec<&str> = params["scopes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let payload = format!(
            "v2|{}|{}|{}|{}|{}|{signed_at}|{}|{nonce}",
            self.id(),
            params["client"]["id"].as_str().unwrap_or_default(),
            params["client"]["mode"].as_str().unwrap_or_default(),
            params["role"].as_str().unwrap_or("operator"),
            scopes.join(","),
            params["auth"]["token"].as_str().unwrap_or_default(),
        );
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(payload.as_bytes()).to_bytes());
        json!({"id": self.id(), "publicKey": self.public_key(), "signature": signature,
               "signedAt": signed_at, "nonce": nonce})
    }
}

fn rand_seed() -> [u8; 32] {
    // Two v4 UUIDs: 244 random bits from the OS generator, without another dependency.
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed
}
