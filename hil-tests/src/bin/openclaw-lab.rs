//! `openclaw-lab`: a local OpenClaw deployment on loopback for tries, tests and benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use openclaw_hil_tests::lab::site_name;
use openclaw_hil_tests::{Lab, LabOptions};

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
        /// Number of sites (each its own edge group).
        #[arg(long, default_value_t = 1)]
        sites: u64,
        /// Hub nodes (0: no hub; the sites then ship nothing).
        #[arg(long, default_value_t = 0)]
        hub_nodes: u64,
        /// Unshipped bytes each site keeps at most before refusing writes (with a hub).
        #[arg(long, default_value = "1GiB")]
        max_unshipped_bytes: String,
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

/// Values clap accepts but a lab cannot run: usage errors (exit 2).
fn check_usage(command: &LabCommand) -> Result<(), String> {
    let LabCommand::Up {
        edge_nodes,
        sites,
        hub_nodes,
        ..
    } = command;
    if !(1..=200).contains(sites) {
        return Err(format!("--sites {sites}: 1 to 200 sites"));
    }
    if *hub_nodes > 7 {
        return Err(format!(
            "--hub-nodes {hub_nodes}: a hub group has 0 to 7 nodes"
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
        edge_nodes,
        sites,
        hub_nodes,
        max_unshipped_bytes,
        dir,
    } = command;
    let dir = std::path::absolute(&dir).context("resolving --dir")?;
    let options = LabOptions {
        sites,
        edge_nodes,
        hub_nodes,
        max_unshipped_bytes,
        ..LabOptions::default()
    };
    let mut lab = Lab::start(&dir, options).await?;
    let endpoints = lab.endpoints();
    let path = dir.join("endpoints.json");
    let tmp = dir.join("endpoints.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&endpoints)?)?;
    std::fs::rename(&tmp, &path)?;
    for (i, group) in lab.sites.iter().enumerate() {
        println!(
            "{}: {edge_nodes} edge node(s) serving",
            site_name(i as u64 + 1)
        );
        for node in &group.nodes {
            println!(
                "  node {}: {} (pid {})",
                node.id,
                node.http,
                node.pid().unwrap_or(0)
            );
        }
    }
    if let Some(hub) = &lab.hub {
        println!(
            "hub ({}): {hub_nodes} node(s) serving; every site ships to it",
            hub.options.site
        );
        for node in &hub.nodes {
            println!(
                "  node {}: {} (pid {})",
                node.id,
                node.http,
                node.pid().unwrap_or(0)
            );
        }
    }
    println!(
        "endpoints: {}\nlogs: {}/<site or hub-1>/node-*/node.log\nCtrl-C stops the lab.",
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
    match lab.stop_all().await {
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
