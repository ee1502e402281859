//! Voice on real processes (PROTOCOL.md §5.11, §4.2 `talk.mode`, `system-event`): speech
//! through doubles of OpenAI's and ElevenLabs' APIs (path, auth header, body, format; the
//! bytes returned are the bytes answered), fallback after a provider fails, preferences set
//! through one gateway seen through another, the offline command provider (a script, and
//! `espeak-ng` when installed), the CLI and the agent's tool; `talk.mode` heard on both
//! gateways and the webchat rule; `system-event` announced as presence and read by the
//! next heartbeat turn.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use argent_client::Client;
use argent_tests::call_error;
use argent_tests::model_double::ModelDouble;
use argent_tests::speech_double::SpeechDouble;
use argent_tests::{bin_dir, eventually, Gateway, Nats, Node};

use crate::chat_cluster::{gateway, publish_config, wait_nodes};

/// The OpenAI key as the node-agent's environment holds it (the config names it only).
const OPENAI_KEY_ENV: (&str, &str) = ("TTS_OPENAI_KEY", "sk-speech-double");
const ELEVEN_KEY: &str = "eleven-secret-key";
const VOICE_ID: &str = "VoiceDouble1234";

fn decoded(answer: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(answer["audio"].as_str().expect("audio in the answer"))
        .expect("base64 audio")
}

/// OpenAI first, then (`fallbackOrder`) the local command, then ElevenLabs — not
/// upstream's default order (ElevenLabs second), so the test sees the setting work.
fn speech_config(double: &SpeechDouble, engine: &std::path::Path) -> Value {
    json!({"messages": {"tts": {
        "provider": "openai",
        "fallbackOrder": ["cli", "elevenlabs"],
        "maxTextLength": 60,
        "openai": {"baseUrl": double.openai_base(), "apiKey": format!("${{{}}}", OPENAI_KEY_ENV.0),
                   "model": "tts-1", "voice": "nova"},
        "elevenlabs": {"baseUrl": double.elevenlabs_base(), "apiKey": ELEVEN_KEY, "voiceId": VOICE_ID,
                       "voiceSettings": {"stability": 0.3}},
        "cli": {"command": [engine.to_str().unwrap(), "{{TEXT_FILE}}", "{{OUTPUT_FILE}}"]}
    }}})
}

async fn convert(client: &Client, params: Value) -> Value {
    client
        .call("tts.convert", params.clone())
        .await
        .unwrap_or_else(|e| panic!("tts.convert {params} failed: {e}"))
}

