//! `openclaw-rig`: runs the fault rig against a fresh local edge group for a chosen time and
//! prints a summary; exits 1 on any linearizability violation or divergence.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use openclaw_hil_tests::powercut::PowerCutDisk;
use openclaw_hil_tests::rig::{group_options, hub_options, run, RigConfig};
use openclaw_hil_tests::{GroupOptions, LabGroup, UplinkOptions};

#[derive(Parser)]
#[command(
    name = "openclaw-rig",
    about = "Fault-injection run with a linearizability check"
)]
struct Args {
    /// Seconds of workload and faults per run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Runs, each with a fresh group and seed = --seed + run number.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Seconds between fault starts.
    #[arg(long, default_value_t = 4)]
    fault_interval: u64,
    /// Only these fault families, comma-separated: partition, bridge, one-way, leader-kill,
    /// pause, lossy, membership, overlap, power-cut-node, power-cut-site, uplink-cut,
    /// hub-leader-kill, hub-partition, hub-power-cut (default: every one the topology has).
    #[arg(long, value_delimiter = ',')]
    families: Vec<String>,
    /// Keep a failed run's directory (node logs, configs) and print where it is.
    #[arg(long)]
    keep_failed: bool,
    /// Nodes of the edge group (3 or 5; with 5, partitions cut one or two nodes away).
    #[arg(long, default_value_t = 3)]
    edge_nodes: u64,
    /// Run the edge group alone (by default it ships to a hub group, whose copy of the
    /// stream is checked too, and the nemesis also cuts the uplink).
    #[arg(long)]
    no_hub: bool,
    /// Nodes of the hub group (its leader is among the kill -9 victims; with 3 or more,
    /// hub nodes are partitioned too).
    #[arg(long, default_value_t = 3)]
    hub_nodes: u64,
    /// Run the nodes on ordinary directories: no power cuts (by default every edge and hub
    /// node runs on its own power-cut disk, which needs /dev/fuse and root).
    #[arg(long)]
    no_power_cuts: bool,
}

/// One run on fresh groups in `dir`.
async fn one_run(
    dir: &std::path::Path,
    args: &Args,
    config: &RigConfig,
) -> anyhow::Result<openclaw_hil_tests::rig::RigReport> {
    let site = GroupOptions {
        power_cut_disks: !args.no_power_cuts,
        ..group_options()
    };
    if args.no_hub {
        let mut group = LabGroup::start_ready(dir, args.edge_nodes, site).await?;
        return run(&mut group, None, config).await;
    }
    let hub_nodes = args.hub_nodes;
    let hub_settings = GroupOptions {
        power_cut_disks: !args.no_power_cuts,
        ..hub_options()
    };
    let mut hub = LabGroup::start_ready(&dir.join("hub"), hub_nodes, hub_settings).await?;
    let options = GroupOptions {
        ca_dir: Some(hub.dir.join("certs")),
        uplink: Some(UplinkOptions::to(&hub)),
        ..site
    };
    let mut group = LabGroup::start_ready(&dir.join("site"), args.edge_nodes, options).await?;
    run(&mut group, Some(&mut hub), config).await
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !args.no_power_cuts && !PowerCutDisk::available() {
        eprintln!("error: power cuts need /dev/fuse and root (or pass --no-power-cuts)");
        return ExitCode::from(2);
    }
    let (mut operations, mut faults, mut violations, mut diverged) = (0, 0, 0, 0);
    let (mut appends, mut lost, mut duplicated) = (0, 0, 0);
    let (mut power_cuts, mut unsynced, mut boot_failures) = (0, 0u64, 0);
    for n in 0..args.runs {
        let seed = args.seed + n;
        let Ok(dir) = tempfile::tempdir() else {
            eprintln!("error: no temporary directory");
            return ExitCode::from(1);
        };
        let config = RigConfig {
            clients: args.clients,
            keys: args.keys,
            duration: Duration::from_secs(args.seconds),
            fault_interval: Duration::from_secs(args.fault_interval),
            seed,
            every_family: false,
            only: args.families.clone(),
        };
        // Interrupted (Ctrl-C, SIGTERM): dropping the run kills its nodes and unmounts their
        // power-cut disks instead of leaving stale FUSE mounts behind.
        let report = tokio::select! {
            report = one_run(dir.path(), &args, &config) => report,
            signal = interrupted() => {
                eprintln!("interrupted by {signal}: stopping the nodes");
                return ExitCode::from(130);
            }
        };
        match report {
            Ok(r) => {
                println!(
                    "run {n} seed {seed}: {} ops ({} unknown, {} keyed puts acked on a \
                     retry), {} appends ({} unknown, {} acked on a keyed retry, {} lost, {} \
                     duplicated), {} faults ({} node power cuts, {} B unsynced dropped), {} \
                     violations, {} boot failures, converged {}",
                    r.operations,
                    r.unknown,
                    r.puts_retried,
                    r.appends_acked,
                    r.appends_unknown,
                    r.appends_retried,
                    r.appends_lost,
                    r.appends_duplicated,
                    r.faults.len(),
                    r.power_cuts,
                    r.unsynced_bytes_dropped,
                    r.violations,
                    r.boot_failures,
                    r.converged
                );
                for f in &r.faults {
                    println!("  fault: {f}");
                }
                for d in &r.digests {
                    println!("  replicas agree: {d}");
                }
                if args.keep_failed && !r.clean() {
                    println!("  kept for inspection: {}", dir.keep().display());
                }
                operations += r.operations;
                faults += r.faults.len();
                violations += r.violations;
                diverged += usize::from(!r.converged);
                appends += r.appends_acked;
                lost += r.appends_lost;
                duplicated += r.appends_duplicated;
                power_cuts += r.power_cuts;
                unsynced += r.unsynced_bytes_dropped;
                boot_failures += r.boot_failures;
            }
            Err(e) => {
                eprintln!("run {n} seed {seed} failed: {e:#}");
                return ExitCode::from(1);
            }
        }
    }
    println!(
        "summary: {} runs, {operations} operations checked, {appends} appends checked, {faults} \
         faults ({power_cuts} node power cuts, {unsynced} B unsynced dropped), {violations} \
         violations, {lost} lost and {duplicated} duplicated appends, {boot_failures} boot \
         failures, {diverged} diverged",
        args.runs
    );
    if violations + diverged + lost + duplicated + boot_failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
