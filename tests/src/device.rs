//! A device identity for tests: an Ed25519 key that signs `connect` exactly as the upstream
//! clients do (PROTOCOL.md §2.8, v2 payload over the socket's challenge nonce; or the v3
//! payload of PROTOCOL-v4.md §4).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::raw::{Next, RawWs};
use crate::Gateway;

const WAIT: Duration = Duration::from_secs(5);
/// The scopes real operator clients request.
pub const SCOPES: [&str; 3] = ["operator.admin", "operator.approvals", "operator.pairing"];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub struct Device {
    key: SigningKey,
    pub id: String,
    pub public_key: String,
}

/// How one connect attempt goes.
pub struct Attempt<'a> {
    pub token: Option<&'a str>,
    pub role: &'a str,
    pub scopes: Vec<&'a str>,
    /// Host header: anything but localhost makes the connection remote (§2.6).
    pub host: Option<&'a str>,
    /// Changes the nonce / signedAt before signing.
    pub clock: fn(&str, &mut i64) -> String,
    /// Changes the params after signing (to break the proof on purpose).
    pub tamper: fn(&mut Value),
    /// `[minProtocol, maxProtocol]` offered.
    pub protocol: (u64, u64),
    /// Sign the v3 payload (OpenClaw's node host and CLI) instead of v2.
    pub v3_payload: bool,
    /// Sent as `auth.deviceToken` (v4 clients).
    pub device_token: Option<&'a str>,
}

impl Default for Attempt<'_> {
    fn default() -> Self {
        Attempt {
            token: None,
            role: "operator",
            scopes: SCOPES.to_vec(),
            host: None,
            clock: |nonce, _| nonce.to_string(),
            tamper: |_| {},
            protocol: (3, 3),
            v3_payload: false,
            device_token: None,
        }
    }
}

impl Device {
    pub fn new(seed: u8) -> Device {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let raw = key.verifying_key().to_bytes();
        Device {
            id: hex::encode(Sha256::digest(raw)),
            public_key: URL_SAFE_NO_PAD.encode(raw),
            key,
        }
    }

    /// The plain attempt: this token, everything else as real clients send it.
    pub async fn with_token(&self, gw: &Gateway, token: &str) -> (Value, RawWs) {
        self.connect(
            gw,
            Attempt {
                token: Some(token),
                ..Default::default()
            },
        )
        .await
    }

    /// Opens a socket, signs a v2 `connect` over its challenge, returns (response, socket).
    pub async fn connect(&self, gw: &Gateway, a: Attempt<'_>) -> (Value, RawWs) {
        let headers: Vec<(&str, &str)> = a.host.map(|h| vec![("host", h)]).unwrap_or_default();
        let mut ws = RawWs::open(&gw.ws, &headers).await.unwrap();
        let Next::Frame(challenge) = ws.next(WAIT).await else {
            panic!("no challenge")
        };
        let mut signed_at = now_ms();
        let nonce = (a.clock)(
            challenge["payload"]["nonce"].as_str().unwrap(),
            &mut signed_at,
        );
        let token = a.token.or(a.device_token).unwrap_or("");
        let mut payload = format!(
            "v2|{}|test|test|{}|{}|{signed_at}|{token}|{nonce}",
            self.id,
            a.role,
            a.scopes.join(",")
        );
        if a.v3_payload {
            // v3 = the v2 fields, then the lower-cased platform and device family.
            payload = format!("v3{}|linux|", &payload[2..]);
        }
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(payload.as_bytes()).to_bytes());
        let mut params = json!({"minProtocol":a.protocol.0,"maxProtocol":a.protocol.1,
            "client":{"id":"test","version":"1","platform":"linux","mode":"test","instanceId":"dev-1"},
            "role":a.role,"scopes":a.scopes,
            "device":{"id":self.id,"publicKey":self.public_key,"signature":signature,
                      "signedAt":signed_at,"nonce":nonce}});
        if let Some(token) = a.token {
            params["auth"] = json!({"token": token});
        }
        if let Some(token) = a.device_token {
            params["auth"]["deviceToken"] = json!(token);
        }
        (a.tamper)(&mut params);
        ws.send_json(&json!({"type":"req","id":"c1","method":"connect","params":params}))
            .await
            .unwrap();
        match ws.next(WAIT).await {
            Next::Frame(frame) => (frame, ws),
            other => panic!("no response: {other:?}"),
        }
    }
}
