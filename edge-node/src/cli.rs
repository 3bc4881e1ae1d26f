//! Command line: `run` starts the daemon; the operator commands talk to a running node over
//! its HTTP API, make dev certificates, export a fenced group's unshipped tail, or reseed a
//! fresh gateway from the hub. Exit codes: 0 ok, 1 runtime error, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use shared::config::NodeConfig as _;
use shared::identity::Role;
use shared::operator::{
    daemon_main, download, init_logging, open_empty_store, restore_backup, serve_until_signal,
    PointInTime, Target,
};
use shared::store::AsOf;
use tracing::info;

use crate::config::EdgeConfig;
use crate::edge::Edge;

/// The edge's own operator commands (disaster recovery, DESIGN.md §3.5).
#[derive(Subcommand, Debug)]
enum EdgeCommand {
    /// Write every event the hub does not have (after shipped-through) to a file, one JSON
    /// object per line — e.g. a fenced group's tail, for an operator to inspect or re-apply.
    ExportUnshipped {
        #[command(flatten)]
        target: Target,
        /// The file to write (resumed if it exists and is partial).
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a new node's store from a backup rolled forward through its committed log (or a
    /// later backup's) to the end or to a point in time the log still covers; or from the
    /// hub's copy of the site as of a seq or a time (point-in-time restore, any point). Into
    /// an empty data directory only; a point in time starts fenced (read-only).
    Restore {
        /// A file written by `backup`.
        #[arg(long, conflicts_with = "from_hub")]
        from_backup: Option<PathBuf>,
        /// A later backup of the same group whose log carries the state further.
        #[arg(long, requires = "from_backup")]
        log_from: Option<PathBuf>,
        /// Client API URL of a hub node that holds the site (with --as-of-seq or --as-of-ms).
        #[arg(long)]
        from_hub: Option<String>,
        #[command(flatten)]
        point: PointInTime,
        /// The new node's config (its site, data directory and storage are used).
        #[arg(long)]
        config: PathBuf,
    },
    /// Start this gateway's store from the hub's copy of its site (the site must be handing
    /// back: `openclaw-hub failback SITE`). Run on each member of the new group before its
    /// first `run`; the data directory must be empty. Resumable.
    Reseed {
        /// Client API URL of a hub node of the group that owns the site.
        #[arg(long)]
        from_hub: String,
        /// The new node's config (its site, data directory and storage settings are used).
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn main() -> ExitCode {
    daemon_main(
        "openclaw-edge",
        "OpenClaw edge daemon: a Raft-replicated store for site gateways",
        Role::Edge,
        |config: EdgeConfig| async move { run(config).await.map_err(|e| format!("{e:#}")) },
        |command| async move { edge_command(command).await.map_err(|e| format!("{e:#}")) },
    )
}

async fn run(config: EdgeConfig) -> anyhow::Result<()> {
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

async fn edge_command(command: EdgeCommand) -> anyhow::Result<()> {
    match command {
        EdgeCommand::ExportUnshipped { target, out } => {
            let bytes = download(&target.addr, "/v1/admin/unshipped", &out).await?;
            let events = std::fs::read_to_string(&out)?.lines().count();
            println!(
                "{events} unshipped event(s), {bytes} bytes, written to {}",
                out.display()
            );
        }
        EdgeCommand::Reseed { from_hub, config } => reseed(&from_hub, &config, "").await?,
        EdgeCommand::Restore {
            from_backup,
            log_from,
            from_hub,
            point,
            config,
        } => match (from_backup, from_hub, point.as_of()) {
            (Some(file), None, _) => {
                let config = EdgeConfig::load(&config)?;
                restore_backup(
                    &file,
                    log_from.as_deref(),
                    &point,
                    &config.node.data_dir,
                    &config.storage,
                )
                .await?;
            }
            (None, Some(hub), Some(AsOf::Seq(seq))) => {
                reseed(&hub, &config, &format!("?as_of_seq={seq}")).await?
            }
            (None, Some(hub), Some(AsOf::TimeMs(ms))) => {
                reseed(&hub, &config, &format!("?as_of_ms={ms}")).await?
            }
            _ => bail!(
                "give --from-backup FILE [--log-from FILE] [--as-of-seq N | --as-of-ms T], or \
                 --from-hub URL with --as-of-seq N or --as-of-ms T"
            ),
        },
    }
    Ok(())
}

/// Downloads the site's seed from the hub (`query` picks a point in time) into the empty
/// data directory and installs it.
async fn reseed(hub: &str, config_path: &std::path::Path, query: &str) -> anyhow::Result<()> {
    let config = EdgeConfig::load(config_path)?;
    let dir = &config.node.data_dir;
    let store = open_empty_store(dir, &config.storage)?;
    let site = &config.node.site;
    let part = dir.join("snapshots").join("reseed.part");
    eprintln!("downloading the hub's copy of {site}{query} from {hub}");
    let bytes = download(hub, &format!("/v1/sites/{site}/seed{query}"), &part).await?;
    store
        .install_seed(&part)
        .with_context(|| format!("installing {}", part.display()))?;
    store.flush().await?;
    let _ = std::fs::remove_file(&part);
    let status = store.seed_status();
    println!(
        "{site} seeded from the hub ({bytes} bytes): seq {}, epoch {}; start the group (after \
         a failback it takes writes once the hub hands the site back)",
        status.last_seq, status.epoch
    );
    Ok(())
}
