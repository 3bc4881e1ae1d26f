//! `openclaw-hil`: the hardware-in-the-loop scenario on real gateways listed in a devices
//! file (ssh). A hub runs on this machine behind the fault relay (shaped like the site's
//! uplink); the gateways run the installed `openclaw-edge` as one site; the scenario
//! power-cuts a gateway, flaps the uplink and reboots the site under a writer, then checks
//! that every acknowledged append is at every gateway and at the hub exactly once, in
//! order. See hil-tests/README.md and hil-tests/devices.example.toml.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use openclaw_hil_tests::hil::{self, ScenarioOptions};
use openclaw_hil_tests::relay::{Faults, Relay};
use openclaw_hil_tests::{binary, GroupOptions, LabGroup, NodeHost, SshHost, UplinkOptions};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "openclaw-hil",
    about = "Runs the hardware-in-the-loop scenario on real gateways over ssh"
)]
struct Args {
    /// The devices file (see hil-tests/devices.example.toml).
    #[arg(long)]
    devices: PathBuf,
    /// Directory for the hub, certificates and logs (default: a temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The devices file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Devices {
    /// The site the gateways form.
    #[serde(default = "default_site")]
    site: String,
    /// This machine's address as the gateways reach it: the uplink relay listens here.
    hub_address: IpAddr,
    /// `openclaw-edge` on the gateways (installed by the package).
    #[serde(default = "default_edge_binary")]
    edge_binary: PathBuf,
    /// Scratch directory on each gateway for the scenario's configs, keys and data.
    #[serde(default = "default_remote_dir")]
    remote_dir: PathBuf,
    /// Acknowledged appends per phase.
    #[serde(default = "default_per_phase")]
    per_phase: u64,
    #[serde(default)]
    uplink: UplinkShape,
    #[serde(rename = "gateway")]
    gateways: Vec<Gateway>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Gateway {
    /// ssh arguments ending with the destination, e.g. ["-p", "22", "root@10.0.0.21"].
    ssh: Vec<String>,
    /// The gateway's address on the site LAN (Raft binds here, port 7001).
    address: IpAddr,
    /// Client API port on its loopback (default 8001).
    api_port: Option<u16>,
}

/// The uplink's shape (the relay's faults towards the hub).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UplinkShape {
    #[serde(default)]
    loss: f64,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    jitter_ms: u64,
    #[serde(default)]
    bandwidth_bytes_per_sec: u64,
}

fn default_site() -> String {
    "site-1".into()
}
fn default_edge_binary() -> PathBuf {
    "/usr/bin/openclaw-edge".into()
}
fn default_remote_dir() -> PathBuf {
    "/var/tmp/openclaw-hil".into()
}
fn default_per_phase() -> u64 {
    15
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.devices)
        .with_context(|| format!("reading {}", args.devices.display()))?;
    let devices: Devices =
        toml::from_str(&text).with_context(|| format!("in {}", args.devices.display()))?;
    if devices.gateways.len() < 3 || devices.gateways.len().is_multiple_of(2) {
        bail!(
            "{}: list 3 or 5 gateways (a Raft group that survives a power cut), not {}",
            args.devices.display(),
            devices.gateways.len()
        );
    }
    if !devices.remote_dir.is_absolute() {
        bail!(
            "{}: remote_dir must be an absolute path, not {}",
            args.devices.display(),
            devices.remote_dir.display()
        );
    }
    let temp;
    let dir = match args.dir {
        Some(dir) => dir,
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };

    let hub = LabGroup::start_ready(&dir.join("hub"), 1, hil::hub_options())
        .await
        .context("starting the hub")?;
    let uplink = Relay::start(
        SocketAddr::new(devices.hub_address, 0),
        hub.nodes[0].raft_listen,
    )
    .await
    .with_context(|| format!("relay on {}", devices.hub_address))?;
    let shape = &devices.uplink;
    uplink.control.set_faults(Faults {
        loss: shape.loss,
        delay: Duration::from_millis(shape.delay_ms),
        jitter: Duration::from_millis(shape.jitter_ms),
        duplicate: 0.0,
        bandwidth_bytes_per_sec: shape.bandwidth_bytes_per_sec,
    });

    let hosts: Vec<NodeHost> = devices
        .gateways
        .iter()
        .map(|g| NodeHost {
            ip: Some(g.address),
            ssh: Some(SshHost {
                args: g.ssh.clone(),
                remote_dir: devices.remote_dir.clone(),
            }),
            api_port: g.api_port,
            ..NodeHost::default()
        })
        .collect();
    let n = hosts.len() as u64;
    let mut site = LabGroup::start(
        &dir.join("site"),
        n,
        GroupOptions {
            site: devices.site.clone(),
            ca_dir: Some(hub.dir.join("certs")),
            uplink: Some(UplinkOptions {
                hubs: vec![(1, uplink.listen)],
                ..UplinkOptions::to(&hub)
            }),
            hosts,
            binary: Some(devices.edge_binary.clone()),
            tool: Some(binary("openclaw-edge", "OPENCLAW_EDGE_BIN")?),
            write_timeout: "10s",
            ..GroupOptions::default()
        },
    )
    .await
    .context("starting the gateways")?;
    let ips: Vec<IpAddr> = devices.gateways.iter().map(|g| g.address).collect();
    let options = ScenarioOptions {
        per_phase: devices.per_phase,
        ..ScenarioOptions::default()
    };
    let report = hil::run(&mut site, &hub, &uplink, &ips, options)
        .await
        .with_context(|| format!("scenario failed; gateway 1 log:\n{}", site.log_tail(1, 20)))?;
    println!(
        "HIL on {n} gateways: {} appends acknowledged; seq {} at every gateway and at the hub, \
         exactly once and in order, after a power cut, an uplink flap and a site reboot ({:.1?})",
        report.acked, report.last_seq, report.elapsed
    );
    site.stop_all().await?;
    Ok(())
}
