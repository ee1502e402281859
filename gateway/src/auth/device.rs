//! Device identity at connect (PROTOCOL.md §2.8; steps 9–14 of §2.4): an Ed25519 key, its
//! id (SHA-256 of the raw key, hex), and a signature over the v3, v2 or v1 payload string
//! (PROTOCOL-v4.md §4: v3 adds the client's platform and device family).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use serde_json::json;

use argent_proto::connect::{ConnectParams, DeviceProof};
use argent_proto::errors::RpcError;
use argent_proto::version::Protocol;

/// Allowed distance between the client's `signedAt` and our clock (§1.8).
pub const MAX_SKEW_MS: i64 = 600_000;

/// A device whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenDevice {
    /// Lowercase hex SHA-256 of the raw public key.
    pub id: String,
    /// The raw key, canonical base64url without padding.
    pub public_key: String,
    /// Which payload the signature covered: `v3`, `v2` or `v1`.
    pub payload_version: &'static str,
}

/// Why a device proof was refused, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceFailure {
    /// The public key cannot be decoded (v3 reports it as an identity mismatch).
    PublicKeyInvalid,
    IdentityMismatch,
    SignatureExpired,
    NonceRequired,
    NonceMismatch,
    SignatureInvalid,
}

impl DeviceFailure {
    pub fn message(self, protocol: Protocol) -> &'static str {
        match self {
            DeviceFailure::PublicKeyInvalid => {
                protocol.message("device identity mismatch", "device public key invalid")
            }
            DeviceFailure::IdentityMismatch => "device identity mismatch",
            DeviceFailure::SignatureExpired => "device signature expired",
            DeviceFailure::NonceRequired => "device nonce required",
            DeviceFailure::NonceMismatch => "device nonce mismatch",
            DeviceFailure::SignatureInvalid => "device signature invalid",
        }
    }

    /// `details.code` and `details.reason` on v4 connections (PROTOCOL-v4.md §7.2).
    fn v4_details(self) -> (&'static str, &'static str) {
        match self {
            DeviceFailure::PublicKeyInvalid => {
                ("DEVICE_AUTH_PUBLIC_KEY_INVALID", "device-public-key")
            }
            DeviceFailure::IdentityMismatch => {
                ("DEVICE_AUTH_DEVICE_ID_MISMATCH", "device-id-mismatch")
            }
            DeviceFailure::SignatureExpired => {
                ("DEVICE_AUTH_SIGNATURE_EXPIRED", "device-signature-stale")
            }
            DeviceFailure::NonceRequired => ("DEVICE_AUTH_NONCE_REQUIRED", "device-nonce-missing"),
            DeviceFailure::NonceMismatch => ("DEVICE_AUTH_NONCE_MISMATCH", "device-nonce-mismatch"),
            DeviceFailure::SignatureInvalid => {
                ("DEVICE_AUTH_SIGNATURE_INVALID", "device-signature")
            }
        }
    }

    pub fn to_error(self, protocol: Protocol) -> RpcError {
        let (code, reason) = self.v4_details();
        protocol.connect_error(
            RpcError::unauthorized(self.message(protocol)),
            code,
            &[("reason", json!(reason))],
        )
    }
}

/// Accepts base64url or standard base64, with or without padding (upstream's decoder does).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let normalized: String = text
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(normalized).ok()
}

/// The raw 32-byte key from base64url text or a PEM SPKI block.
pub fn decode_public_key(text: &str) -> Option<VerifyingKey> {
    if text.contains("BEGIN") {
        return VerifyingKey::from_public_key_pem(text.trim()).ok();
    }
    let raw: [u8; 32] = decode_base64(text)?.try_into().ok()?;
    VerifyingKey::from_bytes(&raw).ok()
}

