//! The one lab harness: starts real `openclaw-edge` and `openclaw-hub` processes on
//! loopback with dev certificates under one CA, optionally behind the project's UDP relay,
//! and drives them over HTTP. The lab binary, the cluster tests and the benchmarks all
//! start topologies through it (`LabGroup` for one group, `Lab` for sites plus a hub).

pub mod checker;
pub mod hil;
pub mod http1;
pub mod lab;
pub mod memcg;
pub mod nats;
pub mod netns;
pub mod powercut;
pub mod relay;
pub mod rig;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::relay::Relay;

pub use crate::lab::{Lab, LabOptions};

/// Longest a node may take to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval of every wait.
pub const POLL: Duration = Duration::from_millis(50);
/// Deadline of one HTTP request made by the harness.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a SIGTERMed node may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// CPU seconds (user and system, every thread) process `pid` has used, from /proc; `None`
/// once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    // utime and stime count clock ticks of USER_HZ, 100 per second in Linux's ABI.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces), from the third on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The nodes' log filter: `$RUST_LOG`, else the daemons' own default.
fn rust_log() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| shared::operator::DEFAULT_LOG_FILTER.into())
}

/// Sends `signal` to process `pid` (kill(2) through nix: no `kill` binary needed, which a
/// minimal Debian lacks without procps).
pub fn send_signal(pid: u32, signal: Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(pid).context("pid out of range")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .with_context(|| format!("kill {signal} {pid}"))
}

/// Finds a daemon binary: `$OPENCLAW_EDGE_BIN`, else next to the running executable or
/// one directory up (tests run from target/<profile>/deps).
pub fn binary(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        if let Some(d) = dir {
            let candidate = d.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            dir = d.parent();
        }
    }
    bail!(
        "{name} not found next to {} (run `cargo build --bins` first, or set {env})",
        exe.display()
    )
}

/// Which daemon a lab group runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    Edge,
    Hub,
}

/// Where an edge group ships (its `[uplink]` section).
#[derive(Clone, Debug)]
pub struct UplinkOptions {
    pub hub_group: String,
    /// (hub node id, QUIC address as the edge dials it).
    pub hubs: Vec<(u64, SocketAddr)>,
    pub max_unshipped_bytes: String,
    pub batch_delay: &'static str,
    /// Bytes per second on the wire; 0: no cap.
    pub max_bytes_per_second: u64,
    /// `[uplink] reconnect_max` (the edge's default when `None`).
    pub reconnect_max: Option<&'static str>,
}

impl UplinkOptions {
    pub fn to(hub: &LabGroup) -> Self {
        UplinkOptions {
            hub_group: hub.options.site.clone(),
            hubs: hub.nodes.iter().map(|n| (n.id, n.raft_advertise)).collect(),
            max_unshipped_bytes: "1GiB".into(),
            batch_delay: "5ms",
            max_bytes_per_second: 0,
            reconnect_max: None,
        }
    }
}

/// Timing and snapshot knobs of a lab group.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    pub kind: GroupKind,
    /// The site (edge) or hub group name (hub).
    pub site: String,
    /// Nodes bind QUIC on 127.0.0.(ip_base + id): groups of one lab get disjoint ranges, so
    /// relays can cut links by source address.
    pub ip_base: u32,
    /// Copy the CA from this directory instead of making a new one (one CA per lab).
    pub ca_dir: Option<PathBuf>,
    /// Edge: ship to this hub group.
    pub uplink: Option<UplinkOptions>,
    /// Hub: the sites this group owns (empty: every site).
    pub hub_sites: Vec<String>,
    pub heartbeat: &'static str,
    pub election_timeout: &'static str,
    /// `[raft] election_timeout_max`; `None` leaves the daemon's default (2x the minimum).
    pub election_timeout_max: Option<&'static str>,
    pub snapshot_every_entries: u64,
    pub log_entries_kept_after_snapshot: u64,
    pub write_timeout: &'static str,
    /// Put a UDP relay in front of every node (needed to cut links).
    pub relays: bool,
    /// Extra environment for every node process (e.g. systemd's NOTIFY_SOCKET).
    pub env: Vec<(String, String)>,
    /// Where each node runs (index = id - 1), if not on loopback: its own address, maybe in
    /// its own network namespace (`netns::SiteNetwork`). Such nodes use fixed ports.
    pub hosts: Vec<NodeHost>,
    /// Prefix of every command that runs the binary, e.g. `["qemu-aarch64-static"]` to run
    /// an ARM build under emulation.
    pub launcher: Vec<String>,
    /// The daemon binary, if not the one `binary` finds (e.g. a cross-built one; on ssh
    /// hosts, its path there).
    pub binary: Option<PathBuf>,
    /// A binary of this machine for making certificates, when `binary` does not run here.
    pub tool: Option<PathBuf>,
    /// `[storage]` keys added to every node's config (e.g. `unsafe_no_fsync = true`).
    pub storage: Vec<(String, String)>,
    /// `[node] runtime_threads` of every node; `None` leaves the daemon's default (one per
    /// CPU core).
    pub runtime_threads: Option<usize>,
    /// Put every node's data directory on its own power-cut disk (`powercut`; needs
    /// /dev/fuse and root), so [`LabGroup::power_cut`] can drop what it never fsynced.
    pub power_cut_disks: bool,
}