/// Conversions through two gateways: the configured OpenAI-compatible server first, its
/// request exactly OpenAI's; Telegram gets Opus voice notes; ElevenLabs speaks when OpenAI
/// fails; both failing is `UNAVAILABLE` with what each said; preferences changed through
/// one gateway apply through the other at once; keys never appear in an answer.
#[tokio::test(flavor = "multi_thread")]
async fn speech_across_the_cluster_with_fallback_and_shared_preferences() {
    let double = SpeechDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = fake_engine(dir.path());
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let _node = Node::start_with_env(&nats, "node-1", &[], &[OPENAI_KEY_ENV])
        .await
        .unwrap();
    publish_config(&nats, &speech_config(&double, &engine)).await;
    let on_a = a.client().await.unwrap();
    let on_b = b.client().await.unwrap();
    wait_nodes(&on_a, 1).await;

    let status = on_a.call("tts.status", json!({})).await.unwrap();
    assert_eq!(status["provider"], "openai", "{status}");
    assert_eq!(status["fallbackProvider"], "cli", "{status}");
    assert_eq!(status["fallbackProviders"], json!(["cli", "elevenlabs"]));
    assert_eq!(status["hasOpenAIKey"], true);
    assert_eq!(status["hasElevenLabsKey"], true);
    assert_eq!(status["edgeEnabled"], false);
    assert_eq!(
        (&status["enabled"], &status["auto"]),
        (&json!(false), &json!("off"))
    );
    assert_eq!(status["prefsPath"], "argent_config/tts-prefs.json");

    // OpenAI-compatible: path, bearer key from the node's environment, body, format.
    let answer = convert(&on_a, json!({"text": "  Hello there  "})).await;
    assert_eq!(answer["provider"], "openai", "{answer}");
    assert_eq!(answer["outputFormat"], "mp3");
    assert_eq!(answer["voiceCompatible"], false);
    assert!(answer["audioPath"].as_str().unwrap().ends_with(".mp3"));
    assert_eq!(
        decoded(&answer),
        SpeechDouble::audio_for("openai", "mp3", "Hello there")
    );
    let sent = double.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/audio/speech");
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {}", OPENAI_KEY_ENV.1)
    );
    assert_eq!(
        sent.body,
        json!({"model": "tts-1", "input": "Hello there", "voice": "nova", "response_format": "mp3"})
    );

    // A Telegram voice note, through the other gateway; `includeAudio: false` leaves the
    // bytes out.
    let answer = convert(&on_b, json!({"text": "Voice note", "channel": "telegram"})).await;
    assert_eq!(
        (&answer["outputFormat"], &answer["voiceCompatible"]),
        (&json!("opus"), &json!(true))
    );
    assert_eq!(
        decoded(&answer),
        SpeechDouble::audio_for("openai", "opus", "Voice note")
    );
    assert_eq!(
        double.requests().pop().unwrap().body["response_format"],
        "opus"
    );
    let answer = convert(&on_b, json!({"text": "quiet", "includeAudio": false})).await;
    assert!(answer.get("audio").is_none(), "{answer}");

    // OpenAI fails: the local command speaks (it is next in `fallbackOrder`).
    double.set_openai_failing(true);
    let answer = convert(&on_a, json!({"text": "Local fallback"})).await;
    assert_eq!(answer["provider"], "cli", "{answer}");
    assert_eq!(answer["outputFormat"], "wav");
    assert_eq!(decoded(&answer), expected_wav("Local fallback"));

    // The command fails too: ElevenLabs speaks, with its own wire format.
    std::fs::write(dir.path().join("fail"), "").unwrap();
    let answer = convert(&on_a, json!({"text": "Fallback please"})).await;
    assert_eq!(answer["provider"], "elevenlabs", "{answer}");
    assert_eq!(answer["outputFormat"], "mp3_44100_128");
    assert_eq!(
        decoded(&answer),
        SpeechDouble::audio_for("elevenlabs", "mp3_44100_128", "Fallback please")
    );
    let sent = double.requests().pop().unwrap();
    assert_eq!(sent.path, format!("/v1/text-to-speech/{VOICE_ID}"));
    assert_eq!(sent.query["output_format"], "mp3_44100_128");
    assert_eq!(sent.headers["xi-api-key"], ELEVEN_KEY);
    assert_eq!(sent.body["text"], "Fallback please");
    assert_eq!(sent.body["model_id"], "eleven_multilingual_v2");
    assert_eq!(
        sent.body["voice_settings"],
        json!({"stability": 0.3, "similarity_boost": 0.75, "style": 0.0, "use_speaker_boost": true, "speed": 1.0})
    );

    // Everything fails: UNAVAILABLE, saying what each provider answered.
    double.set_elevenlabs_failing(true);
    let error = call_error(
        on_a.call("tts.convert", json!({"text": "nobody speaks"}))
            .await,
    );
    assert_eq!(error.code, "UNAVAILABLE");
    for said in [
        "TTS conversion failed: openai: OpenAI TTS API error (500): the speech double is failing on purpose",
        "; cli: ",
        "failed (exit status: 3): the engine is off",
        "; elevenlabs: ElevenLabs API error (500): the speech double is failing on purpose",
    ] {
        assert!(error.message.contains(said), "{said}: {}", error.message);
    }
    // The doubles echoed the keys they were sent; the error does not pass them on.
    assert!(
        !error.message.contains(OPENAI_KEY_ENV.1) && !error.message.contains(ELEVEN_KEY),
        "{}",
        error.message
    );
    assert!(error.message.contains("[redacted]"), "{}", error.message);
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    double.set_openai_failing(false);
    double.set_elevenlabs_failing(false);

    // Preferences through B, seen through A at once.
    let set = on_b
        .call("tts.setProvider", json!({"provider": "elevenlabs"}))
        .await
        .unwrap();
    assert_eq!(set, json!({"provider": "elevenlabs"}));
    let status = on_a.call("tts.status", json!({})).await.unwrap();
    assert_eq!(status["provider"], "elevenlabs", "{status}");
    let answer = convert(&on_a, json!({"text": "preferred"})).await;
    assert_eq!(answer["provider"], "elevenlabs");
    assert_eq!(
        on_b.call("tts.enable", json!({})).await.unwrap(),
        json!({"enabled": true})
    );
    let status = on_a.call("tts.status", json!({})).await.unwrap();
    assert_eq!(
        (&status["enabled"], &status["auto"]),
        (&json!(true), &json!("always"))
    );
    on_a.call("tts.disable", json!({})).await.unwrap();
    let status = on_b.call("tts.status", json!({})).await.unwrap();
    assert_eq!(status["auto"], "off");

    let providers = on_b.call("tts.providers", json!({})).await.unwrap();
    assert_eq!(providers["active"], "elevenlabs");
    let ids: Vec<&str> = providers["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["openai", "elevenlabs", "edge", "cli"]);
    assert_eq!(providers["providers"][0]["configured"], true);
    assert_eq!(providers["providers"][2]["configured"], false);

    // Bad input: clear errors, nothing changed.
    let error = call_error(
        on_a.call("tts.setProvider", json!({"provider": "edge"}))
            .await,
    );
    assert_eq!(error.code, "INVALID_REQUEST");
    assert!(
        error.message.contains("Edge TTS is not available"),
        "{}",
        error.message
    );
    let error = call_error(
        on_a.call("tts.setProvider", json!({"provider": "Bogus"}))
            .await,
    );
    assert_eq!(
        error.message,
        "Invalid provider. Use openai, elevenlabs, or cli."
    );
    let error = call_error(on_a.call("tts.convert", json!({"text": "   "})).await);
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("INVALID_REQUEST", "tts.convert requires text")
    );
    let long = "x".repeat(61);
    let error = call_error(on_a.call("tts.convert", json!({"text": long})).await);
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("UNAVAILABLE", "Text too long (61 chars, max 60)")
    );
    assert_eq!(
        on_a.call("tts.status", json!({})).await.unwrap()["provider"],
        "elevenlabs"
    );

    // Keys stay where they are: no answer carries one.
    let everything = format!(
        "{} {} {}",
        on_a.call("tts.status", json!({})).await.unwrap(),
        providers,
        convert(&on_a, json!({"text": "secret?", "includeAudio": false})).await
    );
    assert!(!everything.contains(OPENAI_KEY_ENV.1) && !everything.contains(ELEVEN_KEY));
}

