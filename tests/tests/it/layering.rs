//! Arrows point one way (ADR 11): these tests read the sources of the node-agent and the
//! gateway and fail when a module imports (`crate::x`) one it must not.

use std::path::{Path, PathBuf};

/// Node-agent modules by layer, top (0) to bottom: a module may import only modules of a
/// lower layer (a higher number).
const NODE_LAYERS: &[(&str, u8)] = &[
    ("agent", 0),
    ("join", 1),
    ("service", 1),
    ("worker", 2),
    ("methods", 3),
    ("respond", 4),
    ("tools", 5),
    ("channels", 6),
    ("scheduler", 7),
    ("knowledge", 7),
    ("tts", 7),
    ("runtime", 8),
    ("workspace", 9),
    ("shared_config", 9),
    ("error", 10),
    ("clock", 10),
];

/// Gateway services: what `Ctx` (the composition root) is built from. They import none of
/// the modules above them.
const GATEWAY_SERVICES: &[&str] = &[
    "health",
    "node_invoke",
    "shared_config",
    "stability",
    "presence",
    "hub",
    "subscriptions",
    "chat_stream",
    "select",
    "metrics",
    "respond",
    "config",
    "node_commands",
    "auth",
    "ws::outbox",
];

/// What sits above the gateway's services.
const GATEWAY_ABOVE: &[&str] = &[
    "context",
    "methods",
    "router",
    "server",
    "cli",
    "http",
    "ws::connection",
    "ws::handshake",
    "ws::pairing",
];

/// The path at the start of `text` (`ws::outbox::Outbox`), without a trailing `::`.
fn leading_path(text: &str) -> String {
    let path: String = text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    path.trim_end_matches(':').to_string()
}

/// Every `crate::…` path a source file names outside comments, e.g. `ws::outbox::Outbox`;
/// a group `crate::{a::X, b}` names each of its members.
fn crate_paths(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let mut rest = line.split("//").next().unwrap_or("");
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            match rest.strip_prefix('{') {
                Some(group) => {
                    let group = group.split('}').next().unwrap_or_default();
                    found.extend(group.split(',').map(|m| leading_path(m.trim())));
                }
                None => found.push(leading_path(rest)),
            }
        }
    }
    found.retain(|path| !path.is_empty());
    found
}

fn sources(crate_dir: &str) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).expect("under src");
            let module = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("::");
            (
                module,
                std::fs::read_to_string(&path).expect("readable source"),
            )
        })
        .collect()
}

/// `a::b::C` is in `a` and in `a::b`.
fn within(path: &str, module: &str) -> bool {
    path == module || path.starts_with(&format!("{module}::"))
}

fn node_layer(path: &str) -> Option<u8> {
    let top = path.split("::").next()?;
    NODE_LAYERS.iter().find(|(m, _)| *m == top).map(|(_, l)| *l)
}

#[test]
fn node_agent_modules_import_only_layers_below() {
    let mut violations = Vec::new();
    for (module, source) in sources("node-agent") {
        let Some(own) = node_layer(&module) else {
            continue; // lib.rs, main.rs: the roots
        };
        let top = module.split("::").next().unwrap_or_default();
        for path in crate_paths(&source) {
            let target_top = path.split("::").next().unwrap_or_default();
            if target_top == top || !target_top.starts_with(|c: char| c.is_ascii_lowercase()) {
                continue; // its own module, or a crate-root item such as `crate::VERSION`
            }
            match node_layer(&path) {
                Some(target) if target <= own => violations.push(format!(
                    "{module} (layer {own}) imports crate::{path} (layer {target})"
                )),
                None => violations.push(format!(
                    "{module} imports crate::{path}, a module missing from NODE_LAYERS"
                )),
                _ => {}
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn gateway_services_import_nothing_above_them() {
    let mut violations = Vec::new();
    for (module, source) in sources("gateway") {
        if !GATEWAY_SERVICES.iter().any(|s| within(&module, s)) {
            continue;
        }
        for path in crate_paths(&source) {
            if let Some(above) = GATEWAY_ABOVE.iter().find(|a| within(&path, a)) {
                violations.push(format!(
                    "{module} imports crate::{path} ({above} is above it)"
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_checks_see_an_upward_import() {
    assert_eq!(
        crate_paths("use crate::methods::chat; // crate::worker\nlet x = crate::VERSION;"),
        ["methods::chat", "VERSION"]
    );
    assert_eq!(
        crate_paths("use crate::{router, ws::outbox::Outbox};"),
        ["router", "ws::outbox::Outbox"]
    );
    assert!(within("ws::connection::run", "ws::connection"));
    assert!(!within("ws::outbox", "ws::connection"));
    assert_eq!(node_layer("runtime::control"), Some(8));
}
