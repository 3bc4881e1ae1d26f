//! `openclaw-lab`: a local OpenClaw deployment on loopback for tries, tests and benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use openclaw_hil_tests::{EdgeGroup, GroupOptions};

#[derive(Parser)]
#[command(
    name = "openclaw-lab",
    about = "Runs a local OpenClaw deployment on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Start the deployment, write DIR/endpoints.json once every node serves, and run until
    /// Ctrl-C or SIGTERM, then stop every node.
    Up {
        /// Edge nodes per site (1, 3 or 5 are the usual sizes; at most 7).
        #[arg(long, default_value_t = 3)]
        edge_nodes: u64,
        /// Number of sites (only 1 until the hub exists).
        #[arg(long, default_value_t = 1)]
        sites: u64,
        /// Hub nodes (only 0 until the hub exists).
        #[arg(long, default_value_t = 0)]
        hub_nodes: u64,
        /// Directory for certificates, configs, data and logs.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: LabCommand) -> anyhow::Result<()> {
    let LabCommand::Up {
        edge_nodes,
        sites,
        hub_nodes,
        dir,
    } = command;
    if sites != 1 {
        bail!("--sites {sites}: only one site is supported until the hub exists");
    }
    if hub_nodes != 0 {
        bail!("--hub-nodes {hub_nodes}: the hub is not implemented yet");
    }
    if !(1..=7).contains(&edge_nodes) {
        bail!("--edge-nodes {edge_nodes}: a group has 1 to 7 nodes");
    }
    let dir = std::path::absolute(&dir).context("resolving --dir")?;
    let mut group =
        EdgeGroup::start(&dir.join("site-1"), edge_nodes, GroupOptions::default()).await?;
    group.wait_ready(&group.ids()).await?;
    let endpoints = group.endpoints();
    let path = dir.join("endpoints.json");
    let tmp = dir.join("endpoints.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&endpoints)?)?;
    std::fs::rename(&tmp, &path)?;
    println!("site-1: {edge_nodes} edge node(s) serving");
    for node in &group.nodes {
        println!(
            "  node {}: {} (pid {})",
            node.id,
            node.http,
            node.pid().unwrap_or(0)
        );
    }
    println!(
        "endpoints: {}\nlogs: {}/site-1/node-*/node.log\nCtrl-C stops the lab.",
        path.display(),
        dir.display()
    );

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping");
    for id in group.ids() {
        if let Err(e) = group.stop(id).await {
            eprintln!("warning: {e:#}");
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}