/// A script standing in for a local speech engine: writes a WAV header and the text; fails
/// (exit 3, saying so on stderr) while a file `fail` is next to it.
fn fake_engine(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("speak.sh");
    let fail = dir.join("fail");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo 'the engine is off' >&2; exit 3; fi\n\
             printf 'RIFF\\000\\000\\000\\000WAVEfmt ' > \"$2\"\ncat \"$1\" >> \"$2\"\n",
            fail.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn expected_wav(text: &str) -> Vec<u8> {
    let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
    wav.extend_from_slice(text.as_bytes());
    wav
}

/// The offline provider in the one-process default: a configured command (run without a
/// shell, text in a file) answers WAV; the CLI writes the audio to a file; the agent's
/// `tts` tool hands the model a MEDIA line and the person the audio.
#[tokio::test(flavor = "multi_thread")]
async fn the_local_command_speaks_offline_for_clients_the_cli_and_the_agent() {
    let double = ModelDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let script = fake_engine(dir.path());
    let mut config = crate::chat_local::model_config(&double);
    config["messages"] = json!({"tts": {"provider": "cli",
        "cli": {"command": [script.to_str().unwrap(), "{{TEXT_FILE}}", "{{OUTPUT_FILE}}"]}}});
    let gw = crate::chat_local::local_gateway(&config).await;
    let client = gw.client().await.unwrap();

    let answer = convert(&client, json!({"text": "offline; rm -rf / $(reboot)"})).await;
    assert_eq!(answer["provider"], "cli", "{answer}");
    assert_eq!(
        (&answer["outputFormat"], &answer["voiceCompatible"]),
        (&json!("wav"), &json!(false))
    );
    assert_eq!(
        decoded(&answer),
        expected_wav("offline; rm -rf / $(reboot)")
    );

    // The CLI.
    let out = dir.path().join("hello.wav");
    let cli = std::process::Command::new(bin_dir().join("argent"))
        .args(["tts", "hello", "from", "the", "cli", "--out"])
        .arg(&out)
        .args(["--url", &gw.ws, "--token", &gw.token])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        expected_wav("hello from the cli")
    );
    assert!(String::from_utf8_lossy(&cli.stdout).contains("by cli"));

    // The agent's tool: the model gets the MEDIA line, the transcript keeps the audio.
    let params = json!({"message": r#"say it [[call:tts:{"text":"spoken by the agent"}]]"#,
                        "idempotencyKey": "tts-1", "sessionKey": "agent:main:tts"});
    let (_, last) = client.request_twice("agent", params).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), last)
        .await
        .unwrap()
        .unwrap();
    let text = done.payload.unwrap()["result"]["payloads"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with("tool said: MEDIA:/") && text.contains(".wav"),
        "{text}"
    );
    let history = client
        .call("chat.history", json!({"sessionKey": "agent:main:tts"}))
        .await
        .unwrap();
    let result = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "toolResult")
        .expect("the tool's result in the transcript")
        .clone();
    let attached = result["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|part| part["type"] == "audio")
        .unwrap_or_else(|| panic!("no audio part in {result}"));
    assert_eq!(attached["mimeType"], "audio/wav");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(attached["data"].as_str().unwrap())
            .unwrap(),
        expected_wav("spoken by the agent")
    );
    // The model never saw the audio.
    let data = attached["data"].as_str().unwrap();
    assert!(
        double
            .requests()
            .iter()
            .all(|r| !r.body.to_string().contains(data)),
        "the audio reached the model"
    );
}

