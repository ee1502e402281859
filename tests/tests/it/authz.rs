//! Every method × role × scope set against PROTOCOL.md §3.3/§3.4, over real connections.
//!
//! The expected access class of each method is written out here from the protocol's table,
//! independently of the server's catalog, and the expected outcome of each class for each
//! caller is a literal table: a drift on either side fails this test.

use std::collections::BTreeMap;

use serde_json::json;

use argent_tests::Gateway;

/// PROTOCOL.md §3.4 (and §5), one row per method: R read, W write, A admin, P pairing,
/// X approvals, N node-only.
const METHODS: &[(&str, char)] = &[
    ("chat.send", 'W'),
    ("chat.history", 'R'),
    ("chat.abort", 'W'),
    ("chat.inject", 'A'),
    ("agent", 'W'),
    ("agent.wait", 'W'),
    ("agent.identity.get", 'R'),
    ("config.get", 'A'),
    ("config.set", 'A'),
    ("config.patch", 'A'),
    ("config.apply", 'A'),
    ("config.schema", 'A'),
    ("sessions.list", 'R'),
    ("sessions.preview", 'R'),
    ("sessions.reset", 'A'),
    ("sessions.compact", 'A'),
    ("sessions.delete", 'A'),
    ("sessions.patch", 'A'),
    ("sessions.search", 'A'),
    ("sessions.resolve", 'A'),
    ("commands.compact", 'W'),
    ("commands.list", 'R'),
    ("cron.list", 'R'),
    ("cron.status", 'R'),
    ("cron.runs", 'R'),
    ("cron.add", 'A'),
    ("cron.update", 'A'),
    ("cron.run", 'A'),
    ("cron.remove", 'A'),
    ("models.list", 'R'),
    ("knowledge.search", 'R'),
    ("knowledge.ingest", 'W'),
    ("knowledge.library.list", 'R'),
    ("knowledge.collections.list", 'R'),
    ("knowledge.vault.ingest", 'W'),
    ("knowledge.library.delete", 'W'),
    ("knowledge.library.reindex", 'W'),
    ("knowledge.collections.grant", 'W'),
    ("execution.worker.status", 'R'),
    ("execution.worker.runNow", 'W'),
    ("execution.worker.pause", 'W'),
    ("execution.worker.resume", 'W'),
    ("execution.worker.metrics.reset", 'W'),
    ("tasks.add", 'W'),
    ("tasks.list", 'R'),
    ("channels.status", 'R'),
    ("channels.logout", 'A'),
    ("send", 'W'),
    ("health", 'R'),
    ("status", 'R'),
    ("system-presence", 'R'),
    ("last-heartbeat", 'R'),
    ("set-heartbeats", 'A'),
    ("system-event", 'A'),
    ("wake", 'W'),
    ("talk.mode", 'W'),
    ("tts.status", 'R'),
    ("tts.convert", 'W'),
    ("tts.providers", 'R'),
    ("tts.enable", 'W'),
    ("tts.disable", 'W'),
    ("tts.setProvider", 'W'),
    ("agents.list", 'R'),
    ("agents.files.list", 'A'),
    ("agents.files.get", 'A'),
    ("agents.files.set", 'A'),
    ("agents.profile.get", 'R'),
    ("agents.profile.update", 'W'),
    ("node.pair.request", 'P'),
    ("node.pair.list", 'P'),
    ("node.pair.approve", 'P'),
    ("node.pair.reject", 'P'),
    ("node.pair.verify", 'P'),
    ("node.rename", 'P'),
    ("device.pair.list", 'P'),
    ("device.pair.approve", 'P'),
    ("device.pair.reject", 'P'),
    ("device.token.rotate", 'P'),
    ("device.token.revoke", 'P'),
    ("node.list", 'R'),
    ("node.describe", 'R'),
    ("node.invoke", 'W'),
    ("node.invoke.result", 'N'),
    ("node.event", 'N'),
    ("skills.bins", 'N'),
    ("exec.approval.request", 'X'),
    ("exec.approval.resolve", 'X'),
    ("exec.approvals.get", 'A'),
    ("exec.approvals.set", 'A'),
    ("exec.approvals.node.get", 'A'),
    ("exec.approvals.node.set", 'A'),
    ("usage.status", 'R'),
    ("usage.cost", 'R'),
    ("logs.tail", 'R'),
    ("family.members", 'R'),
    ("family.telemetry", 'R'),
    ("family.register", 'W'),
    ("skills.status", 'R'),
    ("skills.personal", 'R'),
    ("skills.personal.update", 'R'),
    ("skills.personal.resolveConflict", 'R'),
    ("skills.personal.delete", 'R'),
    ("skills.install", 'A'),
    ("skills.update", 'A'),
    ("tools.status", 'R'),
    ("voicewake.get", 'R'),
    ("voicewake.set", 'W'),
    ("connectors.catalog", 'R'),
    ("credentials.list", 'R'),
    ("workflows.list", 'R'),
    ("jobs.overview", 'R'),
    ("providers.status", 'R'),
    ("terminal.create", 'W'),
    ("terminal.write", 'W'),
    ("terminal.resize", 'W'),
    ("terminal.kill", 'W'),
    ("terminal.read", 'A'),
    ("browser.request", 'W'),
    ("contemplation.runOnce", 'W'),
    ("poll", 'A'),
    // Not in the catalog: only admins get past authorization (to `unknown method`).
    ("definitely.not.a.method", 'U'),
    // Protocol-4 methods (PROTOCOL-v4.md §9) are unknown to these v3 connections.
    ("chat.startup", 'U'),
    ("chat.message.get", 'U'),
    ("diagnostics.stability", 'U'),
    ("exec.approval.list", 'U'),
    ("sessions.subscribe", 'U'),
    ("sessions.unsubscribe", 'U'),
    ("sessions.messages.subscribe", 'U'),
    ("sessions.messages.unsubscribe", 'U'),
    ("sessions.describe", 'U'),
    ("question.list", 'U'),
    ("update.status", 'U'),
    ("openclaw.approval.list", 'U'),
    ("plugin.approval.list", 'U'),
    ("sessions.observer.visibility", 'U'),
    ("sessions.companion.state", 'U'),
    ("sessions.branches.list", 'U'),
    ("progressCard.get", 'U'),
    ("talk.catalog", 'U'),
    ("chat.metadata", 'U'),
    ("plugins.list", 'U'),
    ("plugins.catalog.browse", 'U'),
    ("skills.search", 'U'),
    ("skills.library.list", 'U'),
    ("channels.pairing.list", 'U'),
    ("system.info", 'U'),
    ("environments.list", 'U'),
    ("models.authStatus", 'U'),
    ("config.schema.lookup", 'U'),
    ("sessions.usage", 'U'),
    ("diagnostics.lanes", 'U'),
    ("webSearch.status", 'U'),
    ("themes.list", 'U'),
    ("tools.github.status", 'U'),
    ("doctor.memory.status", 'U'),
    ("approval.history", 'U'),
    ("worktrees.list", 'U'),
    ("artifacts.list", 'U'),
    ("exec.approval.grants.list", 'U'),
    ("transcripts.list", 'U'),
    ("migrations.memory.plan", 'U'),
];

