//! Command line: `run` starts the hub daemon; the operator commands talk to a running node
//! over its HTTP API (DR: `promote`, `failback`), or make dev certificates.
//! Exit codes: 0 ok, 1 runtime error, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use shared::config::NodeConfig as _;
use shared::identity::Role;
use shared::operator::{
    daemon_main, get_json, init_logging, print_http, restore_backup, serve_until_signal,
    PointInTime, Target,
};
use tracing::info;

use crate::config::HubConfig;
use crate::hub::Hub;

/// The hub's own operator commands (disaster recovery, DESIGN.md §3.5).
#[derive(Subcommand, Debug)]
enum HubCommand {
    /// Take over a lost site: bump its epoch (fencing its old edge group) and accept its
    /// writes at the hub under /v1/sites/SITE/.
    Promote {
        /// The site to promote.
        site: String,
        #[command(flatten)]
        target: Target,
    },
    /// Build a new hub node's store from a backup, rolled forward through its committed log
    /// (or a later backup's) to the end or to a point in time (into an empty data directory
    /// only; run on each member to rebuild a group).
    Restore {
        /// A file written by `backup`.
        #[arg(long)]
        from_backup: PathBuf,
        /// A later backup of the same group whose log carries the state further.
        #[arg(long)]
        log_from: Option<PathBuf>,
        #[command(flatten)]
        point: PointInTime,
        /// The new node's config (its data directory and storage are used).
        #[arg(long)]
        config: PathBuf,
    },
    /// Hand a promoted site back: the hub stops taking its writes; a group reseeded with
    /// `openclaw-edge reseed --from-hub` takes the site back when it connects.
    Failback {
        /// The site to hand back.
        site: String,
        #[command(flatten)]
        target: Target,
        /// Wait (showing progress) until the reseeded edge group has taken the site back.
        #[arg(long)]
        wait: bool,
        /// Longest wait with --wait, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
}

pub fn main() -> ExitCode {
    daemon_main(
        "openclaw-hub",
        "OpenClaw hub daemon: merges the logs shipped by many sites and serves queries over them",
        Role::Hub,
        |config: HubConfig| async move { run(config).await.map_err(|e| format!("{e:#}")) },
        |command| async move { hub_command(command).await.map_err(|e| format!("{e:#}")) },
    )
}

async fn run(config: HubConfig) -> anyhow::Result<()> {
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

async fn hub_command(command: HubCommand) -> anyhow::Result<()> {
    match command {
        HubCommand::Restore {
            from_backup,
            log_from,
            point,
            config,
        } => {
            let config = HubConfig::load(&config)?;
            restore_backup(
                &from_backup,
                log_from.as_deref(),
                &point,
                &config.node.data_dir,
                &config.storage,
            )
            .await?;
        }
        HubCommand::Promote { site, target } => {
            print_http(
                &target.addr,
                "POST",
                &format!("/v1/sites/{site}/promote"),
                None,
            )
            .await?;
        }
        HubCommand::Failback {
            site,
            target,
            wait,
            timeout_secs,
        } => {
            print_http(
                &target.addr,
                "POST",
                &format!("/v1/sites/{site}/failback"),
                None,
            )
            .await?;
            eprintln!(
                "{site} is handing back: the hub takes none of its writes now. Reseed the new \
                 group (on each gateway: openclaw-edge reseed --from-hub {} --config FILE), then \
                 start it; it takes the site back when it connects.",
                target.addr
            );
            if wait {
                wait_for_edge(&target.addr, &site, Duration::from_secs(timeout_secs)).await?;
            }
        }
    }
    Ok(())
}

/// Polls the site until its owner is the edge again, printing what it waits for.
async fn wait_for_edge(addr: &str, site: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = get_json(addr, &format!("/v1/sites/{site}")).await?;
        if status["owner"] == "edge" {
            eprintln!(
                "{site} is back with its edge group at epoch {} (shipped through {})",
                status["epoch"], status["shipped_through"]
            );
            return Ok(());
        }
        eprint!(
            "\rwaiting for the reseeded group of {site} (owner: {}, epoch {}) ",
            status["owner"], status["epoch"]
        );
        anyhow::ensure!(Instant::now() < deadline, "gave up after {timeout:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
