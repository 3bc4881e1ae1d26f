//! `openclaw-bench`: fixed workloads against a local lab, printed as one table (and JSON).
//!
//! It starts the topology itself through `openclaw-lab up` (a separate process, the same one
//! the README's quick start uses), reads DIR/endpoints.json, and drives the nodes' HTTP API
//! from concurrent clients. With `--compare` it also starts a 3-member etcd on loopback
//! (Debian's etcd-server; install with hil-tests/install-compare.sh) and runs the same KV
//! workloads through etcd's v3 JSON gateway. Figures are measurements, never assertions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Parser;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// Value size of every KV write, in bytes (the fixed workload).
const VALUE_BYTES: usize = 256;
/// How long the lab (or etcd) may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Keys the read workloads spread over.
const READ_KEYS: usize = 1000;

#[derive(Parser)]
#[command(
    name = "openclaw-bench",
    about = "Benchmarks a local OpenClaw edge group (and etcd with --compare)"
)]
struct Args {
    /// Seconds each workload runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Client concurrency levels for the write workload.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Clients for the read workloads.
    #[arg(long, default_value_t = 16)]
    read_clients: usize,
    /// Edge nodes in the group.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Also run the KV workloads against a 3-member etcd (needs `etcd` on PATH).
    #[arg(long)]
    compare: bool,
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
}

/// One measured workload.
#[derive(Default, Clone)]
struct Figures {
    ops: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Figures {
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }
    fn percentile_ms(&self, p: f64) -> f64 {
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
    #[allow(dead_code)]
    fn name(&self) -> &'static str {
        match self {
            Target::OpenClaw { .. } => "openclaw",
            Target::Etcd { .. } => "etcd",
        }
    }

    fn node(&self, i: usize) -> &str {
        let nodes = match self {
            Target::OpenClaw { nodes } | Target::Etcd { nodes } => nodes,
        };
        &nodes[i % nodes.len()]
    }

    async fn put(
        &self,
        http: &reqwest::Client,
        client: usize,
        key: &str,
        value: &[u8],
    ) -> anyhow::Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let response = match self {
            Target::OpenClaw { .. } => {
                http.put(format!("{}/v1/kv/{key}", self.node(client)))
                    .body(value.to_vec())
                    .send()
                    .await?
            }
            Target::Etcd { .. } => {
                http.post(format!("{}/v3/kv/put", self.node(client)))
                    .json(&json!({"key": b64.encode(key), "value": b64.encode(value)}))
                    .send()
                    .await?
            }
        };
        if !response.status().is_success() {
            bail!("HTTP {}", response.status());
        }
        response.bytes().await?;
        Ok(())
    }

    async fn get(
        &self,
        http: &reqwest::Client,
        client: usize,
        key: &str,
        mode: Read,
    ) -> anyhow::Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let response = match self {
            Target::OpenClaw { .. } => {
                let consistency = if mode == Read::Stale {
                    "stale"
                } else {
                    "linearizable"
                };
                http.get(format!(
                    "{}/v1/kv/{key}?consistency={consistency}",
                    self.node(client)
                ))
                .send()
                .await?
            }
            Target::Etcd { .. } => {
                http.post(format!("{}/v3/kv/range", self.node(client)))
                    .json(&json!({"key": b64.encode(key), "serializable": mode == Read::Stale}))
                    .send()
                    .await?
            }
        };
        if !response.status().is_success() {
            bail!("HTTP {}", response.status());
        }
        response.bytes().await?;
        Ok(())
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

