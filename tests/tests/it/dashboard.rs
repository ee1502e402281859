//! The real dashboard, end to end: the published OpenClaw Control UI (the `openclaw` npm
//! package, 2026.9.6) served by gateway A of a two-gateway cluster with a node-agent on the
//! model double, driven by Debian's Chromium through Playwright (`tests/e2e/dashboard.mjs`):
//! a chat message typed in the page streams its reply into the page, every page of the
//! sidebar loads without an error banner or a failed call, and the channels page shows the
//! configured Telegram account running.
//!
//! `scripts/test.sh` installs Chromium, playwright-core and the UI when missing
//! (`scripts/install-e2e.sh`) and sets `ARGENT_E2E_DIR`; a plain `cargo test` without it
//! says the test was skipped.

use std::path::PathBuf;

use serde_json::{json, Value};

use argent_tests::channel_doubles::TelegramDouble;
use argent_tests::model_double::{Api, ModelDouble};
use argent_tests::Nats;

use crate::chat_cluster::{gateway, node, publish_config, wait_nodes};
use crate::chat_local::model_config;

/// Calls the UI makes that fail here on purpose: method, the exact error, and why.
const ALLOWED_FAILURES: &[(&str, &str, &str)] = &[
    (
        "sessions.observer.visibility",
        "session observers are unavailable",
        "no session observers: upstream's own answer then is UNAVAILABLE, which the UI ignores",
    ),
    (
        "config.schema.lookup",
        "config schema path not found",
        "the memory page asks for a memory plugin's config (`plugins.entries.<id>.config`); \
         there are no plugins, and upstream answers a path its schema lacks with the same \
         error, which the UI reads as \"unknown\"",
    ),
];

/// Notices the UI shows for a feature this system lacks: page, text, and why.
const ALLOWED_BANNERS: &[(&str, &str, &str)] = &[(
    "/custodian",
    "Update the Gateway to continue setup with OpenClaw.",
    "\"Ask OpenClaw\" is upstream's own setup assistant (`openclaw.chat`), not part of \
     this system; the UI itself says the gateway does not offer it",
)];

#[tokio::test]
async fn the_real_control_ui_chats_and_every_page_loads() {
    let Some(dir) = std::env::var_os("ARGENT_E2E_DIR").map(PathBuf::from) else {
        eprintln!("skipped: ARGENT_E2E_DIR is not set (scripts/test.sh installs the UI)");
        return;
    };
    let (modules, ui) = (dir.join("node_modules"), dir.join("control-ui"));
    assert!(ui.join("index.html").is_file(), "no UI at {}", ui.display());

    let double = ModelDouble::start().await;
    let nats = Nats::start().await.unwrap();
    let a = gateway(&nats, "gw-a").await;
    let _b = gateway(&nats, "gw-b").await;
    let _node = node(&nats, "node-1").await;
    let telegram = TelegramDouble::start("4242:dashboard", 4242).await;
    let mut config = model_config(&double);
    config["gateway"] = json!({"controlUi": {"root": ui}});
    config["channels"] = json!({"telegram": {"botToken": "4242:dashboard",
                                              "apiBaseUrl": telegram.base_url()}});
    publish_config(&nats, &config).await;
    wait_nodes(&a.client().await.unwrap(), 1).await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/dashboard.mjs");
    let http = a.ws.replace("ws://", "http://");
    let message = "hello from the browser";
    // Async: the model double serves from this test's runtime while the browser runs.
    let out = tokio::process::Command::new("node")
        .arg(script)
        .args([
            http.trim_end_matches('/'),
            &a.token,
            message,
            &format!("echo: {message}"),
            "claude",
        ])
        .env("E2E_MODULES", &modules)
        .env("E2E_SCREENSHOT", dir.join("last-dashboard.png"))
        .output()
        .await
        .expect("run node (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no result from the browser: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // Kept for whoever reads a failure: every call, banner and page of the walk.
    let _ = std::fs::write(dir.join("last-result.json"), format!("{result:#}"));
    assert_eq!(result.get("error"), None, "{result:#}");
    assert_eq!(
        result["sendEnabled"], true,
        "Send stayed disabled: {result:#}"
    );
    assert_eq!(
        result["replySeen"], true,
        "no streamed reply in the page: {result:#}"
    );
    assert_eq!(
        result["messageShown"], 1,
        "the typed message is not shown once: {result:#}"
    );
    // The model picker chose the other provider's model; the next turn ran on it.
    assert_eq!(
        result["patches"],
        json!([{"ok": true, "model": "claude-double"}]),
        "{result:#}"
    );
    assert_eq!(result["secondReplySeen"], true, "{result:#}");
    let again = format!("{message} again");
    let asked: Vec<Api> = double
        .requests()
        .into_iter()
        .filter(|r| r.last_user == again)
        .map(|r| r.api)
        .collect();
    assert_eq!(asked, [Api::Anthropic], "the picked model did not answer");
    let pages: Vec<&str> = result["pages"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for page in [
        "/agents",
        "/settings/devices",
        "/settings/approvals",
        "/debug",
        "/logs",
        "/usage",
    ] {
        assert!(pages.contains(&page), "{page} was not walked: {result:#}");
    }
    let unexpected = not_allowed(&result["failures"], ("method", "message"), ALLOWED_FAILURES);
    assert!(
        unexpected.is_empty(),
        "failed calls: {unexpected:#?}\n{result:#}"
    );
    let banners = not_allowed(&result["banners"], ("page", "text"), ALLOWED_BANNERS);
    assert!(
        banners.is_empty(),
        "error banners: {banners:#?}\n{result:#}"
    );
    assert_eq!(result["pageErrors"], json!([]), "{result:#}");
    // The channels page shows the Telegram account as the receivers report it.
    let channels = result["channelsText"].as_str().unwrap_or_default();
    let connected = channels.split("ADD A CHANNEL").next().unwrap_or_default();
    assert!(
        connected.contains("CONNECTED CHANNELS 1")
            && connected.contains("Telegram")
            && connected.contains("Running"),
        "{channels}"
    );
}

/// The entries of `seen` that no `(first, second, reason)` of `allowed` matches on the two
/// `fields`.
fn not_allowed<'a>(
    seen: &'a Value,
    fields: (&str, &str),
    allowed: &[(&str, &str, &str)],
) -> Vec<&'a Value> {
    seen.as_array()
        .expect("a list")
        .iter()
        .filter(|entry| {
            !allowed
                .iter()
                .any(|(a, b, _)| entry[fields.0] == *a && entry[fields.1] == *b)
        })
        .collect()
}
