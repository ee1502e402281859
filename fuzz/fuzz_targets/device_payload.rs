//! The device proof of `connect` (PROTOCOL.md §2.8, PROTOCOL-v4.md §4): `signed_payloads`,
//! `verify`, `decode_public_key`, `device_id`, with every field of the params taken from
//! the input — a `connect` frame or its params, as real clients send them — and the
//! device block replaced by one of a fixed Ed25519 key (the input cannot sign). Which
//! payload is signed, how the key and signature are encoded, the clock skew and whether the
//! connection is local come from a hash of the input.
//!
//! Why: this decides who a device is; a payload that does not cover a field lets that field
//! be changed under a valid signature. Checked, beyond "no panic":
//! * the payloads are exactly the documented strings: v3 then v2 with a nonce, v1 without;
//! * a signature over any of them by the key verifies — whatever the key's encoding
//!   (base64url, padded standard base64, PEM) and the signature's — and reports the version
//!   signed; a remote connection without a nonce is refused before any signature check;
//! * never with another key: the other key under its own id fails the signature, under the
//!   signer's id the identity check; outside ±10 minutes, expired;
//! * one flipped bit in any signed field (device id, key, signature, signedAt, client id and
//!   mode, role, each scope, the credential signed, the nonce, and for v3 platform and device
//!   family) makes it fail, unless the field's documented normalisation (trim, ASCII
//!   lower-case) maps the new value to the old one; one flipped bit in a field the payload
//!   does not cover (client version, display name, password, the credentials after the
//!   first one present, caps, locale, …) changes nothing.

#![no_main]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use argent_fuzz::Choices;
use argent_gateway::auth::device::{
    decode_public_key, device_id, signed_payloads, verify, DeviceFailure, ProvenDevice, MAX_SKEW_MS,
};
use argent_proto::connect::{parse_connect_params, ConnectParams, DeviceProof};
use argent_proto::errors::{jsonrpc, ErrorCode};
use argent_proto::version::Protocol;

/// When a client that sent no device block signed (PROTOCOL.md's examples: 2026-01-01).
const SIGNED_AT: i64 = 1_767_225_600_000;

