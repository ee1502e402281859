//! Device identity at connect (PROTOCOL.md §2.8, steps 9–16 of §2.4) against a real
//! gateway: the client signs the documented payload with Ed25519, exactly as the upstream
//! clients do; every way of getting it wrong has its own message. (Pairing and device
//! tokens, steps 15/17/18, come with the pairing release.)

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use argent_tests::raw::{Next, RawWs};
use argent_tests::Gateway;

const WAIT: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Device {
    key: SigningKey,
    id: String,
    public_key: String,
}

impl Device {
    fn new(seed: u8) -> Device {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let raw = key.verifying_key().to_bytes();
        Device {
            id: hex::encode(Sha256::digest(raw)),
            public_key: URL_SAFE_NO_PAD.encode(raw),
            key,
        }
    }

    /// A `connect` frame signed the way upstream clients sign (v2 with the nonce).
    fn connect(
        &self,
        token: &str,
        nonce: &str,
        signed_at: i64,
        edit: impl FnOnce(&mut Value),
    ) -> Value {
        let scopes = ["operator.admin", "operator.approvals", "operator.pairing"];
        let payload = format!(
            "v2|{}|test|test|operator|{}|{signed_at}|{token}|{nonce}",
            self.id,
            scopes.join(",")
        );
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(payload.as_bytes()).to_bytes());
        let mut params = json!({"minProtocol":3,"maxProtocol":3,
            "client":{"id":"test","version":"1","platform":"linux","mode":"test","instanceId":"dev-1"},
            "role":"operator","scopes":scopes,"auth":{"token":token},
            "device":{"id":self.id,"publicKey":self.public_key,"signature":signature,
                      "signedAt":signed_at,"nonce":nonce}});
        edit(&mut params);
        json!({"type":"req","id":"c1","method":"connect","params":params})
    }
}

/// Opens a socket, signs over its challenge (after `tweak`), returns the response.
async fn attempt(
    gw: &Gateway,
    token: &str,
    tweak: impl FnOnce(&str, &mut i64) -> String,
    edit: impl FnOnce(&mut Value),
) -> Value {
    let device = Device::new(9);
    let (mut ws, challenge) = RawWs::open_challenged(&gw.ws).await.unwrap();
    let mut signed_at = now_ms();
    let nonce = tweak(challenge["nonce"].as_str().unwrap(), &mut signed_at);
    ws.send_json(&device.connect(token, &nonce, signed_at, edit))
        .await
        .unwrap();
    match ws.next(WAIT).await {
        Next::Frame(frame) => frame,
        other => panic!("no response: {other:?}"),
    }
}

fn message(frame: &Value) -> &str {
    frame["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_signed_device_connects_and_is_known_by_its_id() {
    let gw = Gateway::local().start().await.unwrap();
    let frame = attempt(&gw, &gw.token, |nonce, _| nonce.to_string(), |_| {}).await;
    assert_eq!(frame["payload"]["type"], "hello-ok", "{frame}");
    let presence = &frame["payload"]["snapshot"]["presence"];
    let me = presence
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["instanceId"] == "dev-1")
        .expect("listed");
    assert_eq!(me["deviceId"], Device::new(9).id);
}

#[tokio::test]
async fn every_bad_proof_has_its_message() {
    let gw = Gateway::local().start().await.unwrap();
    let token = gw.token.clone();
    // The nonce of another socket (a replay).
    let f = attempt(
        &gw,
        &token,
        |_, _| "00000000-0000-4000-8000-000000000000".into(),
        |_| {},
    )
    .await;
    assert_eq!(message(&f), "device nonce mismatch");
    // Signed eleven minutes ago.
    let f = attempt(
        &gw,
        &token,
        |n, at| {
            *at -= 660_000;
            n.to_string()
        },
        |_| {},
    )
    .await;
    assert_eq!(message(&f), "device signature expired");
    // Someone else's id.
    let f = attempt(
        &gw,
        &token,
        |n, _| n.to_string(),
        |p| p["device"]["id"] = json!(Device::new(3).id),
    )
    .await;
    assert_eq!(message(&f), "device identity mismatch");
    // The signature does not cover what is sent (scopes changed after signing).
    let f = attempt(
        &gw,
        &token,
        |n, _| n.to_string(),
        |p| p["scopes"] = json!(["operator.admin"]),
    )
    .await;
    assert_eq!(message(&f), "device signature invalid");
    assert_eq!(f["error"]["code"], "INVALID_REQUEST");
    assert_eq!(f["error"]["details"]["jsonrpcCode"], -32002);
    // A good proof with a wrong shared token: step 16.
    let f = attempt(&gw, "wrong", |n, _| n.to_string(), |_| {}).await;
    assert_eq!(
        message(&f),
        "unauthorized: gateway token mismatch (provide gateway auth token)"
    );
}
