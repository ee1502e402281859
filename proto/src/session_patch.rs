//! `sessions.patch` params of protocol 4 (OpenClaw 2026.9.6): every field the closed params
//! object allows, split by who may send it (upstream's rule: a chat user with
//! `operator.write` changes name, looks, model, thinking; the rest configures the session
//! and needs `operator.admin`).

/// Which session a patch is for, and the state it expects the session in.
pub const ENVELOPE: [&str; 6] = [
    "key",
    "agentId",
    "expectedSessionId",
    "expectedLifecycleRevision",
    "expectedPermissionMode",
    "expectedMarkedUnreadAt",
];

/// What `operator.write` may change (`permissionMode` other than `full`).
pub const WRITE_FIELDS: [&str; 15] = [
    "label",
    "autoLabel",
    "icon",
    "color",
    "category",
    "boardFace",
    "boardPresentation",
    "pinned",
    "archived",
    "unread",
    "model",
    "agentRuntime",
    "thinkingLevel",
    "fastMode",
    "permissionMode",
];

/// What only `operator.admin` may change or expect.
pub const ADMIN_FIELDS: [&str; 25] = [
    "expectedSandboxMode",
    "expectedNativeRuntimeConsent",
    "expectedToolOverrides",
    "statusNote",
    "attention",
    "ttlMinutes",
    "contextWindow",
    "toolOverrides",
    "verboseLevel",
    "traceLevel",
    "reasoningLevel",
    "responseUsage",
    "elevatedLevel",
    "execHost",
    "execSecurity",
    "execAsk",
    "execNode",
    "sandboxMode",
    "nativeRuntimeConsent",
    "completionOwnerSessionKey",
    "inheritedToolPolicyVersion",
    "inheritedToolAllow",
    "inheritedToolDeny",
    "sendPolicy",
    "groupActivation",
];

/// Every property of the params, envelope first.
pub fn params() -> Vec<&'static str> {
    [&ENVELOPE[..], &WRITE_FIELDS[..], &ADMIN_FIELDS[..]].concat()
}

/// Whether sending `field` takes `operator.admin`.
pub fn needs_admin(field: &str) -> bool {
    !ENVELOPE.contains(&field) && !WRITE_FIELDS.contains(&field)
}
