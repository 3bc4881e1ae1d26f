//! Command line: `run` starts the hub daemon; the other commands talk to a running node
//! over its HTTP API, or make dev certificates. Exit codes: 0 ok, 1 runtime error, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use shared::identity::Role;
use shared::operator::{daemon_main, init_logging, serve_until_signal};
use tracing::info;

use crate::config::HubConfig;
use crate::hub::Hub;
use shared::config::NodeConfig as _;

pub fn main() -> ExitCode {
    daemon_main(
        "openclaw-hub",
        "OpenClaw hub daemon: merges the logs shipped by many sites and serves queries over them",
        Role::Hub,
        |config| async move { run(config).await.map_err(|e| format!("{e:#}")) },
    )
}

async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = HubConfig::load(&config_path)?;
    init_logging();
    let listen = config.http.listen;
    info!(node = config.node.id, group = %config.node.group, raft = %config.raft.listen, http = %listen, "starting");
    let hub = Hub::start(config).await.context("starting the node")?;
    let app = crate::api::router(hub.clone());
    serve_until_signal(listen, app, hub.group.clone(), || async move {
        hub.shutdown().await
    })
    .await?;
    Ok(())
}