/// A node's own host: an address, and how the node is run there: in a network namespace
/// of this machine, or on another machine over ssh.
#[derive(Clone, Debug, Default)]
pub struct NodeHost {
    pub ip: Option<IpAddr>,
    pub netns: Option<String>,
    pub ssh: Option<SshHost>,
    /// Client API port on the host's loopback (default `HOST_HTTP_PORT`).
    pub api_port: Option<u16>,
}

/// A machine reached over ssh (a real gateway). Its node's files are pushed under
/// `remote_dir`; its loopback-only client API is reached through an ssh tunnel; the node
/// runs in an ssh session, so killing the session kills the node (SIGHUP on hang-up).
#[derive(Clone, Debug)]
pub struct SshHost {
    /// ssh arguments ending with the destination, e.g. `["-p", "22", "root@10.0.0.21"]`.
    pub args: Vec<String>,
    /// Where the node's directory and certificates go on the host.
    pub remote_dir: PathBuf,
}

/// QUIC port of a node on its own host.
pub const HOST_RAFT_PORT: u16 = 7001;
/// HTTP port of a node on its own host.
pub const HOST_HTTP_PORT: u16 = 8001;

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            kind: GroupKind::Edge,
            site: "site-1".into(),
            ip_base: 10,
            ca_dir: None,
            uplink: None,
            hub_sites: Vec::new(),
            heartbeat: "100ms",
            election_timeout: "1s",
            election_timeout_max: None,
            snapshot_every_entries: shared::config::defaults::snapshot_every_entries(),
            log_entries_kept_after_snapshot:
                shared::config::defaults::log_entries_kept_after_snapshot(),
            write_timeout: "5s",
            relays: false,
            env: Vec::new(),
            hosts: Vec::new(),
            launcher: Vec::new(),
            binary: None,
            tool: None,
            storage: Vec::new(),
            runtime_threads: None,
            power_cut_disks: false,
        }
    }
}

impl GroupOptions {
    /// Fast failure detection for tests (generous enough for 2-core CI).
    pub fn fast() -> Self {
        GroupOptions {
            heartbeat: "50ms",
            election_timeout: "500ms",
            write_timeout: "3s",
            ..GroupOptions::default()
        }
    }
}

/// One node process of a lab group.
pub struct LabNode {
    pub id: u64,
    pub dir: PathBuf,
    pub raft_listen: SocketAddr,
    pub raft_advertise: SocketAddr,
    /// The client API's URL as this harness reaches it.
    pub http: String,
    /// Where the node binds its client API (loopback of its host).
    pub http_listen: String,
    child: Option<Child>,
    /// ssh hosts: the tunnel to the client API.
    tunnel: Option<Child>,
    relay: Option<Relay>,
    /// Under `data/`, with `GroupOptions::power_cut_disks`. Dropped after the process is
    /// killed (`LabGroup`'s drop), so the unmount never waits on a live node.
    disk: Option<powercut::PowerCutDisk>,
}

