//! `argent ui install`: puts the OpenClaw Control UI where the gateway serves it from.
//!
//! The UI is the `dist/control-ui` folder of the `openclaw` npm package. The command asks the
//! npm registry for the version's tarball, checks it against the registry's `sha512`
//! integrity before reading a byte of it, unpacks that folder only (regular files, plain
//! relative paths: nothing can land outside the target), and swaps the finished folder in,
//! so a gateway serving the old UI never sees a half-written one. No Node.js is needed.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::Value;
use sha2::{Digest, Sha512};

/// The UI build the dashboard test runs against.
pub const DEFAULT_VERSION: &str = "2026.9.6";
/// Inside the package tarball.
const UI_PREFIX: &str = "package/dist/control-ui/";
/// The package is ~60 MB packed; a registry answering far more is not one to trust.
const MAX_TARBALL_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct UiArgs {
    #[command(subcommand)]
    pub command: UiCommand,
}

#[derive(Subcommand, Debug)]
pub enum UiCommand {
    /// Download the OpenClaw Control UI into the folder the gateway serves
    /// (`<state dir>/control-ui` unless `--dir`).
    Install(InstallArgs),
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Version of the `openclaw` npm package whose UI to install.
    #[arg(long, default_value = DEFAULT_VERSION)]
    pub version: String,
    /// npm registry to download from.
    #[arg(
        long,
        env = "NPM_CONFIG_REGISTRY",
        default_value = "https://registry.npmjs.org"
    )]
    pub registry: String,
    /// Folder to install into (default: `<state dir>/control-ui`, the gateway's default
    /// `gateway.controlUi.root`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// State dir whose `control-ui` folder to fill.
    #[arg(long, env = "ARGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

pub async fn run(args: UiArgs) -> std::process::ExitCode {
    let outcome = match args.command {
        UiCommand::Install(args) => install(args).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("argent: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn install(args: InstallArgs) -> anyhow::Result<()> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => args
            .state_dir
            .unwrap_or_else(crate::config::default_state_dir)
            .join("control-ui"),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .context("cannot start an HTTP client")?;
    let registry = args.registry.trim_end_matches('/');
    let meta_url = format!("{registry}/openclaw/{}", args.version);
    let meta: Value = client
        .get(&meta_url)
        .header("accept", "application/json")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot get {meta_url}"))?
        .json()
        .await
        .with_context(|| format!("{meta_url} did not answer package metadata"))?;
    let (tarball, integrity) = match (
        meta.pointer("/dist/tarball").and_then(Value::as_str),
        meta.pointer("/dist/integrity").and_then(Value::as_str),
    ) {
        (Some(t), Some(i)) => (t.to_string(), i.to_string()),
        _ => bail!("{meta_url} names no tarball with an integrity (dist.tarball, dist.integrity)"),
    };
    let expected = integrity
        .strip_prefix("sha512-")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .with_context(|| format!("unsupported integrity {integrity:?} (expected sha512-…)"))?;
    eprintln!("argent: downloading {tarball}");
    let response = client
        .get(&tarball)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot download {tarball}"))?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_TARBALL_BYTES)
    {
        bail!("{tarball} is larger than {MAX_TARBALL_BYTES} bytes");
    }
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("download of {tarball} broke off"))?;
    if bytes.len() as u64 > MAX_TARBALL_BYTES {
        bail!("{tarball} is larger than {MAX_TARBALL_BYTES} bytes");
    }
    if Sha512::digest(&bytes).as_slice() != expected.as_slice() {
        bail!("{tarball} does not match its integrity {integrity}: not installed");
    }
    let files = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || unpack_into(&bytes, &dir)
    })
    .await
    .context("the unpacking task failed")??;
    println!(
        "argent: Control UI {} installed in {} ({files} files); open http://127.0.0.1:18789/#token=<token>",
        args.version,
        dir.display()
    );
    Ok(())
}

/// A tarball path under [`UI_PREFIX`] as a plain relative path, or `None` to skip it.
fn ui_relative(path: &Path) -> Option<PathBuf> {
    let rest = path.to_str()?.strip_prefix(UI_PREFIX)?;
    let relative = Path::new(rest);
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    (plain && !rest.is_empty()).then(|| relative.to_path_buf())
}

/// Unpacks the UI folder of a package tarball into a fresh folder beside `dir`, then puts
/// it in `dir`'s place; returns the number of files.
fn unpack_into(tgz: &[u8], dir: &Path) -> anyhow::Result<usize> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".control-ui-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut files = 0;
    for entry in archive.entries().context("not a tar.gz package")? {
        let mut entry = entry.context("a broken entry in the package")?;
        // Regular files only: links could point anywhere.
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .context("an entry without a path")?
            .into_owned();
        let Some(relative) = ui_relative(&path) else {
            continue;
        };
        let target = staging.path().join(&relative);
        if let Some(folder) = target.parent() {
            std::fs::create_dir_all(folder)?;
        }
        let mut content = Vec::new();
        entry
            .read_to_end(&mut content)
            .with_context(|| format!("cannot read {}", path.display()))?;
        std::fs::write(&target, content)
            .with_context(|| format!("cannot write {}", target.display()))?;
        files += 1;
    }
    if !staging.path().join("index.html").is_file() {
        bail!(
            "the package has no {UI_PREFIX}index.html: not a Control UI build; nothing installed"
        );
    }
    // Swap: the old folder moves aside, the new one takes its name, the old one goes.
    let staged = staging.keep();
    let previous = parent.join(format!(".control-ui-previous-{}", std::process::id()));
    let had_one = dir.exists();
    if had_one {
        std::fs::rename(dir, &previous)
            .with_context(|| format!("cannot move the old {} aside", dir.display()))?;
    }
    if let Err(err) = std::fs::rename(&staged, dir) {
        if had_one {
            let _ = std::fs::rename(&previous, dir);
        }
        let _ = std::fs::remove_dir_all(&staged);
        return Err(err).with_context(|| format!("cannot put the new UI in {}", dir.display()));
    }
    if had_one {
        let _ = std::fs::remove_dir_all(&previous);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_under_the_ui_folder_are_unpacked() {
        let rel = |p: &str| ui_relative(Path::new(p));
        assert_eq!(
            rel("package/dist/control-ui/assets/a.js"),
            Some(PathBuf::from("assets/a.js"))
        );
        assert_eq!(
            rel("package/dist/control-ui/index.html"),
            Some("index.html".into())
        );
        assert_eq!(rel("package/dist/control-ui/../../../etc/passwd"), None);
        assert_eq!(rel("package/dist/control-ui//abs"), None);
        assert_eq!(rel("package/dist/other.js"), None);
        assert_eq!(rel("package/dist/control-ui/"), None);
    }
}
