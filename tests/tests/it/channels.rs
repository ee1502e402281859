//! Chat channels on real processes (PROTOCOL.md §5.9), each platform a double on loopback
//! speaking its real wire format: a Telegram conversation through the model double, the
//! poller's node SIGKILLed mid-conversation (another takes over; nothing lost, nothing
//! answered twice), `channels.status` while the platform stalls and fails; WhatsApp,
//! Slack and the generic webhook through the gateways' webhook URLs (signatures, the
//! handshakes, a retried delivery answered once); Signal's event stream; `send` once per
//! idempotency key, mirrored into the transcript, its errors.

use std::time::Duration;

use serde_json::{json, Value};

use argent_client::Client;
use argent_tests::channel_doubles::{
    slack_message_event_body, slack_signature, slack_url_verification_body, webhook_signature,
    whatsapp_inbound_body, whatsapp_signature, DiscordDouble, SignalDouble, SlackDouble,
    TelegramDouble, WebhookReceiver, WhatsAppDouble,
};
use argent_tests::model_double::ModelDouble;
use argent_tests::{call_error, expect_error};
use argent_tests::{eventually, http_request, Nats, Node};

use crate::chat_cluster::{gateway, publish_config, wait_nodes};
use crate::chat_local::model_config;

const KEY_ENV: (&str, &str) = ("DOUBLE_KEY", "double-secret");
const BOT_TOKEN: &str = "123456:telegram-test-token";
/// The person allowed to talk to the bot, and a stranger.
const OWNER: i64 = 777;
const STRANGER: i64 = 999;

async fn node(nats: &Nats, id: &str) -> Node {
    Node::start_with_env(nats, id, &[], &[KEY_ENV, ("TG_TOKEN", BOT_TOKEN)])
        .await
        .unwrap()
}

/// The account's snapshot in `channels.status`.
async fn account_status(client: &Client, channel: &str) -> Value {
    let status = client.call("channels.status", json!({})).await.unwrap();
    status["channelAccounts"][channel][0].clone()
}

/// Waits until the account's snapshot passes `check`, returning it.
async fn wait_status(
    client: &Client,
    channel: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let seen = eventually(Duration::from_secs(30), || async {
        let snapshot = account_status(client, channel).await;
        check(&snapshot).then_some(snapshot)
    })
    .await;
    match seen {
        Some(snapshot) => snapshot,
        None => panic!(
            "{channel}: {what} never held: {}",
            account_status(client, channel).await
        ),
    }
}