impl LabNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// The loopback IP this node sends its QUIC packets from.
    pub fn ip(&self) -> IpAddr {
        self.raft_listen.ip()
    }
}

/// One Raft group of separate processes: a site's `openclaw-edge` nodes, or a hub group's
/// `openclaw-hub` nodes.
pub struct LabGroup {
    pub dir: PathBuf,
    pub options: GroupOptions,
    pub nodes: Vec<LabNode>,
    bin: PathBuf,
    pub http: reqwest::Client,
}

fn node_ip(base: u32, id: u64) -> IpAddr {
    let loopback = u32::from(Ipv4Addr::new(127, 0, 0, 0));
    IpAddr::V4(Ipv4Addr::from(loopback + (base + id as u32) % (1 << 24)))
}

/// Ports this process has handed out. A port is probed free by binding port 0 and closing,
/// and the node binds it only when it starts, so the kernel may hand the same port out again
/// meanwhile (a hub group created while an edge group's nodes are not started yet): the edge
/// node then cannot bind it, and the lab's readiness probe gets the other node's answer.
static HANDED_OUT_PORTS: std::sync::Mutex<BTreeSet<(bool, IpAddr, u16)>> =
    std::sync::Mutex::new(BTreeSet::new());

/// Probes with `probe` until it returns a port this process has not handed out before.
fn unique_port(
    udp: bool,
    ip: IpAddr,
    probe: impl Fn() -> std::io::Result<u16>,
) -> anyhow::Result<u16> {
    const ATTEMPTS: usize = 1000;
    for _ in 0..ATTEMPTS {
        let port = probe()?;
        let mut handed_out = HANDED_OUT_PORTS
            .lock()
            .map_err(|_| anyhow::anyhow!("port registry poisoned"))?;
        if handed_out.insert((udp, ip, port)) {
            return Ok(port);
        }
    }
    anyhow::bail!(
        "no unused {} port on {ip} after {ATTEMPTS} probes",
        if udp { "UDP" } else { "TCP" }
    )
}

fn free_udp_port(ip: IpAddr) -> anyhow::Result<u16> {
    unique_port(true, ip, || {
        Ok(std::net::UdpSocket::bind((ip, 0))?.local_addr()?.port())
    })
}

fn free_tcp_port() -> anyhow::Result<u16> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    unique_port(false, loopback, || {
        Ok(std::net::TcpListener::bind((loopback, 0))?
            .local_addr()?
            .port())
    })
}

impl LabGroup {
    /// Creates certificates and configs for nodes `1..=n` and starts them as one group.
    pub async fn start(dir: &Path, n: u64, options: GroupOptions) -> anyhow::Result<LabGroup> {
        let mut group = Self::create(dir, n, options).await?;
        for id in group.ids() {
            group.spawn(id)?;
        }
        Ok(group)
    }

    /// Creates certificates, configs and directories for nodes `1..=n` of a new group without
    /// starting them (e.g. to reseed them first); `restart` each to start it.
    pub async fn create(dir: &Path, n: u64, options: GroupOptions) -> anyhow::Result<LabGroup> {
        let bin = match (&options.binary, options.kind) {
            (Some(bin), _) => bin.clone(),
            (None, GroupKind::Edge) => binary("openclaw-edge", "OPENCLAW_EDGE_BIN")?,
            (None, GroupKind::Hub) => binary("openclaw-hub", "OPENCLAW_HUB_BIN")?,
        };
        std::fs::create_dir_all(dir)?;
        let certs = dir.join("certs");
        match &options.ca_dir {
            Some(ca) => {
                std::fs::create_dir_all(&certs)?;
                for file in ["ca.pem", "ca.key"] {
                    std::fs::copy(ca.join(file), certs.join(file))
                        .with_context(|| format!("copying {file} from {}", ca.display()))?;
                }
            }
            None => {
                let (launcher, tool) = cert_tool(&options, &bin);
                run_with(&launcher, &tool, &["certs", "ca", "--dir"], &certs)?
            }
        }
        let mut group = LabGroup {
            dir: dir.to_owned(),
            options,
            nodes: Vec::new(),
            bin,
            http: reqwest::Client::builder().timeout(HTTP_TIMEOUT).build()?,
        };
        for id in 1..=n {
            group.prepare_node(id).await?;
        }
        let members: Vec<u64> = (1..=n).collect();
        for id in 1..=n {
            group.write_config(id, Some(&members))?;
        }
        Ok(group)
    }