/// With no key anywhere and no command configured, `espeak-ng` (when installed: the test
/// command installs it) is the voice.
#[tokio::test(flavor = "multi_thread")]
async fn espeak_ng_is_the_voice_when_nothing_else_is_configured() {
    let installed = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join("espeak-ng").is_file());
    if !installed {
        assert!(
            std::env::var_os("ARGENT_EXPECT_ESPEAK").is_none(),
            "scripts/test.sh found espeak-ng, but this test does not"
        );
        eprintln!("SKIPPED: espeak-ng is not installed (scripts/test.sh installs it)");
        return;
    }
    let gw = crate::chat_local::local_gateway(&json!({})).await;
    let client = gw.client().await.unwrap();
    let status = client.call("tts.status", json!({})).await.unwrap();
    if status["hasOpenAIKey"] == true || status["hasElevenLabsKey"] == true {
        eprintln!("SKIPPED: a speech API key is in this environment: {status}");
        return;
    }
    assert_eq!(status["provider"], "cli", "{status}");
    let answer = convert(&client, json!({"text": "Hello from an offline voice."})).await;
    assert_eq!(
        (&answer["provider"], &answer["outputFormat"]),
        (&json!("cli"), &json!("wav"))
    );
    let audio = decoded(&answer);
    assert!(
        audio.starts_with(b"RIFF") && audio.len() > 10_000,
        "{} bytes",
        audio.len()
    );
}

/// `talk.mode`: the event reaches clients of both gateways; bad params are refused with
/// upstream's messages; a webchat client may switch it only while an iOS/Android node is
/// connected somewhere in the cluster.
#[tokio::test(flavor = "multi_thread")]
async fn talk_mode_is_heard_on_every_gateway_and_webchat_needs_a_phone() {
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let on_a = a.client().await.unwrap();
    let mut listener_a = a.client().await.unwrap();
    let mut listener_b = b.client().await.unwrap();

    let answer = on_a
        .call("talk.mode", json!({"enabled": true, "phase": "listening"}))
        .await
        .unwrap();
    assert_eq!(
        (&answer["enabled"], &answer["phase"]),
        (&json!(true), &json!("listening"))
    );
    assert!(answer["ts"].as_u64().unwrap() > 0);
    for listener in [&mut listener_a, &mut listener_b] {
        let event = listener
            .wait_event("talk.mode", Duration::from_secs(5))
            .await
            .expect("talk.mode event");
        assert_eq!(event.payload, answer);
    }
    let answer = on_a
        .call("talk.mode", json!({"enabled": false}))
        .await
        .unwrap();
    assert_eq!(answer["phase"], Value::Null);

    let error = call_error(
        on_a.call("talk.mode", json!({"enabled": "yes", "extra": 1}))
            .await,
    );
    assert_eq!(error.code, "INVALID_REQUEST");
    assert_eq!(
        error.message,
        "invalid talk.mode params: at root: unexpected property 'extra'; at /enabled: must be boolean"
    );

    // A webchat client: refused without a phone, allowed once one is connected (to B).
    let webchat = a
        .client_with(|o| {
            o.client_id = "webchat-ui".into();
            o.client_mode = "webchat".into();
            o.origin = Some("http://127.0.0.1".into());
        })
        .await
        .unwrap();
    let error = call_error(webchat.call("talk.mode", json!({"enabled": true})).await);
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        (
            "UNAVAILABLE",
            "talk disabled: no connected iOS/Android nodes"
        )
    );
    let _phone = b
        .client_with(|o| {
            o.role = Some("node".into());
            o.scopes = Some(vec![]);
            o.client_id = "argent-ios".into();
            o.client_mode = "node".into();
            o.platform = "iOS 18.2".into();
        })
        .await
        .unwrap();
    let allowed = eventually(Duration::from_secs(10), || async {
        webchat
            .call("talk.mode", json!({"enabled": true}))
            .await
            .ok()
    })
    .await;
    assert!(
        allowed.is_some(),
        "a connected iOS node allows webchat talk mode"
    );
}

