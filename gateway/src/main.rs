//! `argent`: run a gateway, inspect it, call methods.

use std::process::ExitCode;

use clap::Parser;

use argent_gateway::cli::{call, chat, pairing, run, status, ui, Cli, Command, GatewayCommand};

/// See `Cargo.toml`: CPU per handshake and RSS per idle connection are measured with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = match argent_telemetry::init("argent-gateway") {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("argent: cannot set up logging: {err:#}");
            return ExitCode::from(70);
        }
    };
    match cli.command {
        Command::Gateway {
            command: GatewayCommand::Run(args),
        } => match run::run(args).await {
            Ok(code) => code,
            Err(err) => {
                eprintln!("argent: {err:#}");
                // Invalid configuration or unusable environment (EX_CONFIG).
                ExitCode::from(78)
            }
        },
        Command::Gateway {
            command: GatewayCommand::Status(args),
        } => status::run(args).await,
        Command::Call(args) => call::run(args).await,
        Command::Chat(args) => chat::run(args).await,
        Command::Devices(args) => pairing::devices(args).await,
        Command::Nodes(args) => pairing::nodes(args).await,
        Command::Ui(args) => ui::run(args).await,
    }
}
