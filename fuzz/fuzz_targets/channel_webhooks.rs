//! Chat platforms' webhook deliveries (`node-agent/src/channels`): WhatsApp, Slack and the
//! generic webhook read an arbitrary body, correctly signed (the fuzzer cannot forge an
//! HMAC, so the target signs what it sends, reaching the parsers behind the checks), and
//! once more unsigned; WhatsApp's `GET` handshake reads an arbitrary query.
//!
//! Why: these URLs are open to the internet on every gateway; what arrives there is
//! anyone's. Checked, beyond "no panic": an unsigned delivery is always refused; a signed
//! one is refused as unreadable or read into messages that each have a message id, a sender
//! and a chat to answer; the handshake echoes the challenge only with the verify token.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

use argent_node_agent::channels::config::{Account, ChannelId};
use argent_node_agent::channels::platform::{
    hmac_hex, platform, ChannelError, WebhookOutcome, WebhookRequest,
};

const SECRET: &str = "fuzz-secret";
const VERIFY: &str = "fuzz-verify";

fn account(channel: ChannelId) -> Account {
    let settings = json!({
        "appSecret": SECRET, "verifyToken": VERIFY, "accessToken": "t", "phoneNumberId": "1055501",
        "signingSecret": SECRET, "botToken": "t", "secret": SECRET,
    });
    Account {
        channel,
        id: "default".into(),
        settings: settings.as_object().cloned().unwrap_or_default(),
    }
}

fn post(headers: Vec<(String, String)>, body: &[u8]) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        query: String::new(),
        headers,
        body: body.to_vec(),
    }
}

fn check_read(channel: ChannelId, read: Result<WebhookOutcome, ChannelError>) {
    match read {
        Ok(outcome) => {
            for m in &outcome.messages {
                assert!(!m.message_id.is_empty(), "{channel:?}: message without id");
                assert!(!m.from.is_empty() && !m.from[0].is_empty(), "{channel:?}: no sender");
                assert!(!m.chat.is_empty(), "{channel:?}: no chat to answer");
            }
        }
        Err(ChannelError::Malformed(why)) => assert!(!why.is_empty()),
        Err(other) => panic!("{channel:?}: a signed delivery refused with {other:?}"),
    }
}

fn refused(read: Result<WebhookOutcome, ChannelError>) -> bool {
    matches!(read, Err(ChannelError::Forbidden(_)))
}

fuzz_target!(|data: &[u8]| {
    let sha = format!("sha256={}", hmac_hex(SECRET.as_bytes(), data));
    let whatsapp = account(ChannelId::WhatsApp);
    let wa = platform(ChannelId::WhatsApp);
    let signed = post(vec![("x-hub-signature-256".into(), sha.clone())], data);
    check_read(ChannelId::WhatsApp, wa.webhook(&whatsapp, &signed));
    assert!(refused(wa.webhook(&whatsapp, &post(Vec::new(), data))));

    let hook = account(ChannelId::Webhook);
    let generic = platform(ChannelId::Webhook);
    let signed = post(vec![("x-argent-signature".into(), sha)], data);
    check_read(ChannelId::Webhook, generic.webhook(&hook, &signed));
    assert!(refused(generic.webhook(&hook, &post(Vec::new(), data))));

    let slack = account(ChannelId::Slack);
    let sl = platform(ChannelId::Slack);
    let now = argent_proto::now_ms() / 1000;
    let mut base = format!("v0:{now}:").into_bytes();
    base.extend_from_slice(data);
    let headers = vec![
        ("x-slack-request-timestamp".into(), now.to_string()),
        ("x-slack-signature".into(), format!("v0={}", hmac_hex(SECRET.as_bytes(), &base))),
    ];
    let read = sl.webhook(&slack, &post(headers, data));
    if let Ok(outcome) = &read {
        // The URL check echoes the challenge as JSON.
        if outcome.body.contains("challenge") {
            assert!(serde_json::from_str::<Value>(&outcome.body).is_ok());
        }
    }
    check_read(ChannelId::Slack, read);
    assert!(refused(sl.webhook(&slack, &post(Vec::new(), data))));

    // The subscription handshake with an arbitrary query.
    let query = String::from_utf8_lossy(data).into_owned();
    let get = WebhookRequest {
        method: "GET".into(),
        query,
        headers: Vec::new(),
        body: Vec::new(),
    };
    if let Ok(outcome) = wa.webhook(&whatsapp, &get) {
        assert_eq!(outcome.status, 200);
        assert_eq!(get.query_param("hub.verify_token").as_deref(), Some(VERIFY));
    }
});
