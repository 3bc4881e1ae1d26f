//! The systems `openclaw-bench --compare` measures next to OpenClaw: a 3-member etcd and a
//! 3-node NATS JetStream cluster on loopback, each started here from its own binary with its
//! data under the bench's directory, and ready (healthy; for NATS, the bench's stream
//! created and taking publishes) when these functions return. Installing them is
//! hil-tests/install-compare.sh's job, never the bench's. Like OpenClaw's nodes in the lab
//! (`lab::share_of_cores`), each member gets its share of the machine's cores (Go's
//! `GOMAXPROCS`), so all three systems run by the same rule.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use openclaw_hil_tests::lab::share_of_cores;
use openclaw_hil_tests::nats::{self, PubAck};
use serde_json::{json, Value};
use tokio::process::Command;

use crate::{http_client, random_value, Process, POLL, REQUEST_TIMEOUT, START_TIMEOUT};

/// Deadline of one JetStream API request while the cluster comes up (no reply at all means
/// no meta leader yet: the request is retried until `START_TIMEOUT`).
const JS_API_TIMEOUT: Duration = Duration::from_secs(2);
/// The JetStream stream and the subjects it captures; client c publishes to `bench.c`.
const NATS_STREAM: &str = "BENCH";
const NATS_SUBJECTS: &str = "bench.>";
/// Where hil-tests/install-compare.sh unpacks nats-server unless `$OPENCLAW_COMPARE_DIR` says
/// otherwise (the binary is `nats/usr/sbin/nats-server` below it).
const DEFAULT_COMPARE_DIR: &str = "/opt/openclaw-compare";
/// Members of the etcd cluster and nodes of the NATS cluster, as OpenClaw's group.
const MEMBERS: usize = 3;
/// `sync_interval: always` first exists in nats-server 2.10.
pub const NATS_SYNC_ALWAYS_SINCE: (u64, u64) = (2, 10);

/// A free loopback TCP port: bound, then released for the server to bind (a race with
/// another process only makes that start fail, loudly).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A 3-member etcd on loopback, every member healthy: its client URLs and pids.
pub async fn start_etcd(dir: &Path) -> anyhow::Result<(Vec<Process>, Vec<String>, Vec<u32>)> {
    let ports: Vec<(u16, u16)> = (0..MEMBERS)
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
            .env("GOMAXPROCS", share_of_cores(MEMBERS as u64).to_string())
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
    let http = http_client()?;
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

/// The nats-server to compare with: `--nats-server`, else where install-compare.sh puts it,
/// else PATH; with its version.
pub async fn find_nats_server(
    chosen: Option<&Path>,
) -> anyhow::Result<(PathBuf, String, (u64, u64))> {
    let path = match chosen {
        Some(path) => path.to_owned(),
        None => {
            let compare_dir = std::env::var_os("OPENCLAW_COMPARE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_COMPARE_DIR));
            let private = compare_dir.join("nats/usr/sbin/nats-server");
            let on_path = std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("nats-server"))
                    .find(|candidate| candidate.is_file())
            });
            match (private.is_file(), on_path) {
                (true, _) => private,
                (false, Some(p)) => p,
                (false, None) => bail!(
                    "nats-server not found in {} nor on PATH (run hil-tests/install-compare.sh, \
                     or pass --nats-server PATH)",
                    private.display()
                ),
            }
        }
    };
    let version = tool_version(Command::new(&path).arg("--version")).await?;
    let number = version
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .with_context(|| format!("{}: no version in {version:?}", path.display()))?;
    let mut parts = number.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let major_minor = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    Ok((path, version, major_minor))
}

/// First line of a `--version` output, bounded by `START_TIMEOUT`.
pub async fn tool_version(command: &mut Command) -> anyhow::Result<String> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let output = tokio::time::timeout(START_TIMEOUT, command.kill_on_drop(true).output())
        .await
        .with_context(|| format!("{program} --version did not finish"))?
        .with_context(|| {
            format!("running {program} --version (install with hil-tests/install-compare.sh)")
        })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

