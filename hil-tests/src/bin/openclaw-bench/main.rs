//! `openclaw-bench`: fixed workloads against a local lab, printed as one table (and JSON).
//!
//! It starts the topology itself through `openclaw-lab up` (a separate process, the same one
//! the README's quick start uses), reads DIR/endpoints.json, and drives the nodes' HTTP API
//! from concurrent clients: KV writes, stream appends, linearizable and stale reads. With
//! `--compare` it also starts a 3-member etcd on loopback (Debian's etcd-server) and runs the
//! same KV workloads through etcd's v3 JSON gateway, then a 3-node NATS JetStream cluster
//! twice (an R3 file-storage stream with nats-server's default deferred fsync, then with
//! `sync_interval: always`, fsync before ack) and runs the appends workload on it through the
//! minimal client in `openclaw_hil_tests::nats`. hil-tests/install-compare.sh installs both.
//! Then (`failover.rs`) it kills a 3-node group's leader `--failovers` times per election
//! timing and times how long writes stop. Each workload also records the CPU (user +
//! system, from /proc) per operation of the servers together and of this load generator:
//! on a machine whose cores they share, that is what bounds the throughput figures.
//! Figures are measurements, never assertions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use breakdown::Breakdown;
use clap::Parser;
use openclaw_hil_tests::cpu_seconds;
use openclaw_hil_tests::http1;
use openclaw_hil_tests::nats::{self, PubAck};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

mod breakdown;
mod compare;
mod failover;

/// Value size of every KV write and stream append, in bytes (the fixed workload).
/// Every operation sends fresh random bytes (`random_value`): fjall compresses journal
/// records over 4 KiB with LZ4, and a batch of identical values would compress to almost
/// nothing, flattering the disk figures against etcd and NATS, which compress nothing.
const VALUE_BYTES: usize = 256;
/// How long the lab (or etcd) may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Keys the read workloads spread over.
const READ_KEYS: usize = 1000;
/// Deadline of one benchmark request (HTTP or NATS publish): a stuck request counts as an
/// error instead of holding the workload's end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of every wait for a system to come up.
const POLL: Duration = Duration::from_millis(100);
/// The OpenClaw stream every append goes to (one stream, like the one JetStream stream).
const OPENCLAW_STREAM: &str = "bench";

#[derive(Parser)]
#[command(
    name = "openclaw-bench",
    about = "Benchmarks a local OpenClaw edge group (and etcd and NATS JetStream with --compare)"
)]
struct Args {
    /// Seconds each workload runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Client concurrency levels for the write workload.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Client concurrency levels for the stream appends workload (default: --clients).
    #[arg(long, value_delimiter = ',')]
    append_clients: Option<Vec<usize>>,
    /// Client concurrency levels for the keyed appends workload: every append carries a
    /// fresh Idempotency-Key (NATS: Nats-Msg-Id), as a client that retries safely sends
    /// them. 0 skips it.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    keyed_append_clients: Vec<usize>,
    /// Client concurrency levels for the conditional writes workload: each client rewrites
    /// its own key only if it is still at the revision it last wrote (OpenClaw: If-Match;
    /// etcd: a txn comparing the key's mod_revision), a read-modify-write loop. 0 skips it.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    conditional_clients: Vec<usize>,
    /// Clients for the read workloads.
    #[arg(long, default_value_t = 16)]
    read_clients: usize,
    /// Edge nodes in the group.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Also run the KV workloads against a 3-member etcd (needs `etcd` on PATH) and the
    /// appends workload against a 3-node NATS JetStream cluster (needs nats-server >= 2.10
    /// for the fsync-before-ack run); hil-tests/install-compare.sh installs both.
    #[arg(long)]
    compare: bool,
    /// The nats-server binary for --compare (default: $OPENCLAW_COMPARE_DIR, else
    /// /opt/openclaw-compare, `nats/usr/sbin/nats-server` below it; then PATH).
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Where to write the table as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also run a hub group of this many nodes that the site ships every event to (the
    /// edge then pays for its outbox and shipper; on one machine the hub shares the CPUs).
    #[arg(long, default_value_t = 0)]
    hub_nodes: usize,
    /// Measure an already running lab (its endpoints.json) instead of starting one.
    #[arg(long)]
    endpoints: Option<PathBuf>,
    /// Working directory (default: a fresh temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leader kill -9s to time (writes resume after each), per election timing; 0 skips.
    #[arg(long, default_value_t = 20)]
    failovers: usize,
}

/// One measured workload.
#[derive(Default, Clone)]
pub(crate) struct Figures {
    ops: u64,
    errors: u64,
    seconds: f64,
    pub(crate) latencies_us: Vec<u64>,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
    }
}