    /// [`start`](Self::start), then waits until every node serves.
    pub async fn start_ready(
        dir: &Path,
        n: u64,
        options: GroupOptions,
    ) -> anyhow::Result<LabGroup> {
        let group = Self::start(dir, n, options).await?;
        group.wait_ready(&group.ids()).await?;
        Ok(group)
    }

    async fn prepare_node(&mut self, id: u64) -> anyhow::Result<()> {
        let certs = self.dir.join("certs");
        let (launcher, tool) = cert_tool(&self.options, &self.bin);
        run_with(
            &launcher,
            &tool,
            &[
                "certs",
                "node",
                "--site",
                &self.options.site,
                "--id",
                &id.to_string(),
                "--dir",
            ],
            &certs,
        )?;
        let host = self.host(id);
        let ip = host
            .as_ref()
            .and_then(|h| h.ip)
            .unwrap_or_else(|| node_ip(self.options.ip_base, id));
        let raft_port = match host {
            Some(_) => HOST_RAFT_PORT,
            None => free_udp_port(ip)?,
        };
        let raft_listen = SocketAddr::new(ip, raft_port);
        // The client API binds to loopback only (DESIGN.md §5); on its own host a node is
        // reached through that host's forwarder (`netns::SiteNetwork` runs one) or an ssh
        // tunnel from a local port.
        let (http_listen, http) = match &host {
            Some(h) => {
                let port = h.api_port.unwrap_or(HOST_HTTP_PORT);
                let url = match h.ssh {
                    Some(_) => format!("http://127.0.0.1:{}", free_tcp_port()?),
                    None => format!("http://{ip}:{port}"),
                };
                (format!("127.0.0.1:{port}"), url)
            }
            None => {
                let listen = format!("127.0.0.1:{}", free_tcp_port()?);
                (listen.clone(), format!("http://{listen}"))
            }
        };
        let relay = if self.options.relays {
            Some(Relay::start("127.0.0.1:0".parse()?, raft_listen).await?)
        } else {
            None
        };
        let raft_advertise = relay.as_ref().map_or(raft_listen, |r| r.listen);
        let dir = self.dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir)?;
        let disk = if self.options.power_cut_disks {
            Some(powercut::PowerCutDisk::mount(&dir.join("data"))?)
        } else {
            None
        };
        self.nodes.push(LabNode {
            id,
            dir,
            raft_listen,
            raft_advertise,
            http,
            http_listen,
            child: None,
            tunnel: None,
            relay,
            disk,
        });
        Ok(())
    }

    fn write_config(&self, id: u64, bootstrap_members: Option<&[u64]>) -> anyhow::Result<()> {
        let node = self.node(id)?;
        let o = &self.options;
        let certs = self.dir.join("certs");
        let name_key = match o.kind {
            GroupKind::Edge => "site",
            GroupKind::Hub => "group",
        };
        let runtime_threads = o
            .runtime_threads
            .map(|threads| format!("runtime_threads = {threads}\n"))
            .unwrap_or_default();
        let mut text = format!(
            "[node]\nid = {id}\n{name_key} = \"{}\"\ndata_dir = \"{}\"\n{runtime_threads}\n[raft]\nlisten = \"{}\"\nadvertise = \"{}\"\n\
             heartbeat_interval = \"{}\"\nelection_timeout = \"{}\"\n{}snapshot_every_entries = {}\n\
             log_entries_kept_after_snapshot = {}\nkeep_alive = \"1s\"\nidle_timeout = \"5s\"\n\n\
             [http]\nlisten = \"{}\"\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [api]\nwrite_timeout = \"{}\"\nread_timeout = \"{}\"\n\n",
            o.site,
            node.dir.join("data").display(),
            node.raft_listen,
            node.raft_advertise,
            o.heartbeat,
            o.election_timeout,
            o.election_timeout_max
                .map(|max| format!("election_timeout_max = \"{max}\"\n"))
                .unwrap_or_default(),
            o.snapshot_every_entries,
            o.log_entries_kept_after_snapshot,
            node.http_listen,
            certs.join("ca.pem").display(),
            certs.join(format!("node-{id}.pem")).display(),
            certs.join(format!("node-{id}.key")).display(),
            o.write_timeout,
            o.write_timeout,
        );
        match bootstrap_members {
            Some(members) => {
                text.push_str("[cluster]\nbootstrap = true\n");
                for m in members {
                    let peer = self.node(*m)?;
                    text.push_str(&format!(
                        "[[cluster.members]]\nid = {m}\nraft = \"{}\"\nhttp = \"{}\"\n",
                        peer.raft_advertise, peer.http
                    ));
                }
            }
            None => text.push_str("[cluster]\nbootstrap = false\n"),
        }
        if let Some(u) = &o.uplink {
            text.push_str(&format!(
                "\n[uplink]\nhub_group = \"{}\"\nmax_unshipped_bytes = \"{}\"\nbatch_delay = \"{}\"\nmax_bytes_per_second = {}\n",
                u.hub_group, u.max_unshipped_bytes, u.batch_delay, u.max_bytes_per_second
            ));
            if let Some(max) = u.reconnect_max {
                text.push_str(&format!("reconnect_max = \"{max}\"\n"));
            }
            for (hub_id, addr) in &u.hubs {
                text.push_str(&format!(
                    "[[uplink.hubs]]\nid = {hub_id}\naddr = \"{addr}\"\n"
                ));
            }
        }
        if o.kind == GroupKind::Hub {
            let sites: Vec<String> = o.hub_sites.iter().map(|s| format!("\"{s}\"")).collect();
            text.push_str(&format!("\n[hub]\nsites = [{}]\n", sites.join(", ")));
        }
        if !o.storage.is_empty() {
            text.push_str("\n[storage]\n");
            for (key, value) in &o.storage {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        std::fs::write(node.config_path(), text)?;
        Ok(())
    }

    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let env = self.options.env.clone();
        let log_path = self.node(id)?.dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let host = self.host(id);
        if let Some(ssh) = host.as_ref().and_then(|h| h.ssh.clone()) {
            return self.spawn_over_ssh(id, &ssh, log);
        }
        let netns = host.and_then(|h| h.netns);
        let launcher = self.options.launcher.clone();
        let node = self.node_mut(id)?;
        let mut prefix: Vec<String> = Vec::new();
        if let Some(ns) = netns {
            prefix.extend(["ip".into(), "netns".into(), "exec".into(), ns]);
        }
        prefix.extend(launcher);
        let child = prefixed(&prefix, &bin)
            .arg("run")
            .arg("--config")
            .arg(node.config_path())
            .env("RUST_LOG", rust_log())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(log)
            .envs(env)
            .spawn()
            .with_context(|| format!("starting node {id}"))?;
        node.child = Some(child);
        Ok(())
    }

    /// Where node `id` runs, if not on loopback.
    fn host(&self, id: u64) -> Option<NodeHost> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.options.hosts.get(index).cloned()
    }

    /// Starts node `id` on an ssh host: pushes its directory (config rewritten for the
    /// remote paths) and the certificates, opens the API tunnel, and runs it in a session.
    fn spawn_over_ssh(&mut self, id: u64, ssh: &SshHost, log: std::fs::File) -> anyhow::Result<()> {
        let node_dir = format!("node-{id}");
        let local = self.dir.display().to_string();
        let remote = ssh.remote_dir.display().to_string();
        let config = std::fs::read_to_string(self.node(id)?.config_path())?;
        let remote_config = self.dir.join(&node_dir).join("config.remote.toml");
        std::fs::write(&remote_config, config.replace(&local, &remote))?;
        let mut pack = Command::new("tar")
            .arg("-C")
            .arg(&self.dir)
            .args(["-cf", "-", "certs", &node_dir])
            .stdout(Stdio::piped())
            .spawn()
            .context("tar")?;
        let pushed = Command::new("ssh")
            .args(&ssh.args)
            .arg(format!("mkdir -p '{remote}' && tar -C '{remote}' -xf -"))
            .stdin(pack.stdout.take().context("tar output")?)
            .output()
            .context("ssh (push)")?;
        pack.wait()?;
        if !pushed.status.success() {
            bail!(
                "pushing node {id} over ssh: {}",
                String::from_utf8_lossy(&pushed.stderr)
            );
        }
        // A node whose session was killed must be gone before it boots again (else the
        // "power cut" was not one): its old process exits on the hang-up.
        let config_path = format!("{remote}/{node_dir}/config.remote.toml");
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        loop {
            let running = Command::new("ssh")
                .args(&ssh.args)
                // "[/]…": a pattern that does not match this shell's own command line.
                .arg(format!(
                    "pgrep -f '[/]{}' >/dev/null",
                    config_path.trim_start_matches('/')
                ))
                .status()
                .context("ssh (pgrep)")?;
            if !running.success() {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("node {id} still runs on its host {STOP_TIMEOUT:?} after its session ended");
            }
            std::thread::sleep(POLL);
        }
        let bin = self.bin.display().to_string();
        let node = self.node_mut(id)?;
        if node.tunnel.is_none() {
            let local_port = node.http.rsplit(':').next().unwrap_or_default().to_owned();
            let tunnel = Command::new("ssh")
                .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
                .arg(format!("127.0.0.1:{local_port}:{}", node.http_listen))
                .args(&ssh.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("ssh (API tunnel)")?;
            node.tunnel = Some(tunnel);
        }
        let rust_log = rust_log();
        let child = Command::new("ssh")
            .arg("-tt")
            .args(&ssh.args)
            .arg(format!(
                "RUST_LOG={rust_log} exec {bin} run --config '{config_path}'"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {id} over ssh"))?;
        node.child = Some(child);
        Ok(())
    }

    pub fn node(&self, id: u64) -> anyhow::Result<&LabNode> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> anyhow::Result<&mut LabNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    /// The last `lines` lines of a node's log (for failure messages).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = self
            .node(id)
            .ok()
            .and_then(|n| std::fs::read_to_string(n.dir.join("node.log")).ok())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn url(&self, id: u64) -> String {
        self.node(id).map(|n| n.http.clone()).unwrap_or_default()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Running node ids.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// kill -9.
    pub fn kill9(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Freezes node `id` (SIGSTOP): its sockets stay open and its peers' datagrams queue
    /// unanswered, as on a frozen VM or a hung disk. `resume` undoes it.
    pub fn pause(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, Signal::SIGSTOP)
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, Signal::SIGCONT)
    }

    fn signal(&self, id: u64, signal: Signal) -> anyhow::Result<()> {
        let pid = self.node(id)?.pid().context("node not running")?;
        send_signal(pid, signal)
    }

    /// Power loss of nodes `ids` at once: each is killed -9, then its disk loses everything
    /// it never fsynced (`GroupOptions::power_cut_disks`). They stay down; `restart` them.
    pub fn power_cut(&mut self, ids: &[u64]) -> anyhow::Result<powercut::CutReport> {
        for &id in ids {
            self.kill9(id)?;
        }
        let mut total = powercut::CutReport::default();
        for &id in ids {
            let disk = self
                .node_mut(id)?
                .disk
                .as_mut()
                .with_context(|| format!("node {id} has no power-cut disk"))?;
            let report = disk.power_cut()?;
            total.files_reverted += report.files_reverted;
            total.unsynced_bytes += report.unsynced_bytes;
            total.entries_reverted += report.entries_reverted;
        }
        Ok(total)
    }

    /// Whether the nodes run on power-cut disks.
    pub fn has_power_cut_disks(&self) -> bool {
        self.nodes.iter().any(|n| n.disk.is_some())
    }

    /// The power-cut disks' counters, summed over the nodes.
    pub fn disk_stats(&self) -> powercut::VolumeStats {
        let mut total = powercut::VolumeStats::default();
        for stats in self
            .nodes
            .iter()
            .filter_map(|n| n.disk.as_ref().map(|d| d.stats()))
        {
            total.fsyncs += stats.fsyncs;
            total.dir_fsyncs += stats.dir_fsyncs;
            total.bytes_written += stats.bytes_written;
            total.cuts += stats.cuts;
        }
        total
    }

    /// SIGTERM, then wait for a clean exit; returns its exit status code.
    pub async fn stop(&mut self, id: u64) -> anyhow::Result<Option<i32>> {
        let node = self.node_mut(id)?;
        let Some(mut child) = node.child.take() else {
            return Ok(None);
        };
        // Already gone is fine: the wait below reaps it.
        let _ = send_signal(child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("node {id} did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERMs every running node at once, waits for them all under one
    /// [`STOP_TIMEOUT`], and kills -9 those still running then. Returns the nodes that had
    /// to be killed (empty when every node exited on its own).
    pub async fn stop_all(&mut self) -> anyhow::Result<Vec<u64>> {
        let mut stopping = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = node.child.take() {
                let _ = send_signal(child.id(), Signal::SIGTERM);
                stopping.push((node.id, child));
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            let mut still = Vec::new();
            for (id, mut child) in stopping {
                if child.try_wait()?.is_none() {
                    still.push((id, child));
                }
            }
            stopping = still;
            if stopping.is_empty() {
                return Ok(Vec::new());
            }
            tokio::time::sleep(POLL).await;
        }
        let mut killed = Vec::new();
        for (id, mut child) in stopping {
            child.kill()?;
            child.wait()?;
            killed.push(id);
        }
        Ok(killed)
    }

    /// Starts a stopped node again from its directory and config.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        if self.node(id)?.child.is_some() {
            bail!("node {id} is running");
        }
        self.spawn(id)
    }

    /// Prepares and starts a new node that joins (bootstrap = false); add it with the API.
    pub async fn spawn_joiner(&mut self, id: u64) -> anyhow::Result<()> {
        self.prepare_node(id).await?;
        self.write_config(id, None)?;
        self.spawn(id)
    }

    /// Cuts every link between the nodes in `a` and those in `b`, both directions.
    pub fn partition(&self, a: &[u64], b: &[u64]) -> anyhow::Result<()> {
        for (from, to) in a.iter().flat_map(|x| b.iter().map(move |y| (*x, *y))) {
            for (src, dst) in [(from, to), (to, from)] {
                let relay = self
                    .node(dst)?
                    .relay
                    .as_ref()
                    .context("group started without relays")?;
                relay.control.block(self.node(src)?.ip());
            }
        }
        Ok(())
    }

    /// Drops every datagram from the nodes in `from` to those in `to`, whichever side opened
    /// the connection, while `to` → `from` still flows (an asymmetric partition).
    pub fn cut_one_way(&self, from: &[u64], to: &[u64]) -> anyhow::Result<()> {
        let relay = |id: u64| -> anyhow::Result<&Relay> {
            self.node(id)?
                .relay
                .as_ref()
                .context("group started without relays")
        };
        for (&f, &t) in from.iter().flat_map(|f| to.iter().map(move |t| (f, t))) {
            // f's connections to t enter t's relay; t's connections to f are answered out
            // of f's relay.
            relay(t)?.control.block_inbound(self.node(f)?.ip());
            relay(f)?.control.block_outbound(self.node(t)?.ip());
        }
        Ok(())
    }

    /// Applies `faults` to every link of the group (each node's relay, both directions).
    pub fn set_faults(&self, faults: relay::Faults) -> anyhow::Result<()> {
        self.set_faults_for(None, faults)
    }

    /// Applies `faults` to the links between this group's nodes and `peers` only (e.g. a
    /// site's uplink at the hub's relays), both directions; the group's own links stay clean.
    pub fn set_faults_from(&self, peers: &[IpAddr], faults: relay::Faults) -> anyhow::Result<()> {
        self.set_faults_for(Some(peers.iter().copied().collect()), faults)
    }

    fn set_faults_for(
        &self,
        peers: Option<std::collections::HashSet<IpAddr>>,
        faults: relay::Faults,
    ) -> anyhow::Result<()> {
        for node in &self.nodes {
            node.relay
                .as_ref()
                .context("group started without relays")?
                .control
                .set_faults_for(peers.clone(), faults);
        }
        Ok(())
    }

    /// Drops every packet arriving at this group's nodes from `sources` (e.g. cut a site's
    /// uplink at the hub's relays), or lets them through again.
    pub fn block_sources(&self, sources: &[IpAddr], blocked: bool) -> anyhow::Result<()> {
        for node in &self.nodes {
            let relay = node
                .relay
                .as_ref()
                .context("group started without relays")?;
            for ip in sources {
                if blocked {
                    relay.control.block(*ip);
                } else {
                    relay.control.unblock(*ip);
                }
            }
        }
        Ok(())
    }

    /// The source addresses of this group's nodes.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.nodes.iter().map(|n| n.ip()).collect()
    }

    /// JSON GET of `path` on node `id`.
    pub async fn get_json(&self, id: u64, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url(id)))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("GET {path} on node {id}: HTTP {status}: {body}");
        }
        Ok(body)
    }

    pub fn heal(&self) {
        for node in &self.nodes {
            if let Some(relay) = &node.relay {
                relay.control.unblock_all();
                relay.control.clear_faults();
            }
        }
    }

    pub async fn status(&self, id: u64) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/v1/status", self.url(id)))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Waits until every listed node serves `/readyz`.
    pub async fn wait_ready(&self, ids: &[u64]) -> anyhow::Result<()> {
        for &id in ids {
            let url = format!("{}/readyz", self.url(id));
            wait_until(START_TIMEOUT, &format!("node {id} ready"), || async {
                self.http
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            })
            .await?;
        }
        Ok(())
    }

    /// The leader that every listed running node agrees on.
    pub async fn leader(&self, among: &[u64]) -> anyhow::Result<u64> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(leader) = self.agreed_leader(among).await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no leader agreed by nodes {among:?} within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn agreed_leader(&self, among: &[u64]) -> Option<u64> {
        let mut leaders = Vec::new();
        for &id in among {
            leaders.push(self.status(id).await.ok()?["leader_id"].as_u64());
        }
        let first = (*leaders.first()?)?;
        (leaders.iter().all(|l| *l == Some(first)) && among.contains(&first)).then_some(first)
    }

    /// A metric's value on a node.
    pub async fn metric(&self, id: u64, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(id)))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .with_context(|| format!("metric {name} not on node {id}"))
    }

    /// `[{"id","http","pid"}]` of every node.
    pub fn node_endpoints(&self) -> Vec<Value> {
        self.nodes
            .iter()
            .map(|n| serde_json::json!({"id": n.id, "http": n.http, "pid": n.pid()}))
            .collect()
    }

    /// `{"sites":[{"site":..,"nodes":[{"id","http","pid"}]}],"hub":[]}` for a lone group.
    pub fn endpoints(&self) -> Value {
        serde_json::json!({
            "sites": [{"site": self.options.site, "nodes": self.node_endpoints()}],
            "hub": [],
        })
    }
}