/// Whether `system-presence` through `gw` lists an entry of `host` (`None`: no answer).
async fn lists_host(gw: &Gateway, host: &str) -> Option<bool> {
    let client = gw.client().await.ok()?;
    let list = client.call("system-presence", json!({})).await.ok()?;
    Some(list.as_array()?.iter().any(|e| e["host"] == host))
}

/// `system-event`: the caller's presence entry is updated and announced to clients of
/// every gateway; its text reaches the default agent's next heartbeat turn; a node's
/// status line only when something changed; no text is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_system_event_updates_presence_everywhere_and_reaches_the_heartbeat() {
    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let b = gateway(&nats, "gw-b").await;
    let _node = crate::chat_cluster::node(&nats, "node-1").await;
    let mut config = crate::chat_local::model_config(&double);
    config["agents"]["list"] = json!([{"id": "main", "default": true}]);
    publish_config(&nats, &config).await;
    let reporter = a
        .client_with(|o| {
            o.client_id = "argent-macos".into();
            o.client_mode = "ui".into();
            o.instance_id = Some("mac-instance-1".into());
        })
        .await
        .unwrap();
    let mut watcher = b.client().await.unwrap();
    wait_nodes(&reporter, 1).await;

    let answer = reporter
        .call(
            "system-event",
            json!({"text": "Kitchen timer finished", "host": "studio-mac", "version": "2.1.0",
                   "lastInputSeconds": 12, "reason": "timer", "tags": ["x"]}),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!({"ok": true}));
    let reporter_in = |event: &argent_client::Event| {
        event.payload["presence"]
            .as_array()?
            .iter()
            .find(|e| e["instanceId"] == "mac-instance-1" && e["host"] == "studio-mac")
            .cloned()
    };
    let (event, entry) = loop {
        let event = watcher
            .wait_event("presence", Duration::from_secs(10))
            .await
            .expect("a presence event on the other gateway");
        if let Some(entry) = reporter_in(&event) {
            break (event, entry);
        }
    };
    assert_eq!(entry["host"], "studio-mac");
    assert_eq!(entry["version"], "2.1.0");
    assert_eq!(entry["text"], "Kitchen timer finished");
    assert_eq!(entry["lastInputSeconds"], json!(12));
    assert!(entry.get("tags").is_none());
    assert!(event.state_version.is_some());
    let listed = watcher.call("system-presence", json!({})).await.unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["host"] == "studio-mac"));

    // A node status line that changes nothing is not news; one that does is, as the change.
    reporter
        .call("system-event", json!({"text": "Node: studio-mac (10.0.0.5) · app 2.1.0 · mode ui · reason periodic",
                                     "host": "studio-mac", "version": "2.1.0", "reason": "periodic"}))
        .await
        .unwrap();
    reporter
        .call(
            "system-event",
            json!({"text": "Node: studio-mac", "host": "studio-mac", "version": "2.2.0"}),
        )
        .await
        .unwrap();

    // The next heartbeat turn reads the queued events: exactly these.
    reporter
        .call("wake", json!({"mode": "now", "text": "heartbeat now"}))
        .await
        .unwrap();
    let prompt = eventually(Duration::from_secs(20), || async {
        double
            .requests()
            .into_iter()
            .map(|r| r.last_user)
            .find(|text| text.contains("heartbeat now"))
    })
    .await
    .expect("a heartbeat turn");
    let queued: Vec<&str> = prompt
        .lines()
        .filter_map(|line| line.strip_prefix("- "))
        .collect();
    assert_eq!(
        queued,
        [
            "Kitchen timer finished",
            "Node: studio-mac (127.0.0.1) · app 2.2.0",
            "heartbeat now"
        ],
        "{prompt}"
    );

    // A CLI (not tracked at connect) that reports itself and leaves takes its entry along.
    let cli = a
        .client_with(|o| o.instance_id = Some("cli-once".into()))
        .await
        .unwrap();
    cli.call(
        "system-event",
        json!({"text": "one-off", "host": "cli-host"}),
    )
    .await
    .unwrap();
    assert_eq!(lists_host(&b, "cli-host").await, Some(true));
    cli.close().await;
    for on in [&a, &b] {
        let gone = eventually(Duration::from_secs(10), || async {
            (lists_host(on, "cli-host").await == Some(false)).then_some(())
        })
        .await;
        assert!(gone.is_some(), "the CLI's entry outlived it");
    }

    let error = call_error(reporter.call("system-event", json!({"text": "  "})).await);
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("INVALID_REQUEST", "text required")
    );
}