/// A system under test: how to write and read one key.
#[derive(Clone)]
enum Target {
    OpenClaw { nodes: Vec<String> },
    Etcd { nodes: Vec<String> },
}

#[derive(Clone, Copy, PartialEq)]
enum Read {
    Linearizable,
    Stale,
}

impl Target {
    fn nodes(&self) -> &[String] {
        match self {
            Target::OpenClaw { nodes } | Target::Etcd { nodes } => nodes,
        }
    }

    async fn put(
        &self,
        clients: &Clients,
        client: usize,
        key: &str,
        value: &[u8],
    ) -> anyhow::Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Target::OpenClaw { .. } => {
                let path = format!("/v1/kv/{key}");
                clients.send(client, "PUT", &path, &[], value).await?;
            }
            Target::Etcd { .. } => {
                let body = json!({"key": b64.encode(key), "value": b64.encode(value)});
                let body = serde_json::to_vec(&body)?;
                clients
                    .send(client, "POST", "/v3/kv/put", JSON, &body)
                    .await?;
            }
        }
        Ok(())
    }

    /// Puts `value` at `key` only if the key is at `revision` (0: absent); returns the key's
    /// new revision. Fails if the condition did not hold.
    async fn put_if(
        &self,
        clients: &Clients,
        client: usize,
        key: &str,
        value: &[u8],
        revision: u64,
    ) -> anyhow::Result<u64> {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Target::OpenClaw { .. } => {
                let path = format!("/v1/kv/{key}");
                let expected = revision.to_string();
                let headers = [("If-Match", expected.as_str())];
                let response = clients.send(client, "PUT", &path, &headers, value).await?;
                let reply: Value = serde_json::from_slice(&response.body)?;
                reply["revision"]
                    .as_u64()
                    .context("conditional put reply without revision")
            }
            Target::Etcd { .. } => {
                let body = json!({
                    "compare": [{
                        "key": b64.encode(key),
                        "result": "EQUAL",
                        "target": "MOD",
                        "mod_revision": revision.to_string(),
                    }],
                    "success": [{
                        "request_put": {"key": b64.encode(key), "value": b64.encode(value)},
                    }],
                });
                let body = serde_json::to_vec(&body)?;
                let response = clients
                    .send(client, "POST", "/v3/kv/txn", JSON, &body)
                    .await?;
                let reply: Value = serde_json::from_slice(&response.body)?;
                if reply["succeeded"] != json!(true) {
                    bail!("etcd txn: the key was not at revision {revision}: {reply}");
                }
                reply["header"]["revision"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .context("etcd txn reply without header.revision")
            }
        }
    }

    async fn get(
        &self,
        clients: &Clients,
        client: usize,
        key: &str,
        mode: Read,
    ) -> anyhow::Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Target::OpenClaw { .. } => {
                let consistency = if mode == Read::Stale {
                    "stale"
                } else {
                    "linearizable"
                };
                let path = format!("/v1/kv/{key}?consistency={consistency}");
                clients.send(client, "GET", &path, &[], &[]).await?;
            }
            Target::Etcd { .. } => {
                let body = json!({"key": b64.encode(key), "serializable": mode == Read::Stale});
                let body = serde_json::to_vec(&body)?;
                clients
                    .send(client, "POST", "/v3/kv/range", JSON, &body)
                    .await?;
            }
        }
        Ok(())
    }
}

const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];

/// One keep-alive HTTP connection per bench client, client `c` to node `c % nodes`
/// (`openclaw_hil_tests::http1`). Each client uses only its own, so the locks are never
/// contended.
#[derive(Clone)]
struct Clients(Arc<Vec<tokio::sync::Mutex<http1::Connection>>>);

