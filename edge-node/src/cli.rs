//! Command line: `run` starts the daemon; the other commands talk to a running one over
//! its HTTP API, or make dev certificates. Exit codes: 0 ok, 1 runtime error, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared::identity::Role;
use shared::operator::{init_logging, main_with, wait_for_signal, OperatorCommand};
use tracing::info;

use crate::config::EdgeConfig;
use crate::edge::Edge;

#[derive(Parser)]
#[command(
    name = "openclaw-edge",
    version,
    about = "OpenClaw edge daemon: a Raft-replicated store for site gateways"
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
            Command::Operator(command) => shared::operator::dispatch(command, Role::Edge)
                .await
                .map_err(|e| e.to_string()),
        }
    })
}

async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = EdgeConfig::load(&config_path)?;
    init_logging();
    let listen = config.http.listen;
    info!(node = config.node.id, site = %config.node.site, raft = %config.raft.listen, http = %listen, "starting");
    let node = Edge::start(config).await.context("starting the node")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the client API on {listen}"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = crate::api::router(node.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    shared::group::supervise::start_leadership_metrics(node.group.clone());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    shared::group::supervise::start_watchdog(node.group.clone());
    info!("serving");
    wait_for_signal()
        .await
        .context("installing the signal handlers")?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    info!("stopping");
    shutdown(node, stop_tx, server).await;
    info!("stopped");
    Ok(())
}

async fn shutdown(
    node: Arc<Edge>,
    stop_http: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    node.shutdown().await;
    let _ = stop_http.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
}