/// The callers, and for each the expected authorization failure per class ("" = allowed).
/// Classes in order: R W A P X N U.
const CALLERS: &[(&str, &str, &[&str], [&str; 7])] = &[
    (
        "admin",
        "operator",
        &["operator.admin"],
        ["", "", "", "", "", "unauthorized role: operator", ""],
    ),
    (
        "default scopes",
        "operator",
        &[],
        ["", "", "", "", "", "unauthorized role: operator", ""],
    ),
    (
        "read",
        "operator",
        &["operator.read"],
        [
            "",
            "missing scope: operator.write",
            "missing scope: operator.admin",
            "missing scope: operator.pairing",
            "missing scope: operator.approvals",
            "unauthorized role: operator",
            "missing scope: operator.admin",
        ],
    ),
    (
        "write",
        "operator",
        &["operator.write"],
        [
            "",
            "",
            "missing scope: operator.admin",
            "missing scope: operator.pairing",
            "missing scope: operator.approvals",
            "unauthorized role: operator",
            "missing scope: operator.admin",
        ],
    ),
    (
        "approvals",
        "operator",
        &["operator.approvals"],
        [
            "missing scope: operator.read",
            "missing scope: operator.write",
            "missing scope: operator.admin",
            "missing scope: operator.pairing",
            "",
            "unauthorized role: operator",
            "missing scope: operator.admin",
        ],
    ),
    (
        "pairing",
        "operator",
        &["operator.pairing"],
        [
            "missing scope: operator.read",
            "missing scope: operator.write",
            "missing scope: operator.admin",
            "",
            "missing scope: operator.approvals",
            "unauthorized role: operator",
            "missing scope: operator.admin",
        ],
    ),
    (
        "node",
        "node",
        &[],
        [
            "unauthorized role: node",
            "unauthorized role: node",
            "unauthorized role: node",
            "unauthorized role: node",
            "unauthorized role: node",
            "",
            "unauthorized role: node",
        ],
    ),
];

