//! `argent call METHOD [PARAMS_JSON]`: one request, the payload printed as JSON.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use argent_client::{Client, ClientError};

use super::ConnectArgs;

#[derive(Args, Debug)]
pub struct CallArgs {
    /// Method name, e.g. `health` or `agents.files.get`.
    pub method: String,
    /// Params as a JSON object (default `{}`).
    pub params: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub async fn run(args: CallArgs) -> ExitCode {
    let params: Value = match args.params.as_deref().map(serde_json::from_str).transpose() {
        Ok(params) => params.unwrap_or_else(|| Value::Object(Default::default())),
        Err(err) => {
            eprintln!("argent call: PARAMS_JSON is not valid JSON: {err}");
            return ExitCode::from(2);
        }
    };
    call_and_print(&args.connect, &args.method, params).await
}

/// Connects, calls `method`, prints the payload as JSON (or the error on stderr, exit 1).
pub async fn call_and_print(connect: &ConnectArgs, method: &str, params: Value) -> ExitCode {
    let client = match Client::connect(&connect.options()).await {
        Ok(client) => client,
        Err(err) => {
            report(&err);
            return ExitCode::from(1);
        }
    };
    let result = client.call(method, params).await;
    client.close().await;
    match result {
        Ok(payload) => {
            // A closed stdout (`| head`) is not an error of the call.
            let text = serde_json::to_string_pretty(&payload).expect("JSON values serialize");
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            report(&err);
            ExitCode::from(1)
        }
    }
}

/// Prints a failure as the protocol error object when there is one.
pub fn report(err: &ClientError) {
    match err {
        ClientError::Call(shape) | ClientError::Rejected { error: shape, .. } => {
            let json = serde_json::to_string_pretty(shape).expect("error shapes serialize");
            eprintln!("{json}");
        }
        other => eprintln!("argent: {other}"),
    }
}
