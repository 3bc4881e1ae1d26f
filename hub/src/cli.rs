//! Command line: `run` starts the hub daemon; the other commands talk to a running node
//! over its HTTP API, or make dev certificates. Exit codes: 0 ok, 1 runtime error, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared::identity::Role;
use shared::operator::{init_logging, main_with, wait_for_signal, OperatorCommand};
use tracing::info;

use crate::config::HubConfig;
use crate::hub::Hub;

#[derive(Parser)]
#[command(
    name = "openclaw-hub",
    version,
    about = "OpenClaw hub daemon: merges the logs shipped by many sites and serves queries over them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Path of the TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    #[command(flatten)]
    Operator(OperatorCommand),
}

pub fn main() -> ExitCode {
    main_with(|cli: Cli| async move {
        match cli.command {
            Command::Run { config } => run(config).await.map_err(|e| format!("{e:#}")),
            Command::Operator(command) => shared::operator::dispatch(command, Role::Hub)
                .await
                .map_err(|e| e.to_string()),
        }
    })
}

async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = HubConfig::load(&config_path)?;
    init_logging();
    let listen = config.http.listen;
    info!(node = config.node.id, group = %config.node.group, raft = %config.raft.listen, http = %listen, "starting");
    let hub = Hub::start(config).await.context("starting the node")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the client API on {listen}"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = crate::api::router(hub.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    shared::group::supervise::start_leadership_metrics(hub.group.clone());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    shared::group::supervise::start_watchdog(hub.group.clone());
    info!("serving");
    wait_for_signal()
        .await
        .context("installing the signal handlers")?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    info!("stopping");
    hub.shutdown().await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
    info!("stopped");
    Ok(())
}
