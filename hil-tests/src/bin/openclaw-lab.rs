//! `openclaw-lab`: a local OpenClaw deployment on loopback for tries, tests and benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
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
    if let Err(message) = check_usage(&cli.command) {
        eprintln!("error: {message}\n\nFor more information, try '--help'.");
        return ExitCode::from(2);
    }
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

/// Values clap accepts but this lab cannot run yet: usage errors (exit 2).
fn check_usage(command: &LabCommand) -> Result<(), String> {
    let LabCommand::Up {
        edge_nodes,
        sites,
        hub_nodes,
        ..
    } = command;
    if *sites != 1 {
        return Err(format!(
            "--sites {sites}: only one site is supported until the hub exists"
        ));
    }
    if *hub_nodes != 0 {
        return Err(format!(
            "--hub-nodes {hub_nodes}: the hub is not implemented yet"
        ));
    }
    if !(1..=7).contains(edge_nodes) {
        return Err(format!(
            "--edge-nodes {edge_nodes}: a group has 1 to 7 nodes"
        ));
    }
    Ok(())
}

async fn run(command: LabCommand) -> anyhow::Result<()> {
    let LabCommand::Up {
        edge_nodes, dir, ..
    } = command;
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
    match group.stop_all().await {
        Ok(killed) if killed.is_empty() => {}
        Ok(killed) => eprintln!(
            "warning: node(s) {killed:?} did not exit within {:?} of SIGTERM and were killed",
            openclaw_hil_tests::STOP_TIMEOUT
        ),
        Err(e) => eprintln!("warning: stopping the nodes: {e:#}"),
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}
