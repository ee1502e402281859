//! `argent`: run a gateway, inspect it, call methods.

use std::process::ExitCode;

use clap::Parser;

use argent_gateway::cli::{
    call, chat, knowledge, pairing, run, status, tts, ui, Cli, Command, GatewayCommand,
};

/// See `Cargo.toml`: CPU per handshake, RSS per idle connection and RSS after a burst are
/// measured with it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Freed memory goes back to the system within jemalloc's decay time (10 s) even while
    // the process is idle: without the background thread, purging happens only when some
    // thread allocates again (docs/benchmarks.md, "Memory after a burst").
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
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
        Command::Knowledge(args) => knowledge::run(args).await,
        Command::Tts(args) => tts::run(args).await,
        Command::Devices(args) => pairing::devices(args).await,
        Command::Nodes(args) => pairing::nodes(args).await,
        Command::Ui(args) => ui::run(args).await,
    }
}
