//! What a conversion produces: the format asked of a provider per channel, the format of
//! bytes a local command wrote, and the audio files (`audioPath`) a node-agent keeps for a
//! few minutes.

use std::path::{Path, PathBuf};
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

/// The directory audio files are written to, one per node-agent process.
pub fn directory() -> PathBuf {
    std::env::temp_dir().join(format!("argent-tts-{}", std::process::id()))
}

/// Writes one conversion's audio (`voice-<ms>-<id>.<ext>`) and deletes it after
/// [`KEEP_FILES_FOR`]. Clients get the bytes in the answer; the path is for tools on this
/// host.
pub async fn keep(bytes: &[u8], extension: &str) -> std::io::Result<PathBuf> {
    let dir = directory();
    tokio::fs::create_dir_all(&dir).await?;
    let path = dir.join(format!(
        "voice-{}-{}.{extension}",
        argent_proto::now_ms(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    tokio::fs::write(&path, bytes).await?;
    let doomed = path.clone();
    tokio::spawn(async move {
        tokio::time::sleep(KEEP_FILES_FOR).await;
        remove(&doomed).await;
    });
    Ok(path)
}

pub async fn remove(path: &Path) {
    if let Err(err) = tokio::fs::remove_file(path).await {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(path = %path.display(), %err, "audio file not removed");
        }
    }
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
