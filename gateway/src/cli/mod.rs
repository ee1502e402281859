//! The `argent` command line: `gateway run|status`, `call`, `chat`, `knowledge …`, `tts`,
//! `devices …`, `nodes …`, `ui install`.

pub mod call;
pub mod chat;
pub mod knowledge;
pub mod pairing;
pub mod run;
pub mod status;
pub mod tts;
pub mod ui;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "argent",
    version,
    about = "Argent cluster: the ArgentOS gateway as a horizontally scalable cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run or inspect a gateway.
    Gateway {
        #[command(subcommand)]
        command: GatewayCommand,
    },
    /// Call one protocol method and print its JSON result.
    Call(call::CallArgs),
    /// Send a chat message and stream the reply (`chat.send` + `chat` events).
    Chat(chat::ChatArgs),
    /// The knowledge library: ingest files, search, list.
    Knowledge(knowledge::KnowledgeArgs),
    /// Speak a text into an audio file (`tts.convert`).
    Tts(tts::TtsArgs),
    /// Device pairing and device tokens.
    Devices(pairing::DevicesArgs),
    /// Nodes: pairing, listing, invoking commands.
    Nodes(pairing::NodesArgs),
    /// The browser dashboard's files: `argent ui install` fetches the OpenClaw Control UI.
    Ui(ui::UiArgs),
}

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Run a gateway (one process with everything, or a cluster edge with --nats).
    Run(run::RunArgs),
    /// Show where the gateway is, where its token is, its mode and the cluster members.
    Status(status::StatusArgs),
}

/// How CLI commands reach a running gateway.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Gateway WebSocket URL (default: ws://127.0.0.1 on ARGENT_GATEWAY_PORT, else the
    /// state dir config's `gateway.port`, else 18789: where `argent gateway run` listens).
    #[arg(long, global = true, env = "ARGENT_GATEWAY_URL")]
    pub url: Option<String>,
    /// Gateway token (default: read from the state dir's argent.json).
    #[arg(
        long,
        global = true,
        env = "ARGENT_GATEWAY_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// State dir whose argent.json holds the token.
    #[arg(long, global = true, env = "ARGENT_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// How long to wait for an answer, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

impl ConnectArgs {
    /// The gateway to reach.
    pub fn url(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let port = std::env::var("ARGENT_GATEWAY_PORT")
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .or_else(|| crate::config::configured_port(&self.state_dir()))
            .unwrap_or(argent_proto::limits::DEFAULT_PORT);
        format!("ws://127.0.0.1:{port}")
    }

    fn state_dir(&self) -> std::path::PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(crate::config::default_state_dir)
    }

    /// The token to send, and where it came from.
    pub fn token(&self) -> (Option<String>, String) {
        if let Some(token) = &self.token {
            return (Some(token.clone()), "--token / ARGENT_GATEWAY_TOKEN".into());
        }
        let path = crate::config::config_path(&self.state_dir());
        let file = crate::config::ConfigFile::new(path.clone());
        match file.load() {
            Ok(config) => {
                let secrets = crate::config::resolve_secrets(
                    &config,
                    &path,
                    crate::config::Precedence::FileFirst,
                );
                (secrets.token, secrets.token_source)
            }
            Err(err) => (None, err.to_string()),
        }
    }

    pub fn options(&self) -> argent_client::ConnectOptions {
        let mut options = argent_client::ConnectOptions::cli(&self.url(), self.token().0);
        options.timeout = std::time::Duration::from_millis(self.timeout_ms);
        options
    }
}