fn class_index(class: char) -> usize {
    "RWAPXNU".find(class).expect("known class")
}

fn is_authorization_failure(message: &str) -> bool {
    message.starts_with("missing scope: ") || message.starts_with("unauthorized role: ")
}

/// Calls `method` with `{}`; `want` is the expected authorization failure, or "" for
/// allowed (any other outcome, such as invalid params, counts as allowed). `Some` describes
/// a mismatch.
async fn check(client: &argent_client::Client, method: &str, want: &str) -> Option<String> {
    let response = client.request(method, json!({})).await.unwrap();
    let error = response.error.as_ref();
    let got = error.map(|e| e.message.as_str()).unwrap_or("");
    let ok = if want.is_empty() {
        !is_authorization_failure(got)
    } else {
        let Some(error) = error else {
            return Some(format!("want {want:?}, got a success"));
        };
        got == want
            && error.code == "INVALID_REQUEST"
            && error
                .details
                .as_ref()
                .is_some_and(|d| d["jsonrpcCode"] == -32002)
    };
    (!ok).then(|| format!("want {want:?}, got {got:?}"))
}

#[tokio::test]
async fn every_method_for_every_role_and_scope_set() {
    let gw = Gateway::local().start().await.unwrap();
    let mut failures = BTreeMap::new();
    for (label, role, scopes, expected) in CALLERS {
        let client = gw
            .client_with(|o| {
                o.role = Some(role.to_string());
                o.scopes = Some(scopes.iter().map(|s| s.to_string()).collect());
            })
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        for (method, class) in METHODS {
            let want = expected[class_index(*class)];
            if let Some(failure) = check(&client, method, want).await {
                failures.insert(format!("{label} {method}"), failure);
            }
        }
        // The socket stays open after refusals.
        assert!(
            client.request("skills.bins", json!({})).await.is_ok(),
            "{label}"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn the_table_covers_the_whole_catalog() {
    let listed: Vec<&str> = METHODS.iter().map(|(m, _)| *m).collect();
    for name in argent_proto::catalog::method_names() {
        assert!(
            listed.contains(&name),
            "{name} is in the catalog but not in this table"
        );
    }
}

/// The seed's `device` role [EXT]: the read methods plus this list, nothing else.
const DEVICE_GRANT: [&str; 7] = [
    "chat.send",
    "chat.history",
    "chat.abort",
    "agent",
    "agent.wait",
    "tts.convert",
    "talk.mode",
];

#[tokio::test]
async fn every_method_for_the_device_role() {
    let gw = Gateway::local().start().await.unwrap();
    let client = gw
        .client_with(|o| {
            o.role = Some("device".into());
            o.scopes = Some(vec![]);
            o.device = Some(argent_client::device::DeviceKey::from_seed([5; 32]));
        })
        .await
        .expect("a proven device pairs (locally, silently) for the device role");
    assert_eq!(client.hello()["auth"]["role"], "device");
    let mut failures = BTreeMap::new();
    for (method, class) in METHODS {
        let allowed = *class == 'R' || DEVICE_GRANT.contains(method);
        let want = if allowed {
            ""
        } else {
            "unauthorized role: device"
        };
        if let Some(failure) = check(&client, method, want).await {
            failures.insert(method.to_string(), failure);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn the_device_role_needs_a_device() {
    let gw = Gateway::local().start().await.unwrap();
    let refused = gw
        .client_with(|o| {
            o.role = Some("device".into());
            o.scopes = Some(vec![]);
        })
        .await;
    let Err(err) = refused else {
        panic!("the shared token alone must not give the device role")
    };
    assert!(
        err.to_string().contains("device identity required"),
        "{err}"
    );
}