/// `device.id` for a key: lowercase hex SHA-256 of the raw 32 bytes.
pub fn device_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The strings the client may have signed, in the order they are tried: with a nonce the
/// v3 payload (PROTOCOL-v4.md §4) then v2 (§2.8); without one only v1.
pub fn signed_payloads(
    params: &ConnectParams,
    device: &DeviceProof,
) -> Vec<(&'static str, String)> {
    let scopes = params.scopes.as_deref().unwrap_or_default().join(",");
    let role = params.role.as_deref().unwrap_or("operator");
    // The first credential present (an empty string counts): v4 clients may send only a
    // device or bootstrap token.
    let auth = &params.auth;
    let token = [&auth.token, &auth.device_token, &auth.bootstrap_token]
        .into_iter()
        .find_map(Option::as_deref)
        .unwrap_or("");
    let head = [
        device.id.as_str(),
        params.client.id.as_str(),
        params.client.mode.as_str(),
        role,
        scopes.as_str(),
        &device.signed_at.to_string(),
        token,
    ]
    .join("|");
    let nonce = device
        .nonce
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let Some(nonce) = nonce else {
        return vec![("v1", format!("v1|{head}"))];
    };
    let lower = |field: Option<&str>| {
        field
            .map(|f| f.trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let platform = lower(Some(&params.client.platform));
    let family = lower(params.client.device_family.as_deref());
    vec![
        ("v3", format!("v3|{head}|{nonce}|{platform}|{family}")),
        ("v2", format!("v2|{head}|{nonce}")),
    ]
}

/// Steps 9–14 of §2.4 for the `device` block of `params`.
pub fn verify(
    params: &ConnectParams,
    device: &DeviceProof,
    challenge_nonce: &str,
    local: bool,
    now_ms: i64,
) -> Result<ProvenDevice, DeviceFailure> {
    // 9. The id must be the key's.
    let key = decode_public_key(&device.public_key).ok_or(DeviceFailure::PublicKeyInvalid)?;
    let id = device_id(&key);
    if id != device.id {
        return Err(DeviceFailure::IdentityMismatch);
    }
    // 10. Fresh enough.
    if (now_ms - device.signed_at).abs() > MAX_SKEW_MS {
        return Err(DeviceFailure::SignatureExpired);
    }
    // 11–12. Remote connections sign this socket's challenge.
    let nonce = device
        .nonce
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    match nonce {
        None if !local => return Err(DeviceFailure::NonceRequired),
        Some(n) if n != challenge_nonce => return Err(DeviceFailure::NonceMismatch),
        _ => {}
    }
    // 13. The signature.
    let signature = decode_base64(&device.signature)
        .and_then(|bytes| Signature::from_slice(&bytes).ok())
        .ok_or(DeviceFailure::SignatureInvalid)?;
    let payload_version = signed_payloads(params, device)
        .into_iter()
        .find(|(_, payload)| key.verify(payload.as_bytes(), &signature).is_ok())
        .map(|(version, _)| version)
        .ok_or(DeviceFailure::SignatureInvalid)?;
    // 14. The key decoded above; its canonical form is what gets stored.
    Ok(ProvenDevice {
        id,
        public_key: URL_SAFE_NO_PAD.encode(key.as_bytes()),
        payload_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use argent_proto::connect::parse_connect_params;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::json;

    const NOW: i64 = 1_767_225_600_000;
    const NONCE: &str = "5b0e2c1e-0d8f-4a55-9a0e-2f1b1b6f2c11";

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    /// The v2 (with a nonce) or v1 payload, as ArgentOS clients sign.
    fn signed_payload(params: &ConnectParams, device: &DeviceProof) -> String {
        signed_payloads(params, device).pop().unwrap().1
    }

    /// Connect params with a device block signed by `key` (v2/v1), after `tweak` ran on them.
    fn signed(tweak: impl FnOnce(&mut serde_json::Value)) -> ConnectParams {
        let key = key();
        let public = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
        let mut v = json!({"minProtocol":3,"maxProtocol":3,
            "client":{"id":"webchat","version":"1.0.0","platform":"web","mode":"webchat"},
            "role":"operator","scopes":["operator.admin","operator.pairing"],
            "auth":{"token":"tok"},
            "device":{"id": device_id(&key.verifying_key()),"publicKey":public,
                      "signature":"unsigned","signedAt":NOW,"nonce":NONCE}});
        tweak(&mut v);
        let mut params = parse_connect_params(Some(&v)).unwrap();
        let device = params.device.clone().unwrap();
        let signature = key.sign(signed_payload(&params, &device).as_bytes());
        params.device.as_mut().unwrap().signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        params
    }

    fn check(params: &ConnectParams, local: bool) -> Result<ProvenDevice, DeviceFailure> {
        verify(
            params,
            params.device.as_ref().unwrap(),
            NONCE,
            local,
            NOW + 1000,
        )
    }

    #[test]
    fn the_payload_is_exactly_the_documented_string() {
        let p = signed(|_| {});
        let d = p.device.clone().unwrap();
        assert_eq!(
            signed_payload(&p, &d),
            format!(
                "v2|{}|webchat|webchat|operator|operator.admin,operator.pairing|{NOW}|tok|{NONCE}",
                d.id
            )
        );
        let p = signed(|v| {
            v["device"].as_object_mut().unwrap().remove("nonce");
            v.as_object_mut().unwrap().remove("scopes");
            v.as_object_mut().unwrap().remove("role");
            v.as_object_mut().unwrap().remove("auth");
        });
        let d = p.device.clone().unwrap();
        assert_eq!(
            signed_payload(&p, &d),
            format!("v1|{}|webchat|webchat|operator||{NOW}|", d.id)
        );
    }

    #[test]
    fn v3_payloads_cover_platform_and_device_family_and_are_tried_first() {
        let mut p = signed(|v| {
            v["client"]["platform"] = json!(" Linux ");
            v["client"]["deviceFamily"] = json!("Desktop");
            v["auth"] = json!({"deviceToken": "dtok"});
        });
        let d = p.device.clone().unwrap();
        let (version, v3) = signed_payloads(&p, &d).remove(0);
        assert_eq!(version, "v3");
        assert_eq!(
            v3,
            format!(
                "v3|{}|webchat|webchat|operator|operator.admin,operator.pairing|{NOW}|dtok|{NONCE}|linux|desktop",
                d.id
            )
        );
        p.device.as_mut().unwrap().signature =
            URL_SAFE_NO_PAD.encode(key().sign(v3.as_bytes()).to_bytes());
        assert_eq!(check(&p, false).unwrap().payload_version, "v3");
        // A v2 signature still verifies, and says so.
        assert_eq!(check(&signed(|_| {}), false).unwrap().payload_version, "v2");
        // The platform is signed: another one breaks the v3 signature.
        p.client.platform = "darwin".into();
        assert_eq!(check(&p, false), Err(DeviceFailure::SignatureInvalid));
        assert_eq!(
            DeviceFailure::SignatureInvalid
                .to_error(Protocol::V4)
                .details["code"],
            "DEVICE_AUTH_SIGNATURE_INVALID"
        );
    }

    #[test]
    fn a_good_signature_proves_the_device() {
        let proven = check(&signed(|_| {}), false).unwrap();
        assert_eq!(proven.id.len(), 64);
        // Standard base64 with padding is accepted too.
        let mut p = signed(|_| {});
        let raw = URL_SAFE_NO_PAD
            .decode(&p.device.as_ref().unwrap().signature)
            .unwrap();
        p.device.as_mut().unwrap().signature =
            base64::engine::general_purpose::STANDARD.encode(raw);
        assert!(check(&p, false).is_ok());
    }

    #[test]
    fn pem_keys_are_accepted() {
        let pem = key()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let p = signed(|v| v["device"]["publicKey"] = json!(pem));
        assert_eq!(
            check(&p, false).unwrap().id,
            device_id(&key().verifying_key())
        );
    }

    #[test]
    fn every_failure_in_order() {
        let p = signed(|v| v["device"]["id"] = json!("0".repeat(64)));
        assert_eq!(check(&p, false), Err(DeviceFailure::IdentityMismatch));
        let p = signed(|v| v["device"]["publicKey"] = json!("not a key"));
        assert_eq!(check(&p, false), Err(DeviceFailure::PublicKeyInvalid));
        assert_eq!(
            DeviceFailure::PublicKeyInvalid.message(Protocol::V3),
            "device identity mismatch"
        );
        let p = signed(|v| v["device"]["signedAt"] = json!(NOW - MAX_SKEW_MS - 5000));
        assert_eq!(check(&p, false), Err(DeviceFailure::SignatureExpired));
        let p = signed(|v| {
            v["device"].as_object_mut().unwrap().remove("nonce");
        });
        assert_eq!(check(&p, false), Err(DeviceFailure::NonceRequired));
        assert!(check(&p, true).is_ok(), "local connections may sign v1");
        let p = signed(|v| v["device"]["nonce"] = json!("another-socket"));
        assert_eq!(check(&p, false), Err(DeviceFailure::NonceMismatch));
        // Anything signed differs from what is sent: the signature no longer holds.
        let mut p = signed(|_| {});
        p.scopes = Some(vec!["operator.pairing".into(), "operator.admin".into()]);
        assert_eq!(check(&p, false), Err(DeviceFailure::SignatureInvalid));
        let mut p = signed(|_| {});
        p.auth.token = Some("other".into());
        assert_eq!(check(&p, false), Err(DeviceFailure::SignatureInvalid));
        let mut p = signed(|_| {});
        p.device.as_mut().unwrap().signature = "AAAA".into();
        assert_eq!(check(&p, false), Err(DeviceFailure::SignatureInvalid));
        assert_eq!(
            DeviceFailure::SignatureInvalid
                .to_error(Protocol::V3)
                .message,
            "device signature invalid"
        );
    }
}
