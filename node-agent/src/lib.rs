//! The Argent node-agent: the worker that executes forwarded protocol methods.
//!
//! Layers, top to bottom; a module imports only from the layers below it (checked by the
//! `layering` test at the end of this file):
//!
//! 0. [`agent`] — starting a node: gRPC listener, registry heartbeat, clean shutdown.
//! 1. [`join`] (joining by pairing), [`service`] (the tonic gRPC service: credential check,
//!    deadline, trace context).
//! 2. [`worker`] — [`worker::Worker`], the [`argent_planes::calls::MethodHandler`] that
//!    dispatches a catalog method to its family.
//! 3. [`methods`] — RPC adapters, one module per method family: they parse params, call a
//!    service and render the answer, nothing more.
//! 4. [`respond`] — the one place where a service error becomes a wire error.
//! 5. [`tools`] — the agent's tools, one file each, handed to the runtime as its
//!    [`runtime::tools::ToolHost`].
//! 6. [`scheduler`] — cron (and its job store), heartbeats and execution-worker cycles,
//!    claimed exactly once across the cluster.
//! 7. [`runtime`] — the agent runtime: runs and their control, leases, model providers,
//!    sessions, transcripts.
//! 8. [`workspace`] (an agent's documents), [`shared_config`] (the config snapshot of each
//!    stored revision) — on the planes only.
//! 9. [`error`] — [`error::ServiceError`], what the services fail with.
//!
//! The gateway embeds a [`worker::Worker`] directly in its one-process default mode.

#![forbid(unsafe_code)]

pub mod agent;
pub mod error;
pub mod join;
pub mod methods;
pub mod respond;
pub mod runtime;
pub mod scheduler;
pub mod service;
pub mod shared_config;
pub mod tools;
pub mod worker;
pub mod workspace;

/// Version reported in the registry and in `Ping`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod layering {
    //! Arrows point one way: a module may import (`crate::x`) only the modules of the
    //! layers below its own (see the crate docs).

    use std::path::Path;

    /// Each top-level module with its layer; a lower number is a higher layer.
    const LAYERS: &[(&str, u8)] = &[
        ("agent", 0),
        ("join", 1),
        ("service", 1),
        ("worker", 2),
        ("methods", 3),
        ("respond", 4),
        ("tools", 5),
        ("scheduler", 6),
        ("runtime", 7),
        ("workspace", 8),
        ("shared_config", 8),
        ("error", 9),
    ];

    fn layer(module: &str) -> Option<u8> {
        LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
    }

    /// The top-level modules a source file names as `crate::<module>`.
    fn imports(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in source.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        }
        found
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn modules_import_only_layers_below() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut violations = Vec::new();
        for path in all {
            let relative = path.strip_prefix(&src).expect("under src");
            let top = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|c| c.trim_end_matches(".rs").to_string())
                .unwrap_or_default();
            let Some(own) = layer(&top) else {
                continue; // lib.rs, main.rs: the roots
            };
            let source = std::fs::read_to_string(&path).expect("readable source");
            for import in imports(&source) {
                match layer(&import) {
                    Some(target) if import != top && target <= own => violations.push(format!(
                        "{} (layer {own}) imports crate::{import} (layer {target})",
                        relative.display()
                    )),
                    // Lower-case names are modules; `crate::VERSION` and the like are roots.
                    None if import.starts_with(|c: char| c.is_ascii_lowercase()) => violations
                        .push(format!(
                            "{} imports crate::{import}, a module missing from LAYERS",
                            relative.display()
                        )),
                    _ => {}
                }
            }
        }
        assert!(violations.is_empty(), "{}", violations.join("\n"));
    }

    #[test]
    fn the_check_sees_an_upward_import() {
        assert_eq!(
            imports("use crate::methods::chat; // crate::worker"),
            vec!["methods".to_string()]
        );
    }
}
