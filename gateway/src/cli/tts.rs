//! `argent tts TEXT… --out FILE`: speech from the command line (`tts.convert`); the audio
//! is written to FILE, or to `speech.<format>` when no file is named.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use clap::Args;
use serde_json::json;

use argent_client::Client;

use super::call::report;
use super::ConnectArgs;

/// A conversion may try several providers for two minutes; the gateway waits 130 s for
/// the node-agent, and this a little longer, so the gateway's own answer arrives first.
const CONVERT_TIMEOUT: Duration = Duration::from_secs(140);

#[derive(Args, Debug)]
pub struct TtsArgs {
    /// The text to speak.
    #[arg(required = true)]
    pub text: Vec<String>,
    /// Where to write the audio (default `speech.<format>` in the current directory).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Channel whose format to produce (`telegram`: an Opus voice note).
    #[arg(long)]
    pub channel: Option<String>,
    /// Provider to try first (`openai`, `elevenlabs`, `cli`).
    #[arg(long)]
    pub provider: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A file extension for `outputFormat` (`mp3_44100_128` is MP3, `opus_48000_64` Opus).
fn extension(format: &str) -> &str {
    format.split('_').next().unwrap_or(format)
}

pub async fn run(args: TtsArgs) -> ExitCode {
    let mut options = args.connect.options();
    options.timeout = options.timeout.max(CONVERT_TIMEOUT);
    let client = match Client::connect(&options).await {
        Ok(client) => client,
        Err(err) => {
            report(&err);
            return ExitCode::from(1);
        }
    };
    let mut params = json!({"text": args.text.join(" ")});
    if let Some(channel) = &args.channel {
        params["channel"] = json!(channel);
    }
    if let Some(provider) = &args.provider {
        params["overrides"] = json!({"provider": provider});
    }
    let answer = client.call("tts.convert", params).await;
    client.close().await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => {
            report(&err);
            return ExitCode::from(1);
        }
    };
    let format = answer["outputFormat"].as_str().unwrap_or("audio");
    let audio = answer["audio"]
        .as_str()
        .and_then(|data| base64::engine::general_purpose::STANDARD.decode(data).ok());
    let Some(audio) = audio else {
        eprintln!("error: the gateway's answer carries no audio");
        return ExitCode::from(1);
    };
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("speech.{}", extension(format))));
    if let Err(err) = std::fs::write(&out, &audio) {
        eprintln!("error: cannot write {}: {err}", out.display());
        return ExitCode::from(1);
    }
    let provider = answer["provider"].as_str().unwrap_or("?");
    println!(
        "{} ({} bytes, {format}, by {provider})",
        out.display(),
        audio.len()
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_name_their_files() {
        assert_eq!(super::extension("mp3_44100_128"), "mp3");
        assert_eq!(super::extension("opus"), "opus");
        assert_eq!(super::extension("wav"), "wav");
    }
}
