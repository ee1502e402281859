//! `argent devices …` and `argent nodes …`: the pairing and node methods as commands.
//! Each command is one protocol call; the result is printed as JSON.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::call::call_and_print;
use super::ConnectArgs;

#[derive(Args, Debug)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub command: DevicesCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
pub enum DevicesCommand {
    /// Pending pairing requests and paired devices (tokens redacted).
    List,
    /// Approve a pending request.
    Approve { request_id: String },
    /// Reject a pending request.
    Reject { request_id: String },
    /// Revoke a device's token for a role; its connections are closed.
    Revoke {
        device_id: String,
        #[arg(long, default_value = "operator")]
        role: String,
    },
    /// Issue a new token for a device and role (printed once); the old one stops working.
    Rotate {
        device_id: String,
        #[arg(long, default_value = "operator")]
        role: String,
        /// Comma-separated scopes (default: the old token's).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
    },
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    #[command(subcommand)]
    pub command: NodesCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// Paired and connected nodes.
    List,
    /// Pending pairing requests of nodes (`role: node`).
    Pending,
    /// Approve a node's pairing request.
    Approve { request_id: String },
    /// Reject a node's pairing request.
    Reject { request_id: String },
    /// One node.
    Describe { node_id: String },
    /// Run a command on a node.
    Invoke {
        node_id: String,
        command: String,
        /// Params as a JSON object.
        params: Option<String>,
        /// How long the node has to answer, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        invoke_timeout_ms: u64,
    },
}

pub async fn devices(args: DevicesArgs) -> ExitCode {
    let (method, params) = match args.command {
        DevicesCommand::List => ("device.pair.list", json!({})),
        DevicesCommand::Approve { request_id } => {
            ("device.pair.approve", json!({"requestId": request_id}))
        }
        DevicesCommand::Reject { request_id } => {
            ("device.pair.reject", json!({"requestId": request_id}))
        }
        DevicesCommand::Revoke { device_id, role } => (
            "device.token.revoke",
            json!({"deviceId": device_id, "role": role}),
        ),
        DevicesCommand::Rotate {
            device_id,
            role,
            scopes,
        } => {
            let mut params = json!({"deviceId": device_id, "role": role});
            if let Some(scopes) = scopes {
                params["scopes"] = json!(scopes);
            }
            ("device.token.rotate", params)
        }
    };
    call_and_print(&args.connect, method, params).await
}

pub async fn nodes(args: NodesArgs) -> ExitCode {
    let (method, params) = match args.command {
        NodesCommand::List => ("node.list", json!({})),
        NodesCommand::Pending => return pending_nodes(&args.connect).await,
        NodesCommand::Approve { request_id } => {
            ("device.pair.approve", json!({"requestId": request_id}))
        }
        NodesCommand::Reject { request_id } => {
            ("device.pair.reject", json!({"requestId": request_id}))
        }
        NodesCommand::Describe { node_id } => ("node.describe", json!({"nodeId": node_id})),
        NodesCommand::Invoke {
            node_id,
            command,
            params,
            invoke_timeout_ms,
        } => {
            let parsed: Value = match params.as_deref().map(serde_json::from_str).transpose() {
                Ok(p) => p.unwrap_or_else(|| json!({})),
                Err(err) => {
                    eprintln!("argent nodes invoke: PARAMS is not valid JSON: {err}");
                    return ExitCode::from(2);
                }
            };
            (
                "node.invoke",
                json!({"nodeId": node_id, "command": command, "params": parsed,
                       "timeoutMs": invoke_timeout_ms,
                       "idempotencyKey": uuid::Uuid::new_v4().to_string()}),
            )
        }
    };
    call_and_print(&args.connect, method, params).await
}

/// The pending device-pairing requests whose role is `node`.
async fn pending_nodes(connect: &ConnectArgs) -> ExitCode {
    let client = match argent_client::Client::connect(&connect.options()).await {
        Ok(client) => client,
        Err(err) => {
            eprintln!("argent: {err}");
            return ExitCode::from(1);
        }
    };
    let result = client.call("device.pair.list", json!({})).await;
    client.close().await;
    match result {
        Ok(list) => {
            let pending: Vec<&Value> = list["pending"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["role"] == "node")
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&pending).expect("JSON serializes")
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("argent: {err}");
            ExitCode::from(1)
        }
    }
}
