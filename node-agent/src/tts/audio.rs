//! What a conversion produces: the format asked of a provider per channel, the format of
//! bytes a local command wrote, and the audio files (`audioPath`) a node-agent keeps for a
//! few minutes.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// The formats asked of the cloud providers for one conversion (upstream's rule: Telegram
/// voice notes are Opus; everything else MP3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// OpenAI's `response_format`.
    pub openai: &'static str,
    /// ElevenLabs' `output_format`.
    pub elevenlabs: &'static str,
    pub extension: &'static str,
    pub voice_compatible: bool,
}

const TELEGRAM: Output = Output {
    openai: "opus",
    elevenlabs: "opus_48000_64",
    extension: "opus",
    voice_compatible: true,
};

const DEFAULT: Output = Output {
    openai: "mp3",
    elevenlabs: "mp3_44100_128",
    extension: "mp3",
    voice_compatible: false,
};

/// The output for a channel id (`telegram`, any case, gets voice notes).
pub fn output_for(channel: Option<&str>) -> Output {
    match channel {
        Some(c) if c.trim().eq_ignore_ascii_case("telegram") => TELEGRAM,
        _ => DEFAULT,
    }
}

/// A format recognised from a file's first bytes: `(outputFormat, extension,
/// voiceCompatible)`. Opus in Ogg is what chat apps play as a voice note.
pub fn sniff(bytes: &[u8]) -> Option<(&'static str, &'static str, bool)> {
    let head = &bytes[..bytes.len().min(64)];
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WAVE" {
        return Some(("wav", "wav", false));
    }
    if head.starts_with(b"OggS") {
        return Some(if head.windows(8).any(|w| w == b"OpusHead") {
            ("opus", "opus", true)
        } else {
            ("ogg", "ogg", false)
        });
    }
    if head.starts_with(b"fLaC") {
        return Some(("flac", "flac", false));
    }
    if head.starts_with(b"ID3") || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        return Some(("mp3", "mp3", false));
    }
    None
}

/// How long an audio file stays on the node-agent's disk (upstream: five minutes).
const KEEP_FILES_FOR: Duration = Duration::from_secs(300);

/// Prefix of the per-process directory under the system's temporary directory.
const DIR_PREFIX: &str = "argent-tts-";

/// This process's private directory for audio and the local command's scratch files:
/// `argent-tts-<pid>-<random>`, created (never reused: a name someone else made first is
/// refused) with mode 0700, since it holds what users had spoken. Directories left by
/// node-agents that died are removed when it is made.
pub fn directory() -> std::io::Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir);
    }
    let base = std::env::temp_dir();
    remove_leftovers(&base);
    let dir = base.join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    // Two first calls at once: one directory wins, the other is removed.
    if DIR.set(dir.clone()).is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(DIR.get().expect("set above"))
}

/// Removes `argent-tts-<pid>-…` directories whose process is gone (a crash or a kill left
/// them; a clean exit leaves at most five minutes of files behind too).
fn remove_leftovers(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry
            .metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == current_uid());
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// Writes a file only this user can read (mode 0600).
pub async fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.write_all(bytes).await?;
    file.flush().await
}

/// Writes one conversion's audio (`voice-<ms>-<id>.<ext>`) and deletes it after
/// [`KEEP_FILES_FOR`]. Clients get the bytes in the answer; the path is for tools on this
/// host.
pub async fn keep(bytes: &[u8], extension: &str) -> std::io::Result<PathBuf> {
    let path = directory()?.join(format!(
        "voice-{}-{}.{extension}",
        argent_proto::now_ms(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    write_private(&path, bytes).await?;
    let doomed = path.clone();
    tokio::spawn(async move {
        tokio::time::sleep(KEEP_FILES_FOR).await;
        if let Err(err) = tokio::fs::remove_file(&doomed).await {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(path = %doomed.display(), %err, "audio file not removed");
            }
        }
    });
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_gets_voice_notes() {
        assert_eq!(output_for(Some(" Telegram ")).elevenlabs, "opus_48000_64");
        assert!(output_for(Some("telegram")).voice_compatible);
        assert_eq!(output_for(Some("discord")).openai, "mp3");
        assert_eq!(output_for(None).extension, "mp3");
    }

    #[test]
    fn the_directory_is_private() {
        let dir = directory().unwrap();
        assert_eq!(std::fs::metadata(dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(directory().unwrap(), dir);
    }

    #[test]
    fn formats_from_first_bytes() {
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt ").unwrap().0, "wav");
        assert_eq!(
            sniff(b"OggS\0\x02\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0OpusHead").unwrap(),
            ("opus", "opus", true)
        );
        assert_eq!(sniff(b"OggS\0\x02vorbis").unwrap().0, "ogg");
        assert_eq!(sniff(b"ID3\x04").unwrap().0, "mp3");
        assert_eq!(sniff(&[0xFF, 0xFB, 0x90]).unwrap().0, "mp3");
        assert_eq!(sniff(b"fLaC").unwrap().0, "flac");
        assert_eq!(sniff(b"hello"), None);
        assert_eq!(sniff(b""), None);
    }
}