fn history_texts(history: &Value) -> Vec<String> {
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["content"]
                .as_array()
                .and_then(|c| c.iter().find_map(|p| p["text"].as_str()))
                .or_else(|| m["content"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// A Telegram conversation across a cluster of two node-agents: the allowed sender's
/// messages become turns in their own session (seen in `chat.history`), a stranger is told
/// how to be let in and never reaches the agent, the poller's node is SIGKILLed
/// mid-turn and the other node takes over (that turn ends with an apology, the next
/// message is answered once, no update lost or answered twice), `channels.status` says
/// what a stall and a failing API look like, and `send` delivers once per key.
#[tokio::test(flavor = "multi_thread")]
async fn telegram_conversation_survives_the_death_of_its_poller() {
    let model = ModelDouble::start().await;
    let telegram = TelegramDouble::start(BOT_TOKEN, 123456).await;
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let mut nodes = [node(&nats, "node-1").await, node(&nats, "node-2").await];
    let mut config = model_config(&model);
    config["channels"] = json!({"telegram": {
        "botToken": "${TG_TOKEN}", "apiBaseUrl": telegram.base_url(),
        "allowFrom": [OWNER], "pollTimeoutSeconds": 1,
    }});
    publish_config(&nats, &config).await;
    let client = a.client().await.unwrap();
    wait_nodes(&client, 2).await;

    let snapshot = wait_status(&client, "telegram", "running", |s| s["running"] == true).await;
    assert_eq!(snapshot["configured"], true, "{snapshot}");
    assert_eq!(snapshot["tokenSource"], "env", "{snapshot}");
    assert_eq!(snapshot["mode"], "polling");
    assert_eq!(snapshot["dmPolicy"], "pairing");
    assert_eq!(snapshot["bot"], "@argent_test_bot", "{snapshot}");
    let status = client.call("channels.status", json!({})).await.unwrap();
    assert_eq!(status["channelOrder"][0], "whatsapp");
    assert_eq!(status["channelLabels"]["telegram"], "Telegram");
    assert_eq!(status["channelDefaultAccountId"]["telegram"], "default");
    assert_eq!(status["channels"]["telegram"]["running"], true);
    assert_eq!(status["channels"]["whatsapp"]["configured"], false);

    // The owner talks to the agent; the reply comes back on Telegram.
    telegram.push_text(OWNER, OWNER, "hello bot");
    let sent = telegram.wait_sent(1, Duration::from_secs(30)).await;
    assert_eq!(sent[0].chat_id, OWNER);
    assert_eq!(sent[0].text.as_deref(), Some("echo: hello bot"));
    let session = format!("agent:main:telegram:dm:{OWNER}");
    let history = client
        .call("chat.history", json!({"sessionKey": session}))
        .await
        .unwrap();
    assert_eq!(
        history_texts(&history),
        ["hello bot", "echo: hello bot"],
        "{history}"
    );
    // The model was told where the message came from.
    assert!(model
        .request_for("hello bot")
        .system
        .contains("over Telegram"));

    // A stranger is told how to be let in; the agent never sees them.
    telegram.push_text(STRANGER, STRANGER, "let me in");
    let sent = telegram.wait_sent(2, Duration::from_secs(30)).await;
    assert_eq!(sent[1].chat_id, STRANGER);
    let told = sent[1].text.clone().unwrap();
    assert!(
        told.contains(&STRANGER.to_string()) && told.contains("allowFrom"),
        "{told}"
    );
    assert_eq!(model.count_matching("let me in"), 0);

    // The poller's node dies in the middle of a turn.
    let owner = account_status(&client, "telegram").await["receiver"]["nodeId"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = nodes.iter().position(|n| n.id == owner).unwrap();
    telegram.push_text(OWNER, OWNER, "[[delay:4000]] a slow question");
    eventually(Duration::from_secs(20), || async {
        (model.count_matching("a slow question") > 0).then_some(())
    })
    .await
    .expect("the slow turn started");
    nodes[victim].proc.kill();
    let survivor = nodes[1 - victim].id.clone();
    // Sent while no node polls: it waits for the successor.
    telegram.push_text(OWNER, OWNER, "are you there?");
    let sent = telegram.wait_sent(4, Duration::from_secs(60)).await;
    let to_owner: Vec<String> = sent[2..]
        .iter()
        .map(|s| s.text.clone().unwrap_or_default())
        .collect();
    assert!(
        to_owner
            .iter()
            .any(|t| t.starts_with("Sorry, I could not answer")),
        "the turn that died is apologised for: {to_owner:?}"
    );
    assert!(
        to_owner.contains(&"echo: are you there?".to_string()),
        "{to_owner:?}"
    );
    // Nothing more arrives: no update answered twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(telegram.sent().len(), 4, "{:?}", telegram.sent());
    assert_eq!(model.count_matching("are you there?"), 1);
    assert_eq!(telegram.pending_updates(), 0);
    let snapshot = wait_status(&client, "telegram", "taken over", |s| {
        s["receiver"]["nodeId"] == json!(survivor) && s["running"] == true
    })
    .await;
    assert!(snapshot["lastInboundAt"].as_u64().is_some(), "{snapshot}");
    assert!(snapshot["lastOutboundAt"].as_u64().is_some(), "{snapshot}");

    // A stalled API: the loop lives on (running) and says it is not connected, and why.
    telegram.set_stalled(true);
    let snapshot = wait_status(&client, "telegram", "stalled", |s| {
        s["connected"] == false
            && s["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("stalled"))
    })
    .await;
    assert_eq!(snapshot["running"], true, "{snapshot}");
    telegram.set_stalled(false);
    telegram.set_failing(Some(502));
    wait_status(&client, "telegram", "failing", |s| {
        s["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 502") && e.contains("Bad Gateway"))
    })
    .await;
    telegram.set_failing(None);
    wait_status(&client, "telegram", "reconnected", |s| {
        s["connected"] == true
    })
    .await;
    let probed = client
        .call("channels.status", json!({"probe": true, "timeoutMs": 5000}))
        .await
        .unwrap();
    let probe = &probed["channelAccounts"]["telegram"][0]["probe"];
    assert_eq!(probe["ok"], true, "{probed}");
    assert_eq!(probe["bot"]["username"], "argent_test_bot");

    // `send`: once per idempotency key, the same answer twice, mirrored in the transcript.
    let params = json!({"channel": "telegram", "to": OWNER.to_string(), "message": "Reminder: water the plants",
                        "idempotencyKey": "send-1"});
    let first = client.call("send", params.clone()).await.unwrap();
    let again = client.call("send", params).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first["runId"], "send-1");
    assert_eq!(first["channel"], "telegram");
    assert_eq!(first["chatId"], OWNER.to_string());
    assert!(!first["messageId"].as_str().unwrap().is_empty(), "{first}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let plants: Vec<_> = telegram
        .sent()
        .into_iter()
        .filter(|s| s.text.as_deref() == Some("Reminder: water the plants"))
        .collect();
    assert_eq!(plants.len(), 1);
    let history = client
        .call("chat.history", json!({"sessionKey": session}))
        .await
        .unwrap();
    assert_eq!(
        history_texts(&history).last().map(String::as_str),
        Some("Reminder: water the plants")
    );

    // A cron job announces its result: to a named chat, and (no target) to the chat the
    // agent answered last.
    for (delivery, text) in [
        (
            json!({"mode": "announce", "channel": "telegram", "to": "4242"}),
            "cron to a named chat",
        ),
        (json!({"mode": "announce"}), "cron to the last chat"),
    ] {
        let job = client
            .call("cron.add", json!({"name": text, "schedule": {"kind": "every", "everyMs": 3_600_000},
                                     "sessionTarget": "isolated", "payload": {"kind": "agentTurn", "message": text},
                                     "delivery": delivery}))
            .await
            .unwrap();
        let ran = client
            .call("cron.run", json!({"id": job["id"], "mode": "force"}))
            .await
            .unwrap();
        assert_eq!(ran["ran"], true, "{ran}");
    }
    let announced: Vec<(i64, String)> = telegram
        .sent()
        .into_iter()
        .filter_map(|s| Some((s.chat_id, s.text?)))
        .filter(|(_, t)| t.starts_with("echo: cron"))
        .collect();
    assert_eq!(
        announced,
        [
            (4242, "echo: cron to a named chat".to_string()),
            (OWNER, "echo: cron to the last chat".to_string())
        ]
    );

    // The agent's `send_message` tool.
    let call = r#"tell them [[call:send_message:{"channel":"telegram","to":"5150","message":"from the agent"}]]"#;
    telegram.push_text(OWNER, OWNER, call);
    eventually(Duration::from_secs(30), || async {
        telegram
            .sent()
            .iter()
            .any(|s| s.chat_id == 5150 && s.text.as_deref() == Some("from the agent"))
            .then_some(())
    })
    .await
    .expect("the tool's message arrived");

    // Automatic speech: the text reply, then the same as a voice note (a local command
    // standing in for an engine writes Ogg).
    config["messages"] = json!({"tts": {"auto": "always", "provider": "cli", "cli": {"command": [
        "sh", "-c", r#"printf 'OggS\000\002' > "$1"; cat "$0" >> "$1""#, "{{TEXT_FILE}}", "{{OUTPUT_FILE}}"]}}});
    publish_config(&nats, &config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = telegram.sent().len();
    telegram.push_text(OWNER, OWNER, "say it out loud");
    let sent = telegram
        .wait_sent(before + 2, Duration::from_secs(30))
        .await;
    let voice = &sent[before + 1];
    assert_eq!(sent[before].text.as_deref(), Some("echo: say it out loud"));
    assert_eq!((voice.method.as_str(), voice.chat_id), ("sendVoice", OWNER));
    assert_eq!(voice.voice_bytes, Some(6 + "echo: say it out loud".len()));

    // Errors: an unknown channel, the default channel unconfigured, a bad target, a 5xx.
    let send = |channel: Option<&str>, to: &str, key: &str| {
        let mut p = json!({"to": to, "message": "x", "idempotencyKey": key});
        if let Some(c) = channel {
            p["channel"] = json!(c);
        }
        p
    };
    let e = call_error(client.call("send", send(Some("x"), "1", "k1")).await);
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("INVALID_REQUEST", "unsupported channel: x")
    );
    let sent = client.call("send", send(None, "1", "k2")).await;
    expect_error(sent, "INVALID_REQUEST", "whatsapp is not configured");
    let sent = client
        .call("send", send(Some("telegram"), "bob", "k3"))
        .await;
    expect_error(sent, "INVALID_REQUEST", "numeric chat id");
    telegram.set_failing(Some(500));
    let sent = client.call("send", send(Some("telegram"), "1", "k4")).await;
    expect_error(sent, "UNAVAILABLE", "HTTP 500");
    // Not delivered, so the same key may deliver once the platform is back.
    telegram.set_failing(None);
    client
        .call("send", send(Some("telegram"), "1", "k4"))
        .await
        .unwrap();
}

const WA_PHONE: &str = "1055501";
const WA_TOKEN: &str = "wa-access-token";
const WA_SECRET: &str = "wa-app-secret";
const WA_VERIFY: &str = "wa-verify-token";
const SLACK_TOKEN: &str = "xoxb-slack-token";
const SLACK_SECRET: &str = "slack-signing-secret";
const HOOK_SECRET: &str = "hook-secret";

/// A POST to a gateway's port: (status, body).
async fn post(
    gateway: &str,
    path: &str,
    headers: &[(String, String)],
    body: &str,
) -> (u16, String) {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    http_request(gateway, "POST", path, &headers, body.as_bytes())
        .await
        .unwrap()
}

/// Slack's signature headers for `body`, signed now.
fn slack_headers(body: &str) -> [(String, String); 2] {
    let now = argent_proto::now_ms() / 1000;
    [
        (
            "X-Slack-Signature".into(),
            slack_signature(SLACK_SECRET, now, body),
        ),
        ("X-Slack-Request-Timestamp".into(), now.to_string()),
    ]
}

/// The webhook platforms through the gateways' URLs: WhatsApp's verify handshake and
/// signature (a bad one refused, a good one answered, a retried delivery answered once),
/// Slack's `url_verification` and a signed direct message, the generic signed webhook both
/// ways; Signal's event stream; Discord outbound only, and `channels.status` saying so.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_platforms_signal_and_discord() {
    let model = ModelDouble::start().await;
    let whatsapp = WhatsAppDouble::start(WA_PHONE, WA_TOKEN).await;
    let slack = SlackDouble::start(SLACK_TOKEN).await;
    let discord = DiscordDouble::start("discord-token").await;
    let signal = SignalDouble::start("+15550001").await;
    let hook = WebhookReceiver::start().await;
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let _node = node(&nats, "node-1").await;
    let open = json!({"dmPolicy": "open", "allowFrom": ["*"]});
    let mut config = model_config(&model);
    config["channels"] = json!({
        "whatsapp": {"accessToken": WA_TOKEN, "phoneNumberId": WA_PHONE, "appSecret": WA_SECRET,
                     "verifyToken": WA_VERIFY, "apiBaseUrl": whatsapp.base_url()},
        "slack": {"botToken": SLACK_TOKEN, "signingSecret": SLACK_SECRET, "apiBaseUrl": slack.base_url()},
        "discord": {"token": "discord-token", "apiBaseUrl": discord.base_url()},
        "signal": {"account": "+15550001", "httpUrl": signal.base_url()},
        "webhook": {"accounts": {"crm": {"secret": HOOK_SECRET, "url": hook.url()}}},
    });
    for channel in ["whatsapp", "slack", "signal", "webhook"] {
        for (k, v) in open.as_object().unwrap() {
            config["channels"][channel][k] = v.clone();
        }
    }
    config["channels"]["webhook"]["accounts"]["crm"]["dmPolicy"] = json!("open");
    publish_config(&nats, &config).await;
    let client = a.client().await.unwrap();
    wait_nodes(&client, 1).await;
    for channel in ["whatsapp", "slack", "signal"] {
        wait_status(&client, channel, "running", |s| s["running"] == true).await;
    }

    // `status` and `health` carry the channels (refreshed by every gateway).
    let lines = eventually(Duration::from_secs(30), || async {
        let status = b
            .client()
            .await
            .ok()?
            .call("status", json!({}))
            .await
            .ok()?;
        let lines = status["channelSummary"].as_array()?.clone();
        (lines.len() == 5).then_some((lines, status["channelRuntime"].clone()))
    })
    .await
    .expect("status shows the channels");
    assert!(
        lines.0.contains(&json!("Slack default: running")),
        "{lines:?}"
    );
    assert!(
        lines.0.contains(&json!("Discord default: stopped")),
        "{lines:?}"
    );
    assert_eq!(lines.1["whatsapp"]["running"], true, "{lines:?}");
    let health = client.call("health", json!({"probe": true})).await.unwrap();
    assert_eq!(health["channels"]["signal"]["running"], true, "{health}");
    assert_eq!(health["channelLabels"]["whatsapp"], "WhatsApp");

    // WhatsApp: the subscription handshake on gateway B.
    let path = "/channels/whatsapp/webhook";
    let verify =
        format!("{path}?hub.mode=subscribe&hub.verify_token={WA_VERIFY}&hub.challenge=4242");
    assert_eq!(
        http_request(&b.ws, "GET", &verify, &[], b"").await.unwrap(),
        (200, "4242".to_string())
    );
    let wrong = format!("{path}?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=4242");
    assert_eq!(
        http_request(&b.ws, "GET", &wrong, &[], b"")
            .await
            .unwrap()
            .0,
        401
    );
    // A delivery with a bad signature is refused and reaches nobody.
    let body = whatsapp_inbound_body(WA_PHONE, "15557770", "wamid.A1", "hi from whatsapp");
    let signed = |secret: &str| {
        let signature = whatsapp_signature(secret, body.as_bytes());
        [("X-Hub-Signature-256".to_string(), signature)]
    };
    assert_eq!(
        post(&a.ws, path, &signed("not-the-secret"), &body).await.0,
        401
    );
    // A good one is answered; delivered again (a platform retry, through the other
    // gateway), it is not answered twice.
    for gw in [&a, &b] {
        assert_eq!(post(&gw.ws, path, &signed(WA_SECRET), &body).await.0, 200);
    }
    let sent = whatsapp.wait_sent(1, Duration::from_secs(30)).await;
    assert_eq!(
        (sent[0].to.as_str(), sent[0].text.as_str()),
        ("15557770", "echo: hi from whatsapp")
    );
    assert_eq!(model.count_matching("hi from whatsapp"), 1);

    // Slack: the URL check (signed), then a direct message.
    let path = "/channels/slack/webhook";
    let body = slack_url_verification_body("chal-1");
    let (status, answer) = post(&a.ws, path, &slack_headers(&body), &body).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&answer).unwrap()),
        (200, json!({"challenge": "chal-1"}))
    );
    assert_eq!(post(&a.ws, path, &[], &body).await.0, 401);
    let body = slack_message_event_body("Ev1", "U42", "D42", "hi from slack");
    assert_eq!(post(&b.ws, path, &slack_headers(&body), &body).await.0, 200);
    let sent = slack.wait_sent(1, Duration::from_secs(30)).await;
    assert_eq!(
        (sent[0].channel.as_str(), sent[0].text.as_str()),
        ("D42", "echo: hi from slack")
    );

    // The generic webhook: a signed message in, the reply out signed.
    let body = json!({"id": "m-1", "from": "customer-7", "text": "hi from the crm"}).to_string();
    let signature = webhook_signature(HOOK_SECRET, body.as_bytes());
    let path = "/channels/webhook/crm/webhook";
    let headers = [("X-Argent-Signature".to_string(), signature)];
    assert_eq!(post(&a.ws, path, &headers, &body).await.0, 200);
    assert_eq!(post(&a.ws, path, &[], &body).await.0, 401);
    let got = hook.wait_received(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["to"], "customer-7");
    assert_eq!(got[0].body["text"], "echo: hi from the crm");
    assert_eq!(
        got[0].header("x-argent-signature").unwrap(),
        webhook_signature(HOOK_SECRET, got[0].raw.as_bytes())
    );

    // Signal: a message on the daemon's event stream, the reply through JSON-RPC `send`.
    signal.push_text("+15557771", "hi from signal");
    let sent = signal.wait_sent(1, Duration::from_secs(30)).await;
    assert_eq!(sent[0].recipients, ["+15557771"]);
    assert_eq!(sent[0].message, "echo: hi from signal");

    // Discord sends; status says why it does not receive.
    let answer = client
        .call("send", json!({"channel": "discord", "to": "channel:1001", "message": "hello discord", "idempotencyKey": "d-1"}))
        .await
        .unwrap();
    assert_eq!(answer["channelId"], "1001", "{answer}");
    let sent = discord.wait_sent(1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].content, "hello discord");
    let snapshot = account_status(&client, "discord").await;
    assert_eq!(snapshot["inbound"], false, "{snapshot}");
    assert!(snapshot["inboundUnavailable"]
        .as_str()
        .unwrap()
        .contains("gateway WebSocket"));
    // `send` defaults to WhatsApp.
    let answer = client
        .call(
            "send",
            json!({"to": "+1 555 777 0", "message": "default channel", "idempotencyKey": "w-1"}),
        )
        .await
        .unwrap();
    assert_eq!(answer["channel"], "whatsapp");
    assert_eq!(answer["toJid"], "15557770@s.whatsapp.net");
    // Logged out: the receiver stops on its node, deliveries are not answered, until the
    // account's config changes.
    let out = client
        .call("channels.logout", json!({"channel": "slack"}))
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"channel": "slack", "accountId": "default", "cleared": true, "loggedOut": true})
    );
    let snapshot = wait_status(&client, "slack", "stopped", |s| s["running"] == false).await;
    assert_eq!(snapshot["loggedOut"], true, "{snapshot}");
    let body = slack_message_event_body("Ev2", "U42", "D42", "after logout");
    let path = "/channels/slack/webhook";
    assert_eq!(post(&a.ws, path, &slack_headers(&body), &body).await.0, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(model.count_matching("after logout"), 0);
    assert_eq!(slack.sent().len(), 1);

    // A webhook URL of an account that does not exist.
    let missing = http_request(&a.ws, "POST", "/channels/slack/nope/webhook", &[], b"{}")
        .await
        .unwrap();
    assert_eq!(missing.0, 404);
}
