//! Which commands a `node` connection may be asked to run (PROTOCOL.md §3.5): the commands
//! it declares, filtered by the allowlist of its platform, plus `gateway.nodes.allowCommands`,
//! minus `gateway.nodes.denyCommands`.

use serde_json::Value;

use crate::config::string_list;

const CANVAS: [&str; 8] = [
    "canvas.present",
    "canvas.hide",
    "canvas.navigate",
    "canvas.eval",
    "canvas.snapshot",
    "canvas.a2ui.push",
    "canvas.a2ui.pushJSONL",
    "canvas.a2ui.reset",
];
const CAMERA: [&str; 3] = ["camera.list", "camera.snap", "camera.clip"];
const MOBILE: [&str; 2] = ["screen.record", "location.get"];
const SYSTEM: [&str; 6] = [
    "system.run",
    "system.which",
    "system.notify",
    "system.execApprovals.get",
    "system.execApprovals.set",
    "browser.proxy",
];

/// The default allowlist of a platform (`client.platform`, else `client.deviceFamily`).
pub fn platform_allowlist(platform: &str) -> Vec<&'static str> {
    let ios = || CANVAS.iter().chain(&CAMERA).chain(&MOBILE).copied();
    let p = platform.to_ascii_lowercase();
    if p.contains("ios") || p.contains("iphone") || p.contains("ipad") {
        ios().collect()
    } else if p.contains("android") {
        ios().chain(["sms.send"]).collect()
    } else if p.contains("mac") || p == "darwin" {
        ios().chain(SYSTEM).collect()
    } else if p.contains("linux") || p.contains("win") {
        SYSTEM.to_vec()
    } else {
        ios().chain(["sms.send"]).chain(SYSTEM).collect()
    }
}

/// The declared commands this node may run.
pub fn allowed(declared: &[String], platform: &str, config: &Value) -> Vec<String> {
    let defaults = platform_allowlist(platform);
    let extra = string_list(config, "/gateway/nodes/allowCommands");
    let deny = string_list(config, "/gateway/nodes/denyCommands");
    declared
        .iter()
        .filter(|c| defaults.contains(&c.as_str()) || extra.contains(c))
        .filter(|c| !deny.contains(c))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn platforms_and_config() {
        let d = declared(&["system.run", "camera.snap", "sms.send", "custom.thing"]);
        assert_eq!(allowed(&d, "linux", &json!({})), declared(&["system.run"]));
        assert_eq!(allowed(&d, "ios", &json!({})), declared(&["camera.snap"]));
        assert_eq!(
            allowed(&d, "android", &json!({})),
            declared(&["camera.snap", "sms.send"])
        );
        let config = json!({"gateway":{"nodes":{"allowCommands":["custom.thing"],"denyCommands":["system.run"]}}});
        assert_eq!(allowed(&d, "linux", &config), declared(&["custom.thing"]));
    }
}