/// A 3-node JetStream cluster on loopback (client, route and monitoring ports free ones;
/// each node's store under `dir`), up and with the bench's R3 file stream created.
pub async fn start_nats(
    binary: &Path,
    dir: &Path,
    sync_always: bool,
) -> anyhow::Result<(Vec<Process>, Vec<SocketAddr>, Vec<u32>)> {
    let tag = if sync_always { "always" } else { "deferred" };
    let ports: Vec<[u16; 3]> = (0..MEMBERS)
        .map(|_| Ok([free_port()?, free_port()?, free_port()?]))
        .collect::<anyhow::Result<_>>()?;
    let mut processes = Vec::new();
    let mut servers = Vec::new();
    let mut pids = Vec::new();
    for (i, [client, route, monitor]) in ports.iter().enumerate() {
        let store = dir.join(format!("nats-{tag}-{i}"));
        let routes: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, [_, r, _])| format!("\"nats-route://127.0.0.1:{r}\""))
            .collect();
        let sync = if sync_always {
            ", sync_interval: always"
        } else {
            ""
        };
        let config = format!(
            "server_name: n{i}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
             jetstream {{ store_dir: {}{sync} }}\n\
             cluster {{ name: bench, listen: \"127.0.0.1:{route}\", routes: [{}] }}\n",
            serde_json::to_string(&store.to_string_lossy())?,
            routes.join(", ")
        );
        let config_path = dir.join(format!("nats-{tag}-{i}.conf"));
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join(format!("nats-{tag}-{i}.log")))?;
        let child = Command::new(binary)
            .env("GOMAXPROCS", share_of_cores(MEMBERS as u64).to_string())
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        pids.push(child.id().unwrap_or(0));
        processes.push(Process { child });
        servers.push(SocketAddr::from(([127, 0, 0, 1], *client)));
    }

    let http = http_client()?;
    let deadline = Instant::now() + START_TIMEOUT;
    for [_, _, monitor] in &ports {
        let url = format!("http://127.0.0.1:{monitor}");
        loop {
            let healthy = http.get(format!("{url}/healthz")).send().await.ok();
            if healthy.is_some_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("nats-server at {url} not healthy within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        }
        // The run must measure what its name says.
        let jsz: Value = http.get(format!("{url}/jsz")).send().await?.json().await?;
        if jsz["config"]["sync_always"].as_bool().unwrap_or(false) != sync_always {
            bail!("nats-server at {url}: sync_always is not {sync_always} ({jsz})");
        }
    }

    let mut connection = nats::Connection::connect(servers[0], REQUEST_TIMEOUT).await?;
    let config = json!({
        "name": NATS_STREAM,
        "subjects": [NATS_SUBJECTS],
        "storage": "file",
        "num_replicas": MEMBERS,
        "retention": "limits",
        "discard": "old",
    });
    let create = format!("$JS.API.STREAM.CREATE.{NATS_STREAM}");
    let create_body = serde_json::to_vec(&config)?;
    let mut last = String::from("no reply");
    loop {
        // No reply (no meta leader yet) or a "temporarily unavailable" error: retry.
        match connection
            .request(&create, None, &create_body, JS_API_TIMEOUT)
            .await
        {
            Ok(reply) => {
                let reply: Value = serde_json::from_slice(&reply).context("stream create reply")?;
                if reply.get("error").is_none() {
                    break;
                }
                last = reply["error"].to_string();
            }
            Err(nats::NatsError::Timeout { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            bail!("JetStream stream {NATS_STREAM} not created within {START_TIMEOUT:?}: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
    // The stream's own leader is elected after creation: publish until one is stored.
    let body = random_value();
    loop {
        if let Ok(reply) = connection
            .request("bench.warmup", None, &body, JS_API_TIMEOUT)
            .await
        {
            match nats::parse_pub_ack(&reply)? {
                PubAck::Stored { .. } => break,
                PubAck::Refused { code, description } => last = format!("{code} {description}"),
            }
        }
        if Instant::now() > deadline {
            bail!(
                "JetStream stream {NATS_STREAM} took no publish within {START_TIMEOUT:?}: {last}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
    Ok((processes, servers, pids))
}