impl Drop for LabGroup {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            for mut child in [node.child.take(), node.tunnel.take()]
                .into_iter()
                .flatten()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn run(bin: &Path, args: &[&str], dir: &Path) -> anyhow::Result<()> {
    run_with(&[], bin, args, dir)
}

/// The binary (and its launcher) that makes a group's certificates on this machine.
fn cert_tool(options: &GroupOptions, bin: &Path) -> (Vec<String>, PathBuf) {
    match &options.tool {
        Some(tool) => (Vec::new(), tool.clone()),
        None => (options.launcher.clone(), bin.to_owned()),
    }
}

/// A command running `bin` behind `prefix` (e.g. `ip netns exec NS`, an emulator).
fn prefixed(prefix: &[String], bin: &Path) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// [`run`] through a launcher prefix (e.g. an emulator).
pub fn run_with(launcher: &[String], bin: &Path, args: &[&str], dir: &Path) -> anyhow::Result<()> {
    let out = prefixed(launcher, bin).args(args).arg(dir).output()?;
    if !out.status.success() {
        bail!(
            "{} {args:?} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    what: &str,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An HTTP answer: status, body, selected headers.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request; a transport error is an `Err`.
pub async fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> anyhow::Result<Answer> {
    let mut req = http.request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?.to_vec();
    Ok(Answer {
        status,
        body,
        headers,
    })
}
