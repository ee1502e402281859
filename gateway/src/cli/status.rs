//! `argent gateway status`: where the gateway is, where its token is, its mode and the
//! cluster's members.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use argent_client::Client;

use super::ConnectArgs;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> ExitCode {
    let (token, token_source) = args.connect.token();
    let mut report = json!({"url": args.connect.url(), "tokenSource": token_source});
    let status = match token {
        None => Err("no token found: pass --token or set ARGENT_GATEWAY_TOKEN".to_string()),
        Some(_) => match Client::connect(&args.connect.options()).await {
            Ok(client) => {
                let status = client
                    .call("status", json!({}))
                    .await
                    .map_err(|e| e.to_string());
                client.close().await;
                status
            }
            Err(err) => Err(err.to_string()),
        },
    };
    let ok = status.is_ok();
    match status {
        Ok(status) => {
            report["running"] = json!(true);
            report["gateway"] = status["gateway"].clone();
            report["cluster"] = status["cluster"].clone();
        }
        Err(err) => {
            report["running"] = json!(false);
            report["error"] = json!(err);
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("JSON serializes")
        );
    } else {
        print_text(&report);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_text(report: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    println!("gateway:  {}", s(&report["url"]));
    println!("token:    {}", s(&report["tokenSource"]));
    if report["running"] != true {
        println!("status:   not reachable ({})", s(&report["error"]));
        return;
    }
    let gw = &report["gateway"];
    println!(
        "status:   running, mode {}, id {}, {} connection(s), up {} s",
        s(&gw["mode"]),
        s(&gw["id"]),
        gw["connections"],
        gw["uptimeMs"].as_u64().unwrap_or(0) / 1000
    );
    println!("state:    {}", s(&gw["stateDir"]));
    let cluster = &report["cluster"];
    println!("cluster:  degraded={}", cluster["degraded"]);
    for reason in cluster["reasons"].as_array().into_iter().flatten() {
        println!("          ! {}", s(reason));
    }
    for g in cluster["gateways"].as_array().into_iter().flatten() {
        println!(
            "  gateway {} {} ({} connections)",
            s(&g["id"]),
            s(&g["url"]),
            g["connections"]
        );
    }
    for n in cluster["nodes"].as_array().into_iter().flatten() {
        println!(
            "  node    {} {} caps={}",
            s(&n["id"]),
            s(&n["address"]),
            n["capabilities"]
        );
    }
}
