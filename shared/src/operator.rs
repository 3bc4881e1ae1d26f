//! What both daemons' command lines share: the operator commands that talk to a running
//! node over its client API, dev certificates, logging, signals, and the exit-code contract
//! (0 ok, 1 runtime error, 2 usage; DESIGN.md §4.2).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::config::SiteId;
use crate::identity::{create_dev_ca, create_node_cert, NodeIdentity, Role};

/// Longest response an operator command reads.
const MAX_CLI_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{method} {path} answered HTTP {status}")]
    Status {
        method: String,
        path: String,
        status: u16,
    },
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error(transparent)]
    Certs(#[from] crate::identity::CertError),
    #[error("cannot bind the client API on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// Client API URL of any node of the group.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub addr: String,
}

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Print a running node's status.
    Status(Target),
    /// List, add, promote or remove group members.
    Members {
        #[command(subcommand)]
        action: MembersAction,
    },
    /// Ask the group's leader to build a snapshot now.
    Snapshot(Target),
    /// Hand leadership to another voter.
    TransferLeader {
        #[command(flatten)]
        target: Target,
        /// Node id of the new leader.
        #[arg(long)]
        to: u64,
    },
    /// Write a consistent, checksummed copy of a node's state and the committed log it still
    /// holds to FILE (resumable); `restore --from-backup FILE` starts a new node or group
    /// from it, to its end or to a point in time the log covers.
    Backup {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        out: PathBuf,
    },
    /// Make dev certificates (a CA, node certificates) for local tries and tests.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum MembersAction {
    /// List voters, learners and addresses.
    List(Target),
    /// Add a node as a learner (it catches up, then can be promoted).
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        id: u64,
        /// The new node's advertised QUIC address (host:port).
        #[arg(long)]
        raft: String,
        /// The new node's client API URL.
        #[arg(long)]
        http: String,
    },
    /// Make a learner a voter.
    Promote {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        id: u64,
    },
    /// Remove a voter or learner.
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertsAction {
    /// Create a dev CA (ca.pem, ca.key) in DIR.
    Ca {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a node certificate (node-ID.pem, node-ID.key) from the dev CA in DIR.
    Node {
        #[arg(long)]
        dir: PathBuf,
        /// The site (edge) or hub group (hub) the node belongs to.
        #[arg(long)]
        site: String,
        #[arg(long)]
        id: u64,
    },
}

/// Carries out an operator command; `role` is the daemon's (certificates name it).
pub async fn dispatch(command: OperatorCommand, role: Role) -> Result<(), OperatorError> {
    match command {
        OperatorCommand::Status(t) => print_http(&t.addr, "GET", "/v1/status", None).await,
        OperatorCommand::Members { action } => match action {
            MembersAction::List(t) => print_http(&t.addr, "GET", "/v1/members", None).await,
            MembersAction::Add {
                target,
                id,
                raft,
                http,
            } => {
                let body = serde_json::json!({"id": id, "raft": raft, "http": http}).to_string();
                print_http(&target.addr, "POST", "/v1/members", Some(body)).await
            }
            MembersAction::Promote { target, id } => {
                let path = format!("/v1/members/{id}/promote");
                print_http(&target.addr, "POST", &path, None).await
            }
            MembersAction::Remove { target, id } => {
                print_http(&target.addr, "DELETE", &format!("/v1/members/{id}"), None).await
            }
        },
        OperatorCommand::Snapshot(t) => {
            print_http(&t.addr, "POST", "/v1/admin/snapshot", None).await
        }
        OperatorCommand::TransferLeader { target, to } => {
            let body = serde_json::json!({"to": to}).to_string();
            print_http(
                &target.addr,
                "POST",
                "/v1/admin/transfer-leader",
                Some(body),
            )
            .await
        }
        OperatorCommand::Backup { target, out } => {
            let bytes = download(&target.addr, "/v1/admin/backup", &out).await?;
            let info = crate::store::Store::describe_backup(&out)
                .map_err(|e| OperatorError::Malformed(format!("backup {}: {e}", out.display())))?;
            let log = match info.log {
                Some((first, last)) => format!("log entries {first}..={last}"),
                None => "no log entries".to_owned(),
            };
            println!(
                "backup of {bytes} bytes written to {} (verified): state at seq {}, {log}",
                out.display(),
                info.last_seq
            );
            Ok(())
        }
        OperatorCommand::Certs { action } => match action {
            CertsAction::Ca { dir } => {
                create_dev_ca(&dir)?;
                println!("dev CA written to {}", dir.display());
                Ok(())
            }
            CertsAction::Node { dir, site, id } => {
                let site = SiteId::parse(&site).map_err(OperatorError::Usage)?;
                if id == 0 {
                    return Err(OperatorError::Usage("--id must be >= 1".into()));
                }
                let identity = NodeIdentity {
                    role,
                    site,
                    node_id: id,
                };
                create_node_cert(&dir, &identity)?;
                println!(
                    "certificate for {} written to {}",
                    identity.dns_name(),
                    dir.display()
                );
                Ok(())
            }
        },
    }
}

/// A minimal HTTP/1.1 exchange with a node's client API (loopback, no TLS); prints the
/// (pretty) JSON answer and fails on a non-2xx status.
pub async fn print_http(
    base: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(), OperatorError> {
    let (status, body) = http(base, method, path, body).await?;
    let pretty = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(body);
    println!("{pretty}");
    check_status(method, path, status)
}

/// A JSON GET; a non-2xx status is an error.
pub async fn get_json(base: &str, path: &str) -> Result<serde_json::Value, OperatorError> {
    let (status, body) = http(base, "GET", path, None).await?;
    check_status("GET", path, status)?;
    serde_json::from_str(&body).map_err(|e| OperatorError::Malformed(format!("{path}: {e}")))
}

fn check_status(method: &str, path: &str, status: u16) -> Result<(), OperatorError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    Err(OperatorError::Status {
        method: method.to_owned(),
        path: path.to_owned(),
        status,
    })
}

fn authority(base: &str) -> Result<&str, OperatorError> {
    Ok(base
        .strip_prefix("http://")
        .ok_or_else(|| OperatorError::Usage(format!("`{base}` must start with http://")))?
        .trim_end_matches('/'))
}

/// One HTTP/1.1 request; returns the status and the body (at most `MAX_CLI_RESPONSE_BYTES`).
async fn http(
    base: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String), OperatorError> {
    let authority = authority(base)?;
    let connect_error = |source| OperatorError::Connect {
        addr: authority.to_owned(),
        source,
    };
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(connect_error)?;
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(connect_error)?;
    let mut response = Vec::new();
    stream
        .take(MAX_CLI_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await
        .map_err(connect_error)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| OperatorError::Malformed("no header end".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| OperatorError::Malformed("bad status line".into()))?;
    Ok((status, body.to_owned()))
}

/// Downloads `path` from a node's client API into `dest`, resuming a partial file with an
/// HTTP Range request, printing progress to stderr. Returns the bytes in the file.
pub async fn download(
    base: &str,
    path: &str,
    dest: &std::path::Path,
) -> Result<u64, OperatorError> {
    let authority = authority(base)?;
    let connect_error = |source| OperatorError::Connect {
        addr: authority.to_owned(),
        source,
    };
    let have = tokio::fs::metadata(dest).await.map_or(0, |m| m.len());
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(connect_error)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nRange: bytes={have}-\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(connect_error)?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_RESPONSE_HEAD_BYTES {
            return Err(OperatorError::Malformed("response head too long".into()));
        }
        let mut byte = [0u8; 1];
        if reader.read(&mut byte).await.map_err(connect_error)? == 0 {
            return Err(OperatorError::Malformed(
                "connection closed in the head".into(),
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| OperatorError::Malformed("bad status line".into()))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let (mut file, mut done, total) = match status {
        206 => {
            let total = header("content-range")
                .and_then(|r| r.rsplit('/').next().and_then(|t| t.parse::<u64>().ok()));
            let file = tokio::fs::OpenOptions::new().append(true).open(dest).await;
            (file, have, total)
        }
        200 => {
            let total = header("content-length").and_then(|l| l.parse::<u64>().ok());
            (tokio::fs::File::create(dest).await, 0, total)
        }
        416 if have > 0 => return Ok(have), // already complete
        other => {
            let mut body = String::new();
            let _ = (&mut reader)
                .take(64 * 1024)
                .read_to_string(&mut body)
                .await;
            eprintln!("{body}");
            return Err(OperatorError::Status {
                method: "GET".into(),
                path: path.to_owned(),
                status: other,
            });
        }
    };
    let file = file
        .as_mut()
        .map_err(|e| OperatorError::Malformed(format!("{}: {e}", dest.display())))?;
    let chunked = header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    let mut buf = vec![0u8; 256 * 1024];
    let mut shown = std::time::Instant::now();
    loop {
        // A chunked body is a series of `size\r\n data \r\n`, ending with size 0.
        let mut remaining = if chunked {
            let mut line = String::new();
            (&mut reader)
                .take(MAX_CHUNK_LINE_BYTES)
                .read_line(&mut line)
                .await
                .map_err(connect_error)?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| OperatorError::Malformed(format!("bad chunk size `{size}`")))?;
            if size == 0 {
                break;
            }
            Some(size)
        } else {
            None
        };
        loop {
            let want = remaining.map_or(buf.len(), |r| r.min(buf.len() as u64) as usize);
            if want == 0 {
                break;
            }
            let n = reader.read(&mut buf[..want]).await.map_err(connect_error)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .await
                .map_err(|e| OperatorError::Malformed(format!("{}: {e}", dest.display())))?;
            done += n as u64;
            if let Some(r) = remaining.as_mut() {
                *r -= n as u64;
            }
            if shown.elapsed() > std::time::Duration::from_millis(500) {
                shown = std::time::Instant::now();
                progress(done, total);
            }
        }
        match remaining {
            None => break,
            Some(0) => {
                let mut crlf = [0u8; 2];
                reader.read_exact(&mut crlf).await.map_err(connect_error)?;
            }
            Some(_) => return Err(OperatorError::Malformed("chunk cut short".into())),
        }
    }
    file.sync_all()
        .await
        .map_err(|e| OperatorError::Malformed(format!("{}: {e}", dest.display())))?;
    progress(done, total);
    eprintln!();
    if total.is_some_and(|t| t != done) {
        return Err(OperatorError::Malformed(format!(
            "download stopped at {done} of {} bytes; run the command again to resume",
            total.unwrap_or(0)
        )));
    }
    Ok(done)
}

/// A one-line progress bar on stderr.
fn progress(done: u64, total: Option<u64>) {
    match total {
        Some(total) if total > 0 => {
            let width = 30;
            let filled = (done.min(total) * width / total) as usize;
            eprint!(
                "\r[{}{}] {:>5.1}% {done}/{total} bytes",
                "#".repeat(filled),
                " ".repeat(width as usize - filled),
                done as f64 * 100.0 / total as f64
            );
        }
        _ => eprint!("\r{done} bytes"),
    }
}

/// Longest chunk-size line `download` reads.
const MAX_CHUNK_LINE_BYTES: u64 = 1024;

/// Longest response head `download` reads.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Opens the store of a node that is not running yet and checks it is empty: restores
/// and reseeds only start new nodes, never write over a live one.
pub fn open_empty_store(
    dir: &std::path::Path,
    storage: &crate::config::StorageSection,
) -> Result<crate::store::Store, OperatorError> {
    let store = crate::store::Store::open(dir, storage)
        .map_err(|e| OperatorError::Malformed(format!("opening {}: {e}", dir.display())))?;
    if !store.is_empty() {
        return Err(OperatorError::Usage(format!(
            "{} already holds a store: restore into a new directory, never over a live one",
            dir.display()
        )));
    }
    Ok(store)
}

/// How far a restore rolls a backup forward (default: to the end of its log).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PointInTime {
    /// Stop at the state as of this seq (every event with seq <= it).
    #[arg(long, conflicts_with = "as_of_ms")]
    pub as_of_seq: Option<u64>,
    /// Stop at the state as of this unix time in ms (every event stamped at or before it).
    #[arg(long)]
    pub as_of_ms: Option<u64>,
}

impl PointInTime {
    pub fn as_of(&self) -> Option<crate::store::AsOf> {
        match (self.as_of_seq, self.as_of_ms) {
            (Some(seq), _) => Some(crate::store::AsOf::Seq(seq)),
            (None, Some(ms)) => Some(crate::store::AsOf::TimeMs(ms)),
            (None, None) => None,
        }
    }
}

/// `restore --from-backup FILE [--log-from LATER] [--as-of-…]`: a new node (or, run on each
/// member, a new group) starts from a backup rolled forward through a committed log. The
/// files are verified before anything is written; a restore that fails leaves no store.
pub async fn restore_backup(
    file: &std::path::Path,
    log_from: Option<&std::path::Path>,
    point: &PointInTime,
    dir: &std::path::Path,
    storage: &crate::config::StorageSection,
) -> Result<(), OperatorError> {
    let fresh = !dir.exists();
    let store = open_empty_store(dir, storage)?;
    let restored = match store.restore_backup(file, log_from, point.as_of()) {
        Ok(restored) => restored,
        Err(e) => {
            drop(store);
            discard_partial_store(dir, fresh);
            return Err(OperatorError::Malformed(format!(
                "restoring {}: {e}",
                file.display()
            )));
        }
    };
    store
        .flush()
        .await
        .map_err(|e| OperatorError::Malformed(e.to_string()))?;
    println!(
        "restored {} into {}: backup at seq {}, {} log entries applied, now at seq {}{}",
        file.display(),
        dir.display(),
        restored.base_seq,
        restored.entries_applied,
        restored.last_seq,
        if restored.fenced {
            " (a point in time: it starts fenced, read-only)"
        } else {
            ""
        }
    );
    println!("start the node (bootstrap a new group) to serve it");
    Ok(())
}

/// Removes what a failed restore wrote into `dir`, which held no store before it (`fresh`:
/// did not exist at all).
fn discard_partial_store(dir: &std::path::Path, fresh: bool) {
    if fresh {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// The log filter unless `RUST_LOG` says otherwise: this daemon's info lines, its libraries'
/// warnings. openraft logs ~11 info lines per snapshot and fjall one per keyspace at each
/// journal rotation; a gateway under load snapshots its log a few times a second
/// (`LogByteBudget`): the leader of a 3-node group under 64 writers logged ~22 lines, ~4 KB,
/// a second (~370 MB a day at that load) for journald to write to flash. Leader changes,
/// which openraft's info lines also told, are logged by
/// `supervise::start_leadership_metrics`.
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=warn,fjall=warn,lsm_tree=warn";

/// Logs through `tracing` to stderr: colours only on a terminal; under systemd or a lab, one
/// plain line per event. `RUST_LOG` overrides `DEFAULT_LOG_FILTER`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Returns on SIGTERM or SIGINT.
pub async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// A daemon's life after its node started: serves `app` on `listen`, tells systemd it is
/// ready (then pings the watchdog while `group`'s Raft core answers), waits for SIGTERM or
/// SIGINT, hands `group`'s leadership over if it leads, stops the HTTP server once the
/// requests under way are answered, and the writes other members forwarded to it (at most
/// `DRAIN_TIMEOUT`), then runs `stop` (the daemon's own shutdown: Raft, flush, connections).
pub async fn serve_until_signal<F, Fut>(
    listen: std::net::SocketAddr,
    app: axum::Router,
    group: std::sync::Arc<crate::group::GroupNode>,
    stop: F,
) -> Result<(), OperatorError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| OperatorError::Bind {
            addr: listen,
            source,
        })?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    crate::group::supervise::start_leadership_metrics(group.clone());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    crate::group::supervise::start_watchdog(group.clone());
    tracing::info!("serving");
    wait_for_signal().await.map_err(OperatorError::Signals)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping");
    // Leadership first, while requests still flow (forwarded to the successor); then no new
    // requests, and those under way finish through a Raft that still runs; only then Raft
    // and the rest. Stopping Raft first cut the writes under way short as outcome unknown.
    // A departing leader also answers the writes other members forwarded to it: they commit
    // under its successor, and it answers them once it has applied them.
    group.hand_over_leadership().await;
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let _ = server.await;
        group.forwarded_writes_answered().await;
    });
    if drained.await.is_err() {
        tracing::warn!("requests still under way after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// How long a stopping daemon waits for the requests under way (its HTTP requests, and the
/// writes other members forwarded to it) to be answered before it stops Raft anyway (a
/// write that cannot commit then is answered as unknown).
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Every daemon's command line: `run --config FILE`, plus the operator commands.
#[derive(Subcommand, Debug)]
pub enum DaemonCommand {
    /// Run the daemon.
    Run {
        /// Path of the TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    #[command(flatten)]
    Operator(OperatorCommand),
}

/// Where the kernel hands out transparent huge pages unasked (`enabled = always`), each
/// region the allocator touches becomes 2 MiB of RSS (mimalloc's aligned arenas: 39 MiB idle
/// instead of 18 on such a kernel): opt the process out (`prctl(PR_SET_THP_DISABLE)`, kept
/// across fork and exec). Failure only costs memory, so it is ignored.
fn disable_transparent_huge_pages() {
    let _ = nix::sys::prctl::set_thp_disable(true);
}

/// A daemon binary's `main`: parses `DaemonCommand` plus the daemon's own subcommands `E`
/// under `name`/`about`, then runs the daemon (`run`, given its config `C` loaded from the
/// `--config` file, on a runtime of `node.runtime_threads`), carries out an operator
/// command for `role`, or hands an `E` to `extra`.
pub fn daemon_main<C, E, R, RunFut, X, ExtraFut>(
    name: &'static str,
    about: &'static str,
    role: Role,
    run: R,
    extra: X,
) -> ExitCode
where
    C: crate::config::NodeConfig,
    E: Subcommand,
    R: FnOnce(C) -> RunFut,
    RunFut: Future<Output = Result<(), String>>,
    X: FnOnce(E) -> ExtraFut,
    ExtraFut: Future<Output = Result<(), String>>,
{
    use clap::FromArgMatches;
    disable_transparent_huge_pages();
    enum Parsed<E> {
        Common(DaemonCommand),
        Own(E),
    }
    let command = E::augment_subcommands(DaemonCommand::augment_subcommands(
        clap::Command::new(name)
            .about(about)
            .version(env!("CARGO_PKG_VERSION"))
            .subcommand_required(true)
            .arg_required_else_help(true),
    ));
    let parsed = command
        .try_get_matches()
        .and_then(|matches| match matches.subcommand_name() {
            Some(sub) if E::has_subcommand(sub) => E::from_arg_matches(&matches).map(Parsed::Own),
            _ => DaemonCommand::from_arg_matches(&matches).map(Parsed::Common),
        });
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The config is read before the runtime exists: it says how many threads to give it.
    enum Job<C, E> {
        Run(C),
        Operator(OperatorCommand),
        Own(E),
    }
    let job = match parsed {
        Parsed::Common(DaemonCommand::Run { config }) => match C::load(&config) {
            Ok(config) => Job::Run(config),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
        Parsed::Common(DaemonCommand::Operator(command)) => Job::Operator(command),
        Parsed::Own(command) => Job::Own(command),
    };
    let threads = match &job {
        Job::Run(config) => config.runtime_threads(),
        _ => 0,
    };
    block_on_exit_code(threads, async move {
        match job {
            Job::Run(config) => run(config).await,
            Job::Operator(command) => dispatch(command, role).await.map_err(|e| e.to_string()),
            Job::Own(command) => extra(command).await,
        }
    })
}

/// Runs `body` on a multi-threaded runtime of `threads` workers (0: tokio's default, one per
/// CPU core): `Ok` exits 0, `Err` prints it and exits 1.
fn block_on_exit_code<Fut, E>(threads: usize, body: Fut) -> ExitCode
where
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => {
            crate::metrics::SHARED
                .runtime_workers
                .set(rt.metrics().num_workers() as u64);
            rt
        }
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default filter parses, and keeps this daemon's info lines while dropping the
    /// libraries' (a typo in a directive would silently log everything at error only).
    #[test]
    fn the_default_log_filter_keeps_our_info_and_the_libraries_warnings() {
        let filter = tracing_subscriber::EnvFilter::try_new(DEFAULT_LOG_FILTER).expect("parses");
        let text = filter.to_string();
        for directive in ["openraft=warn", "fjall=warn", "lsm_tree=warn"] {
            assert!(text.contains(directive), "{text}");
        }
        assert_eq!(
            filter.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::INFO)
        );
    }
}
