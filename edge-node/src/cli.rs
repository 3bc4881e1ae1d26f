//! Command line: `run` starts the daemon; the other commands talk to a running one over
//! its HTTP API, or make dev certificates. Exit codes: 0 ok, 1 runtime error, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use shared::identity::Role;
use shared::operator::{daemon_main, init_logging, serve_until_signal};
use tracing::info;

use crate::config::EdgeConfig;
use crate::edge::Edge;
use shared::config::NodeConfig as _;

pub fn main() -> ExitCode {
    daemon_main(
        "openclaw-edge",
        "OpenClaw edge daemon: a Raft-replicated store for site gateways",
        Role::Edge,
        |config| async move { run(config).await.map_err(|e| format!("{e:#}")) },
    )
}

async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = EdgeConfig::load(&config_path)?;
    init_logging();
    let listen = config.http.listen;
    info!(node = config.node.id, site = %config.node.site, raft = %config.raft.listen, http = %listen, "starting");
    let edge = Edge::start(config).await.context("starting the node")?;
    let app = crate::api::router(edge.clone());
    serve_until_signal(listen, app, edge.group.clone(), || async move {
        edge.shutdown().await
    })
    .await?;
    Ok(())
}