impl Clients {
    fn new(nodes: &[String], clients: usize) -> anyhow::Result<Clients> {
        let addrs = nodes
            .iter()
            .map(|n| http1::url_addr(n))
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            bail!("no nodes to send requests to");
        }
        let connections = (0..clients)
            .map(|c| {
                let addr = addrs[c % addrs.len()];
                tokio::sync::Mutex::new(http1::Connection::new(addr, REQUEST_TIMEOUT))
            })
            .collect();
        Ok(Clients(Arc::new(connections)))
    }

    /// Sends one request on client `client`'s connection; fails unless it succeeded.
    async fn send(
        &self,
        client: usize,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<http1::Response> {
        let mut connection = self.0[client % self.0.len()].lock().await;
        let response = connection.request(method, path, headers, body).await?;
        if !response.is_success() {
            bail!("HTTP {}", response.status);
        }
        Ok(response)
    }
}

/// Runs `clients` concurrent loops of `op` for `duration`.
async fn drive<F, Fut>(clients: usize, duration: Duration, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (stop, errors, op) = (stop.clone(), errors.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match op(client, i).await {
                    Ok(()) => latencies.push(t.elapsed().as_micros() as u64),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for task in tasks {
        if let Ok(l) = task.await {
            latencies_us.extend(l);
        }
    }
    Figures {
        ops: latencies_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        latencies_us,
    }
}

/// Bytes a process (`/proc/PID`) or one of its threads (`/proc/PID/task/TID`) has caused to
/// be written to storage.
fn write_bytes_at(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("io"))
        .ok()
        .and_then(|io| {
            io.lines().find_map(|l| {
                l.strip_prefix("write_bytes:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// The thread name of fjall's flush and compaction workers: what they write is the LSM's
/// share of the disk bytes (the journal is written by the threads that commit and fsync).
const LSM_WORKER_THREAD: &str = "fjall:worker";

/// Bytes the live threads named `name` of process `pid` have caused to be written.
fn thread_write_bytes(pid: u32, name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .map(|t| write_bytes_at(&t.path()))
        .sum()
}

fn proc_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            })
        })
        .unwrap_or(0)
}

struct Process {
    child: Child,
}

/// How long a lab (or etcd) may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM and wait, so the lab stops its nodes; kill_on_drop is only the fallback
        // (a SIGKILLed lab would leave its nodes running).
        if let Some(pid) = self.child.id() {
            let _ = openclaw_hil_tests::send_signal(pid, openclaw_hil_tests::Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

async fn wait_for_file(path: &Path) -> anyhow::Result<Value> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return Ok(v);
            }
        }
        if Instant::now() > deadline {
            bail!("{} did not appear within {START_TIMEOUT:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found next to openclaw-bench (build with cargo build --release --bins)",
            path.display()
        );
    }
    Ok(path)
}

async fn start_lab(
    dir: &Path,
    nodes: usize,
    hub_nodes: usize,
) -> anyhow::Result<(Process, Vec<String>, Vec<u32>)> {
    let lab_dir = dir.join("lab");
    let log = std::fs::File::create(dir.join("lab.log"))?;
    let child = Command::new(sibling("openclaw-lab")?)
        .args(["up", "--edge-nodes", &nodes.to_string()])
        .args(["--hub-nodes", &hub_nodes.to_string(), "--dir"])
        .arg(&lab_dir)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting openclaw-lab")?;
    let process = Process { child };
    let endpoints = wait_for_file(&lab_dir.join("endpoints.json")).await?;
    let (urls, pids) = read_endpoints(&endpoints)?;
    Ok((process, urls, pids))
}

/// The first site's node URLs and pids from an endpoints.json document.
fn read_endpoints(endpoints: &Value) -> anyhow::Result<(Vec<String>, Vec<u32>)> {
    let nodes = endpoints["sites"][0]["nodes"]
        .as_array()
        .context("endpoints.json has no nodes")?;
    let urls = nodes
        .iter()
        .filter_map(|n| n["http"].as_str().map(String::from))
        .collect();
    let pids = nodes
        .iter()
        .filter_map(|n| n["pid"].as_u64().map(|p| p as u32))
        .collect();
    Ok((urls, pids))
}

/// Every figure of one system, rows in the order they were measured (which is the order
/// the table prints them in).
#[derive(Default)]
struct Table {
    rows: Vec<(String, f64)>,
}

impl Table {
    fn insert(&mut self, row: impl Into<String>, value: f64) {
        self.rows.push((row.into(), value));
    }

    fn get(&self, row: &str) -> Option<f64> {
        self.rows.iter().find(|(r, _)| r == row).map(|(_, v)| *v)
    }

    /// Throughput, latency percentiles, errors, CPU per operation and disk bytes written per
    /// payload byte per node of one workload at one client level.
    fn record_level(
        &mut self,
        label: &str,
        figures: &Figures,
        cpu: Cpu,
        written: Written,
        nodes: usize,
    ) {
        self.insert(format!("{label} ops/s"), figures.per_second());
        self.record_cpu(label, figures, cpu);
        self.insert(format!("{label} p50 ms"), figures.percentile_ms(50.0));
        self.insert(format!("{label} p99 ms"), figures.percentile_ms(99.0));
        self.insert(format!("{label} p999 ms"), figures.percentile_ms(99.9));
        self.insert(format!("{label} errors"), figures.errors as f64);
        let payload = figures.ops * VALUE_BYTES as u64;
        if payload > 0 {
            let per_payload_byte = |bytes: u64| bytes as f64 / payload as f64 / nodes.max(1) as f64;
            self.insert(
                format!("{label} disk bytes/payload byte/node"),
                per_payload_byte(written.total),
            );
            if let Some(lsm) = written.lsm {
                self.insert(
                    format!("{label} disk bytes/payload byte/node, LSM flush+compaction"),
                    per_payload_byte(lsm),
                );
            }
        }
    }

    /// CPU per operation of the servers together and of this load generator: on a machine
    /// whose cores they share, what bounds a figure.
    fn record_cpu(&mut self, label: &str, figures: &Figures, cpu: Cpu) {
        if figures.ops == 0 {
            return;
        }
        let per_op_us = |seconds: f64| seconds * 1e6 / figures.ops as f64;
        self.insert(
            format!("{label} CPU µs/op, servers"),
            per_op_us(cpu.servers),
        );
        self.insert(
            format!("{label} CPU µs/op, load generator"),
            per_op_us(cpu.load_generator),
        );
    }
}

/// CPU seconds (user + system) of the servers together and of this process.
#[derive(Clone, Copy)]
struct Cpu {
    servers: f64,
    load_generator: f64,
}

impl Cpu {
    fn now(pids: &[u32]) -> Cpu {
        Cpu {
            servers: pids.iter().filter_map(|p| cpu_seconds(*p)).sum(),
            load_generator: cpu_seconds(std::process::id()).unwrap_or(0.0),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            servers: self.servers - before.servers,
            load_generator: self.load_generator - before.load_generator,
        }
    }
}

/// The largest resident set of `pids`, in MiB.
fn max_rss_mib(pids: &[u32]) -> f64 {
    pids.iter().map(|p| proc_rss_kib(*p)).max().unwrap_or(0) as f64 / 1024.0
}

/// Bytes written to storage by a set of processes over a workload.
#[derive(Clone, Copy)]
struct Written {
    total: u64,
    /// By fjall's flush and compaction workers (OpenClaw nodes only).
    lsm: Option<u64>,
}

impl Written {
    /// What `pids` have written so far; `split`: also their LSM workers' share.
    fn now(pids: &[u32], split: bool) -> Written {
        Written {
            total: pids
                .iter()
                .map(|p| write_bytes_at(Path::new(&format!("/proc/{p}"))))
                .sum(),
            lsm: split.then(|| {
                pids.iter()
                    .map(|p| thread_write_bytes(*p, LSM_WORKER_THREAD))
                    .sum()
            }),
        }
    }

    fn since(self, before: Written) -> Written {
        Written {
            total: self.total.saturating_sub(before.total),
            lsm: self.lsm.zip(before.lsm).map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

/// What the appends workload publishes to.
enum Appends {
    /// `POST /v1/streams/{stream}` spread over the nodes (followers forward to the leader).
    OpenClaw { nodes: Vec<String> },
    /// A JetStream publish (PUB with a reply inbox, acknowledged once stored on a quorum),
    /// one connection per client, clients spread over the servers.
    Nats { servers: Vec<SocketAddr> },
}

/// Appends without or with a deduplication key.
#[derive(Clone, Copy, PartialEq)]
enum AppendKind {
    Plain,
    /// Each append with a fresh key (OpenClaw's Idempotency-Key, NATS's Nats-Msg-Id), unique
    /// across runs, so every one is new and each system does its duplicate lookup.
    Keyed,
}

impl AppendKind {
    fn label(self) -> &'static str {
        match self {
            AppendKind::Plain => "appends",
            AppendKind::Keyed => "keyed appends",
        }
    }
}

/// The deduplication key of append `i` of client `c` in run `run` (`AppendKind::Keyed`).
fn append_key(kind: AppendKind, run: u64, c: usize, i: u64) -> Option<String> {
    (kind == AppendKind::Keyed).then(|| format!("bench-{run:016x}-{c}-{i}"))
}

impl Appends {
    async fn run(
        &self,
        kind: AppendKind,
        clients: usize,
        duration: Duration,
    ) -> anyhow::Result<Figures> {
        let run: u64 = rand::random();
        Ok(match self {
            Appends::OpenClaw { nodes } => {
                let connections = Clients::new(nodes, clients)?;
                drive(clients, duration, move |c, i| {
                    let connections = connections.clone();
                    async move {
                        let path = format!("/v1/streams/{OPENCLAW_STREAM}");
                        let body = random_value();
                        let key = append_key(kind, run, c, i);
                        let headers: &[(&str, &str)] = match &key {
                            Some(key) => &[("Idempotency-Key", key)],
                            None => &[],
                        };
                        let response = connections.send(c, "POST", &path, headers, &body).await?;
                        let reply: Value = serde_json::from_slice(&response.body)?;
                        reply["seq"].as_u64().context("append reply without seq")?;
                        Ok(())
                    }
                })
                .await
            }
            Appends::Nats { servers } => {
                // Connected before the clock starts: the figure is publishes, not handshakes.
                let mut connections = Vec::with_capacity(clients);
                for c in 0..clients {
                    let server = servers[c % servers.len()];
                    let connection = nats::Connection::connect(server, REQUEST_TIMEOUT)
                        .await
                        .with_context(|| format!("connecting to nats-server {server}"))?;
                    connections.push(Arc::new(tokio::sync::Mutex::new(connection)));
                }
                let connections = Arc::new(connections);
                drive(clients, duration, move |c, i| {
                    let connections = connections.clone();
                    async move {
                        // Each client owns its connection: the lock is never contended.
                        let mut connection = connections[c].lock().await;
                        let subject = format!("bench.{c}");
                        let body = random_value();
                        let key = append_key(kind, run, c, i);
                        let reply = connection
                            .request(&subject, key.as_deref(), &body, REQUEST_TIMEOUT)
                            .await?;
                        match nats::parse_pub_ack(&reply)? {
                            PubAck::Stored { .. } => Ok(()),
                            PubAck::Refused { code, description } => {
                                bail!("JetStream refused the publish: {code} {description}")
                            }
                        }
                    }
                })
                .await
            }
        })
    }
}

/// `VALUE_BYTES` random bytes: incompressible, like the encrypted or already compressed
/// payloads a gateway may carry (JSON telemetry would compress; the workload does not
/// assume it).
fn random_value() -> Vec<u8> {
    let mut value = vec![0u8; VALUE_BYTES];
    rand::Rng::fill(&mut rand::rng(), &mut value[..]);
    value
}

/// Runs the appends workload at every level, then the keyed one at its levels, recording
/// their rows and the loaded RSS of the plain appends; `split`: also the LSM workers' share
/// of the disk bytes (OpenClaw nodes).
async fn measure_appends(
    table: &mut Table,
    appends: &Appends,
    pids: &[u32],
    args: &Args,
    split: bool,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.seconds);
    let mut peak_rss: f64 = 0.0;
    let plain = append_levels(args).iter().map(|c| (AppendKind::Plain, *c));
    let keyed = args
        .keyed_append_clients
        .iter()
        .filter(|c| **c > 0)
        .map(|c| (AppendKind::Keyed, *c));
    let nodes: &[String] = match appends {
        Appends::OpenClaw { nodes } => nodes,
        Appends::Nats { .. } => &[],
    };
    let http = http_client()?;
    for (kind, clients) in plain.chain(keyed) {
        let (before, cpu_before) = (Written::now(pids, split), Cpu::now(pids));
        let breakdown_before = Breakdown::sample(&http, nodes).await;
        let figures = appends.run(kind, clients, duration).await?;
        let cpu = Cpu::now(pids).since(cpu_before);
        if kind == AppendKind::Plain {
            peak_rss = peak_rss.max(max_rss_mib(pids));
        }
        let written = Written::now(pids, split).since(before);
        let label = format!("{} c={clients}", kind.label());
        table.record_level(&label, &figures, cpu, written, pids.len());
        record_breakdown(&http, nodes, breakdown_before, &label, table).await;
    }
    table.insert("rss under append load MiB (max node)", peak_rss);
    Ok(())
}

/// The latency breakdown rows of one workload (`breakdown.rs`), for OpenClaw's `nodes`
/// (none for the other systems, whose nodes publish no such histograms).
async fn record_breakdown(
    http: &reqwest::Client,
    nodes: &[String],
    before: Option<Breakdown>,
    label: &str,
    table: &mut Table,
) {
    if nodes.is_empty() {
        return;
    }
    if let (Some(before), Some(after)) = (before, Breakdown::sample(http, nodes).await) {
        after.record_since(&before, label, table);
    }
}

/// The KV workloads (writes at every level, then reads), and for OpenClaw the appends
/// workload between them.
async fn measure(
    target: Target,
    pids: &[u32],
    args: &Args,
    appends: Option<Appends>,
) -> anyhow::Result<Table> {
    let mut table = Table::default();
    let duration = Duration::from_secs(args.seconds);
    table.insert("rss idle MiB (max node)", max_rss_mib(pids));

    let mut peak_rss: f64 = 0.0;
    let split = matches!(target, Target::OpenClaw { .. });
    let http = http_client()?;
    let breakdown_nodes = if split { target.nodes() } else { &[] };
    for &clients in &args.clients {
        let (before, cpu_before) = (Written::now(pids, split), Cpu::now(pids));
        let breakdown_before = Breakdown::sample(&http, breakdown_nodes).await;
        let (t, h) = (target.clone(), Clients::new(target.nodes(), clients)?);
        let figures = drive(clients, duration, move |c, i| {
            let (t, h) = (t.clone(), h.clone());
            async move {
                let key = format!("bench/{c}/{}", i % 1000);
                t.put(&h, c, &key, &random_value()).await
            }
        })
        .await;
        let cpu = Cpu::now(pids).since(cpu_before);
        peak_rss = peak_rss.max(max_rss_mib(pids));
        let written = Written::now(pids, split).since(before);
        let label = format!("writes c={clients}");
        table.record_level(&label, &figures, cpu, written, pids.len());
        record_breakdown(&http, breakdown_nodes, breakdown_before, &label, &mut table).await;
    }
    table.insert("rss under write load MiB (max node)", peak_rss);
    measure_conditional_writes(&mut table, &target, pids, args, split).await?;

    if let Some(appends) = appends {
        measure_appends(&mut table, &appends, pids, args, split).await?;
    }

    let setup = Clients::new(target.nodes(), target.nodes().len())?;
    for i in 0..READ_KEYS {
        target
            .put(&setup, i, &format!("read/{i}"), &random_value())
            .await?;
    }
    for (mode, name) in [(Read::Linearizable, "linearizable"), (Read::Stale, "stale")] {
        let (t, h) = (
            target.clone(),
            Clients::new(target.nodes(), args.read_clients)?,
        );
        let cpu_before = Cpu::now(pids);
        let figures = drive(args.read_clients, duration, move |c, i| {
            let (t, h) = (t.clone(), h.clone());
            async move {
                t.get(
                    &h,
                    c,
                    &format!("read/{}", (i as usize * 7 + c) % READ_KEYS),
                    mode,
                )
                .await
            }
        })
        .await;
        let cpu = Cpu::now(pids).since(cpu_before);
        let label = format!("{name} reads c={}", args.read_clients);
        table.insert(format!("{label} ops/s"), figures.per_second());
        table.insert(format!("{label} p99 ms"), figures.percentile_ms(99.0));
        table.record_cpu(&label, &figures, cpu);
    }
    Ok(table)
}

/// The conditional writes workload at its levels: each client puts its own key only if it
/// is at the revision the client last wrote (after a failed request, it starts a new key).
async fn measure_conditional_writes(
    table: &mut Table,
    target: &Target,
    pids: &[u32],
    args: &Args,
    split: bool,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.seconds);
    for &clients in args.conditional_clients.iter().filter(|c| **c > 0) {
        let run: u64 = rand::random();
        // Per client: the key's generation and the revision it last wrote there.
        let state: Arc<Vec<(AtomicU64, AtomicU64)>> = Arc::new(
            (0..clients)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        );
        let (before, cpu_before) = (Written::now(pids, split), Cpu::now(pids));
        let (t, h) = (target.clone(), Clients::new(target.nodes(), clients)?);
        let figures = drive(clients, duration, move |c, _| {
            let (t, h, state) = (t.clone(), h.clone(), state.clone());
            async move {
                let (generation, revision) = &state[c];
                let key = format!("cas/{run:016x}/{c}/{}", generation.load(Ordering::Relaxed));
                let expected = revision.load(Ordering::Relaxed);
                match t.put_if(&h, c, &key, &random_value(), expected).await {
                    Ok(new) => {
                        revision.store(new, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => {
                        // Its outcome is unknown: carry on from a fresh key.
                        generation.fetch_add(1, Ordering::Relaxed);
                        revision.store(0, Ordering::Relaxed);
                        Err(e)
                    }
                }
            }
        })
        .await;
        let cpu = Cpu::now(pids).since(cpu_before);
        let written = Written::now(pids, split).since(before);
        table.record_level(
            &format!("conditional writes c={clients}"),
            &figures,
            cpu,
            written,
            pids.len(),
        );
    }
    Ok(())
}

fn append_levels(args: &Args) -> &[usize] {
    args.append_clients.as_deref().unwrap_or(&args.clients)
}

/// reqwest for the harness's own requests (waiting for a system to come up, the failover
/// timing); the measured workloads use `Clients`.
fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// Starts a NATS cluster, measures the appends workload on it, stops it.
async fn measure_nats(
    binary: &Path,
    dir: &Path,
    sync_always: bool,
    args: &Args,
) -> anyhow::Result<Table> {
    let (_nats, servers, pids) = compare::start_nats(binary, dir, sync_always).await?;
    eprintln!(
        "nats ({}): 3 nodes up, measuring",
        if sync_always {
            "sync always"
        } else {
            "deferred fsync"
        }
    );
    let mut table = Table::default();
    table.insert("rss idle MiB (max node)", max_rss_mib(&pids));
    let appends = Appends::Nats { servers };
    measure_appends(&mut table, &appends, &pids, args, false).await?;
    Ok(table)
}

/// Every row of any system, in first-seen order (openclaw's first).
fn all_rows(results: &[(String, Table)]) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
    for (_, table) in results {
        for (row, _) in &table.rows {
            if !rows.contains(row) {
                rows.push(row.clone());
            }
        }
    }
    rows
}

/// openclaw's figure over each other system's, per row both have a finite, non-zero figure
/// for (error counts are usually 0/0 and are left out).
fn ratios(results: &[(String, Table)]) -> Vec<(String, Table)> {
    let Some((_, ours)) = results.first() else {
        return Vec::new();
    };
    results[1..]
        .iter()
        .map(|(name, theirs)| {
            let mut table = Table::default();
            for (row, a) in &ours.rows {
                let ratio = theirs.get(row).map(|b| a / b);
                if let Some(ratio) = ratio.filter(|r| r.is_finite() && !row.ends_with("errors")) {
                    table.insert(row.clone(), ratio);
                }
            }
            (format!("openclaw/{name}"), table)
        })
        .collect()
}

fn print_table(results: &[(String, Table)], ratios: &[(String, Table)]) {
    let cell = |v: Option<f64>, width: usize| match v {
        Some(v) => format!("{v:>width$.2}"),
        None => format!("{:>width$}", "-"),
    };
    print!("{:<48}", "workload");
    for (name, _) in results {
        print!("{name:>14}");
    }
    for (name, _) in ratios {
        let short = name.replace("openclaw/", "oc/");
        print!("{short:>17}");
    }
    println!();
    for row in all_rows(results) {
        print!("{row:<48}");
        for (_, table) in results {
            print!("{}", cell(table.get(&row), 14));
        }
        for (_, table) in ratios {
            print!("{}", cell(table.get(&row), 17));
        }
        println!();
    }
}

fn table_json(tables: &[(String, Table)]) -> Value {
    tables
        .iter()
        .map(|(name, table)| {
            let rows: serde_json::Map<String, Value> = table
                .rows
                .iter()
                .map(|(row, v)| (row.clone(), json!(v)))
                .collect();
            (name.clone(), Value::Object(rows))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    std::fs::create_dir_all(&dir)?;
    // Found before anything is measured, so a missing binary fails in a second, not after
    // the OpenClaw and etcd runs.
    let nats_server = match args.compare {
        true => Some(compare::find_nats_server(args.nats_server.as_deref()).await?),
        false => None,
    };
    let mut versions = serde_json::Map::new();
    let mut results: Vec<(String, Table)> = Vec::new();
    let openclaw = |urls: Vec<String>| -> anyhow::Result<(Target, Option<Appends>)> {
        let appends = Appends::OpenClaw {
            nodes: urls.clone(),
        };
        Ok((Target::OpenClaw { nodes: urls }, Some(appends)))
    };
    if let Some(path) = &args.endpoints {
        let (urls, pids) = read_endpoints(&wait_for_file(path).await?)?;
        let (target, appends) = openclaw(urls)?;
        let table = measure(target, &pids, &args, appends).await?;
        results.push(("openclaw".into(), table));
    } else {
        let (_lab, urls, pids) = start_lab(&dir, args.nodes, args.hub_nodes).await?;
        eprintln!("openclaw: {} nodes up, measuring", urls.len());
        let (target, appends) = openclaw(urls)?;
        let table = measure(target, &pids, &args, appends).await?;
        results.push(("openclaw".into(), table));
    }
    if args.failovers > 0 && args.endpoints.is_none() {
        if let Some((_, table)) = results.first_mut() {
            for (i, timing) in failover::TIMINGS.iter().enumerate() {
                eprintln!(
                    "openclaw: {} leader kills ({})",
                    args.failovers, timing.label
                );
                let dir = dir.join(format!("failover-{i}"));
                failover::measure(&dir, args.failovers, timing, table).await?;
            }
        }
    }
    if let Some((nats_binary, nats_version, major_minor)) = &nats_server {
        let etcd_version = compare::tool_version(Command::new("etcd").arg("--version")).await?;
        versions.insert("etcd".into(), json!(etcd_version));
        versions.insert("nats-server".into(), json!(nats_version));
        {
            let (_etcd, urls, pids) = compare::start_etcd(&dir).await?;
            eprintln!("etcd: 3 members up, measuring");
            let table = measure(Target::Etcd { nodes: urls }, &pids, &args, None).await?;
            results.push(("etcd".into(), table));
        }
        eprintln!("{nats_version} ({})", nats_binary.display());
        let table = measure_nats(nats_binary, &dir, false, &args).await?;
        results.push(("nats-deferred".into(), table));
        if *major_minor >= compare::NATS_SYNC_ALWAYS_SINCE {
            let table = measure_nats(nats_binary, &dir, true, &args).await?;
            results.push(("nats-always".into(), table));
        } else {
            eprintln!(
                "{nats_version} predates sync_interval: always (2.10): no fsync-before-ack run \
                 (hil-tests/install-compare.sh installs 2.10)"
            );
        }
    }
    let ratios = ratios(&results);
    if !versions.is_empty() {
        let list: Vec<String> = versions
            .values()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        println!("compared with: {}", list.join("; "));
    }
    print_table(&results, &ratios);
    if let Some(path) = &args.json {
        let mut json = table_json(&results);
        json["ratios"] = table_json(&ratios);
        json["versions"] = Value::Object(versions);
        json["conditions"] = json!({
            "seconds": args.seconds,
            "write_clients": args.clients,
            "append_clients": append_levels(&args),
            "read_clients": args.read_clients,
            "nodes": args.nodes,
            "value_bytes": VALUE_BYTES,
            "values": "random (fresh per operation)",
            "failovers": args.failovers,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