/// Bytes a process has caused to be written to storage, and its resident memory.
fn proc_write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines().find_map(|l| {
                l.strip_prefix("write_bytes:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
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
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_etcd(dir: &Path) -> anyhow::Result<(Vec<Process>, Vec<String>, Vec<u32>)> {
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut processes = Vec::new();
    let mut urls = Vec::new();
    let mut pids = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let log = std::fs::File::create(dir.join(format!("etcd-{i}.log")))?;
        let child = Command::new("etcd")
            .arg(format!("--name=e{i}"))
            .arg(format!(
                "--data-dir={}",
                dir.join(format!("etcd-{i}")).display()
            ))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster={}", cluster.join(",")))
            .arg("--initial-cluster-state=new")
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting etcd (install it with hil-tests/install-compare.sh)")?;
        pids.push(child.id().unwrap_or(0));
        processes.push(Process { child });
        urls.push(format!("http://127.0.0.1:{client}"));
    }
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    for url in &urls {
        loop {
            let healthy = http
                .get(format!("{url}/health"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success());
            if healthy == Some(true) {
                break;
            }
            if Instant::now() > deadline {
                bail!("etcd at {url} not healthy within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok((processes, urls, pids))
}

/// Every figure of one system, by row name.
type Table = BTreeMap<String, f64>;

async fn measure(target: Target, pids: &[u32], args: &Args) -> anyhow::Result<Table> {
    let mut table = Table::new();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let duration = Duration::from_secs(args.seconds);
    let value = Arc::new(vec![b'x'; VALUE_BYTES]);
    let rss =
        |pids: &[u32]| pids.iter().map(|p| proc_rss_kib(*p)).max().unwrap_or(0) as f64 / 1024.0;
    table.insert("rss idle MiB (max node)".into(), rss(pids));

    let mut peak_rss: f64 = 0.0;
    for &clients in &args.clients {
        let written_before: u64 = pids.iter().map(|p| proc_write_bytes(*p)).sum();
        let (t, h, v) = (target.clone(), http.clone(), value.clone());
        let figures = drive(clients, duration, move |c, i| {
            let (t, h, v) = (t.clone(), h.clone(), v.clone());
            async move { t.put(&h, c, &format!("bench/{c}/{}", i % 1000), &v).await }
        })
        .await;
        peak_rss = peak_rss.max(rss(pids));
        let written: u64 = pids.iter().map(|p| proc_write_bytes(*p)).sum::<u64>() - written_before;
        let payload = figures.ops * VALUE_BYTES as u64;
        let label = format!("writes c={clients}");
        table.insert(format!("{label} ops/s"), figures.per_second());
        table.insert(format!("{label} p50 ms"), figures.percentile_ms(50.0));
        table.insert(format!("{label} p99 ms"), figures.percentile_ms(99.0));
        table.insert(format!("{label} p999 ms"), figures.percentile_ms(99.9));
        table.insert(format!("{label} errors"), figures.errors as f64);
        if payload > 0 {
            table.insert(
                format!("{label} disk bytes/payload byte/node"),
                written as f64 / payload as f64 / pids.len().max(1) as f64,
            );
        }
    }
    table.insert("rss under write load MiB (max node)".into(), peak_rss);

    for i in 0..READ_KEYS {
        target.put(&http, i, &format!("read/{i}"), &value).await?;
    }
    for (mode, name) in [(Read::Linearizable, "linearizable"), (Read::Stale, "stale")] {
        let (t, h) = (target.clone(), http.clone());
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
        let label = format!("{name} reads c={}", args.read_clients);
        table.insert(format!("{label} ops/s"), figures.per_second());
        table.insert(format!("{label} p99 ms"), figures.percentile_ms(99.0));
    }
    Ok(table)
}

fn print_table(results: &[(&str, Table)]) {
    let rows: Vec<&String> = results[0].1.keys().collect();
    print!("{:<48}", "workload");
    for (name, _) in results {
        print!("{name:>14}");
    }
    if results.len() == 2 {
        print!("{:>10}", "ratio");
    }
    println!();
    for row in rows {
        print!("{row:<48}");
        for (_, table) in results {
            print!("{:>14.2}", table.get(row).copied().unwrap_or(f64::NAN));
        }
        if results.len() == 2 {
            let (a, b) = (results[0].1.get(row), results[1].1.get(row));
            if let (Some(a), Some(b)) = (a, b) {
                print!("{:>10.2}", a / b);
            }
        }
        println!();
    }
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
    let mut results = Vec::new();
    if let Some(path) = &args.endpoints {
        let (urls, pids) = read_endpoints(&wait_for_file(path).await?)?;
        results.push((
            "openclaw",
            measure(Target::OpenClaw { nodes: urls }, &pids, &args).await?,
        ));
    } else {
        let (_lab, urls, pids) = start_lab(&dir, args.nodes, args.hub_nodes).await?;
        eprintln!("openclaw: {} nodes up, measuring", urls.len());
        results.push((
            "openclaw",
            measure(Target::OpenClaw { nodes: urls }, &pids, &args).await?,
        ));
    }
    if args.compare {
        let (_etcd, urls, pids) = start_etcd(&dir).await?;
        eprintln!("etcd: 3 members up, measuring");
        results.push((
            "etcd",
            measure(Target::Etcd { nodes: urls }, &pids, &args).await?,
        ));
    }
    print_table(&results);
    if let Some(path) = &args.json {
        let json: Value = results
            .iter()
            .map(|(name, table)| (name.to_string(), json!(table)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