fn signer() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn stranger() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn raw_key(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

fn trimmed(nonce: Option<&str>) -> Option<&str> {
    nonce.map(str::trim).filter(|n| !n.is_empty())
}

/// PROTOCOL.md §2.8 and PROTOCOL-v4.md §4, as written there.
fn documented(params: &ConnectParams, device: &DeviceProof) -> Vec<(&'static str, String)> {
    let auth = &params.auth;
    let token = auth
        .token
        .as_deref()
        .or(auth.device_token.as_deref())
        .or(auth.bootstrap_token.as_deref())
        .unwrap_or("");
    let scopes = params
        .scopes
        .as_ref()
        .map(|s| s.join(","))
        .unwrap_or_default();
    let base = format!(
        "{}|{}|{}|{}|{}|{}|{}",
        device.id,
        params.client.id,
        params.client.mode,
        params.role.as_deref().unwrap_or("operator"),
        scopes,
        device.signed_at,
        token
    );
    match trimmed(device.nonce.as_deref()) {
        None => vec![("v1", format!("v1|{base}"))],
        Some(nonce) => {
            let norm =
                |s: Option<&str>| s.map(|s| s.trim().to_ascii_lowercase()).unwrap_or_default();
            let platform = norm(Some(params.client.platform.as_str()));
            let family = norm(params.client.device_family.as_deref());
            vec![
                ("v3", format!("v3|{base}|{nonce}|{platform}|{family}")),
                ("v2", format!("v2|{base}|{nonce}")),
            ]
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let params_value = match value.get("params") {
        Some(params) if value.get("type").is_some() => params,
        _ => &value,
    };
    let Ok(mut params) = parse_connect_params(Some(params_value)) else {
        return;
    };
    let mut c = Choices::new(data);

    let key = signer();
    let public = key.verifying_key();
    let (signed_at, nonce) = params
        .device
        .as_ref()
        .map(|d| (d.signed_at, d.nonce.clone()))
        .unwrap_or((SIGNED_AT, None));
    let encoding = c.below(3);
    let key_text = match encoding {
        0 => raw_key(&public),
        1 => STANDARD.encode(public.as_bytes()),
        _ => public.to_public_key_pem(LineEnding::LF).expect("a PEM key"),
    };
    assert_eq!(decode_public_key(&key_text), Some(public));
    let id = device_id(&public);
    assert!(id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let mut device = DeviceProof {
        id,
        public_key: key_text,
        signature: String::new(),
        signed_at,
        nonce,
    };

    // 1. The documented strings.
    let payloads = signed_payloads(&params, &device);
    assert_eq!(payloads, documented(&params, &device));

    // 2. Signed by the key, it verifies, and says which payload.
    let (version, payload) = payloads[c.below(payloads.len())].clone();
    let signature = key.sign(payload.as_bytes()).to_bytes();
    device.signature = if c.coin() {
        URL_SAFE_NO_PAD.encode(signature)
    } else {
        STANDARD.encode(signature)
    };
    params.device = Some(device.clone());
    let nonce = trimmed(device.nonce.as_deref()).map(str::to_string);
    let challenge = nonce
        .clone()
        .unwrap_or_else(|| "a-challenge-nobody-signed".into());
    let local = c.coin();
    let skew = (c.next_u64() % (2 * MAX_SKEW_MS as u64 + 1)) as i64 - MAX_SKEW_MS;
    // The clock is never before 1970; `signedAt` is never negative (the params say so).
    let now = signed_at.saturating_add(skew).max(0);
    let unsigned_refusal = (nonce.is_none() && !local).then_some(DeviceFailure::NonceRequired);
    let proven = verify(&params, &device, &challenge, local, now);
    let expected = match unsigned_refusal {
        Some(failure) => Err(failure),
        None => Ok(ProvenDevice {
            id: device_id(&public),
            public_key: raw_key(&public),
            payload_version: version,
        }),
    };
    assert_eq!(proven, expected, "{payload}");

    // 3. Never with another key.
    let other = stranger().verifying_key();
    let mut forged = device.clone();
    forged.public_key = raw_key(&other);
    forged.id = device_id(&other);
    let refusal = unsigned_refusal.unwrap_or(DeviceFailure::SignatureInvalid);
    assert_eq!(
        verify(&params, &forged, &challenge, local, now),
        Err(refusal)
    );
    forged.id = device.id.clone();
    assert_eq!(
        verify(&params, &forged, &challenge, local, now),
        Err(DeviceFailure::IdentityMismatch)
    );
    if let Some(late) = signed_at.checked_add(MAX_SKEW_MS + 1 + (c.next_u64() % 1000) as i64) {
        assert_eq!(
            verify(&params, &device, &challenge, local, late),
            Err(DeviceFailure::SignatureExpired)
        );
    }
    for failure in [
        DeviceFailure::PublicKeyInvalid,
        DeviceFailure::IdentityMismatch,
        DeviceFailure::SignatureExpired,
        DeviceFailure::NonceRequired,
        DeviceFailure::NonceMismatch,
        DeviceFailure::SignatureInvalid,
    ] {
        for protocol in [Protocol::V3, Protocol::V4] {
            let err = failure.to_error(protocol);
            argent_fuzz::check_error_frame("c1", &err);
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert_eq!(err.jsonrpc_code(), jsonrpc::AUTH_FAILED);
            let code = err.details.get("code").and_then(Value::as_str);
            match protocol {
                Protocol::V3 => assert_eq!(code, None),
                Protocol::V4 => assert!(code.is_some_and(|code| code.starts_with("DEVICE_AUTH_"))),
            }
        }
    }

    // 4. One flipped bit.
    let flip = Flip {
        params: &params,
        device: &device,
        challenge: &challenge,
        local,
        now,
        before: &proven,
        version,
        pem: encoding == 2,
    };
    for field in 0..FIELDS {
        flip.check(field, &mut c);
    }
});

/// How many fields [`Flip::check`] knows.
const FIELDS: usize = 20;

struct Flip<'a> {
    params: &'a ConnectParams,
    device: &'a DeviceProof,
    challenge: &'a str,
    local: bool,
    now: i64,
    before: &'a Result<ProvenDevice, DeviceFailure>,
    version: &'static str,
    /// The key is a PEM block: its line breaks are whitespace the decoder trims.
    pem: bool,
}

/// Whether a changed field must break the proof.
enum Covered {
    Yes,
    No,
    /// Covered after a normalisation: breaks it unless the normalised values are equal.
    Normalised(fn(&str) -> String),
}

fn trim(s: &str) -> String {
    s.trim().to_string()
}

fn trim_lower(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// Flips one bit of one byte; `None` when the result is not UTF-8 or there is no byte.
fn flip_bit(text: &str, c: &mut Choices) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    let mut bytes = text.as_bytes().to_vec();
    let at = c.below(bytes.len());
    bytes[at] ^= 1 << c.below(8);
    String::from_utf8(bytes).ok()
}

impl Flip<'_> {
    fn check(&self, field: usize, c: &mut Choices) {
        let mut params = self.params.clone();
        let mut device = self.device.clone();
        let v3 = self.version == "v3";
        // The credential signed: the first of token, deviceToken, bootstrapToken present.
        let first_credential = [
            params.auth.token.is_some(),
            params.auth.device_token.is_some(),
            params.auth.bootstrap_token.is_some(),
        ]
        .iter()
        .position(|present| *present);
        let credential = |n: usize| {
            if first_credential == Some(n) {
                Covered::Yes
            } else {
                Covered::No
            }
        };
        let covered = {
            let (slot, covered): (&mut String, Covered) = match field {
                0 => (&mut device.id, Covered::Yes),
                1 if !self.pem => (&mut device.public_key, Covered::Yes),
                2 => (&mut device.signature, Covered::Yes),
                3 => {
                    // signedAt: any bit but the sign bit (the params never hold a negative).
                    let flipped = device.signed_at ^ (1i64 << c.below(63));
                    let device = DeviceProof {
                        signed_at: flipped,
                        ..device
                    };
                    return self.expect(&params, &device, Covered::Yes, FIELD_NAMES[field]);
                }
                4 => match device.nonce.as_mut() {
                    Some(n) => (n, Covered::Normalised(trim)),
                    None => return,
                },
                5 => (&mut params.client.id, Covered::Yes),
                6 => (&mut params.client.mode, Covered::Yes),
                7 => match params.role.as_mut() {
                    Some(role) => (role, Covered::Yes),
                    None => return,
                },
                8 => match params.scopes.as_mut().filter(|s| !s.is_empty()) {
                    Some(scopes) => {
                        let i = c.below(scopes.len());
                        (&mut scopes[i], Covered::Yes)
                    }
                    None => return,
                },
                9 => match params.auth.token.as_mut() {
                    Some(t) => (t, credential(0)),
                    None => return,
                },
                10 => match params.auth.device_token.as_mut() {
                    Some(t) => (t, credential(1)),
                    None => return,
                },
                11 => match params.auth.bootstrap_token.as_mut() {
                    Some(t) => (t, credential(2)),
                    None => return,
                },
                12 => (
                    &mut params.client.platform,
                    if v3 {
                        Covered::Normalised(trim_lower)
                    } else {
                        Covered::No
                    },
                ),
                13 => match params.client.device_family.as_mut() {
                    Some(f) => (
                        f,
                        if v3 {
                            Covered::Normalised(trim_lower)
                        } else {
                            Covered::No
                        },
                    ),
                    None => return,
                },
                14 => (&mut params.client.version, Covered::No),
                15 => match params.client.display_name.as_mut() {
                    Some(n) => (n, Covered::No),
                    None => return,
                },
                16 => match params.auth.password.as_mut() {
                    Some(p) => (p, Covered::No),
                    None => return,
                },
                17 => match params.caps.first_mut() {
                    Some(cap) => (cap, Covered::No),
                    None => return,
                },
                18 => match params.locale.as_mut() {
                    Some(l) => (l, Covered::No),
                    None => return,
                },
                19 => match params.client.instance_id.as_mut() {
                    Some(i) => (i, Covered::No),
                    None => return,
                },
                _ => return,
            };
            let Some(flipped) = flip_bit(slot, c) else {
                return;
            };
            *slot = flipped;
            covered
        };
        self.expect(&params, &device, covered, FIELD_NAMES[field]);
    }

    fn expect(&self, params: &ConnectParams, device: &DeviceProof, covered: Covered, field: &str) {
        let after = verify(params, device, self.challenge, self.local, self.now);
        let breaks = match covered {
            Covered::Yes => true,
            Covered::No => false,
            Covered::Normalised(norm) => {
                let (old, new) = changed_value(self.params, self.device, params, device);
                norm(&old) != norm(&new)
            }
        };
        if breaks {
            assert!(
                after.is_err(),
                "{field} changed, still verifies: {params:?} {device:?}"
            );
        } else {
            assert_eq!(
                &after, self.before,
                "{field} changed the outcome: {params:?} {device:?}"
            );
        }
    }
}

const FIELD_NAMES: [&str; FIELDS] = [
    "device.id",
    "device.publicKey",
    "device.signature",
    "device.signedAt",
    "device.nonce",
    "client.id",
    "client.mode",
    "role",
    "scopes",
    "auth.token",
    "auth.deviceToken",
    "auth.bootstrapToken",
    "client.platform",
    "client.deviceFamily",
    "client.version",
    "client.displayName",
    "auth.password",
    "caps",
    "locale",
    "client.instanceId",
];

/// The one normalised field that differs (nonce, platform or device family).
fn changed_value(
    old_params: &ConnectParams,
    old_device: &DeviceProof,
    params: &ConnectParams,
    device: &DeviceProof,
) -> (String, String) {
    let pairs = [
        (old_device.nonce.clone(), device.nonce.clone()),
        (
            Some(old_params.client.platform.clone()),
            Some(params.client.platform.clone()),
        ),
        (
            old_params.client.device_family.clone(),
            params.client.device_family.clone(),
        ),
    ];
    pairs
        .into_iter()
        .find(|(a, b)| a != b)
        .map(|(a, b)| (a.unwrap_or_default(), b.unwrap_or_default()))
        .expect("one normalised field changed")
}
