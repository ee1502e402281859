//! `argent chat MESSAGE`: one chat turn from the terminal. The reply streams to stdout as
//! the `chat` deltas arrive; the exit code says how the run ended.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use argent_client::Client;

use super::call::report;
use super::ConnectArgs;

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// What to say.
    pub message: String,
    /// Session key (`main` is the default agent's main session).
    #[arg(long, default_value = "main")]
    pub session: String,
    /// Give up waiting for the reply after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub wait_secs: u64,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn text_of(payload: &Value) -> &str {
    payload["message"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
}

pub async fn run(args: ChatArgs) -> ExitCode {
    let mut client = match Client::connect(&args.connect.options()).await {
        Ok(client) => client,
        Err(err) => {
            report(&err);
            return ExitCode::from(1);
        }
    };
    let run_id = format!("cli-{}", uuid::Uuid::new_v4().simple());
    let params =
        json!({"sessionKey": args.session, "message": args.message, "idempotencyKey": run_id});
    if let Err(err) = client.call("chat.send", params).await {
        report(&err);
        return ExitCode::from(1);
    }
    let mut shown = 0;
    let mut stdout = std::io::stdout();
    let outcome = tokio::time::timeout(Duration::from_secs(args.wait_secs), async {
        while let Some(event) = client.next_event().await {
            if event.name != "chat" || event.payload["runId"] != run_id.as_str() {
                continue;
            }
            let text = text_of(&event.payload);
            // Deltas carry the whole text so far: print what is new.
            if let Some(new) = text.get(shown..) {
                let _ = write!(stdout, "{new}");
                let _ = stdout.flush();
                shown = text.len();
            }
            match event.payload["state"].as_str() {
                Some("delta") => continue,
                Some("final") => return Ok(()),
                Some("aborted") => return Err("aborted".to_string()),
                _ => {
                    return Err(event.payload["errorMessage"]
                        .as_str()
                        .unwrap_or("the run failed")
                        .to_string())
                }
            }
        }
        Err("the connection closed".to_string())
    })
    .await;
    println!();
    client.close().await;
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(why)) => {
            eprintln!("argent chat: {why}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("argent chat: no reply within {} s", args.wait_secs);
            ExitCode::from(1)
        }
    }
}
