//! What both daemons' command lines share: the operator commands that talk to a running
//! node over its client API, dev certificates, logging, signals, and the exit-code contract
//! (0 ok, 1 runtime error, 2 usage; DESIGN.md §4.2).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| OperatorError::Usage(format!("--addr `{base}` must start with http://")))?
        .trim_end_matches('/');
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
    let pretty = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_owned());
    println!("{pretty}");
    if !(200..300).contains(&status) {
        return Err(OperatorError::Status {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
        });
    }
    Ok(())
}

/// Logs through `tracing` to stderr: colours only on a terminal; under systemd or a lab, one
/// plain line per event. `RUST_LOG` overrides the level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
/// SIGINT, runs `stop` (the daemon's own shutdown: hand leadership over, flush), then stops
/// the HTTP server.
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
    crate::group::supervise::start_watchdog(group);
    tracing::info!("serving");
    wait_for_signal().await.map_err(OperatorError::Signals)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping");
    stop().await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
    tracing::info!("stopped");
    Ok(())
}

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

/// A daemon binary's `main`: parses `DaemonCommand` under `name`/`about`, then either runs the
/// daemon (`run`, given the config path) or carries out an operator command for `role`.
pub fn daemon_main<F, Fut>(name: &'static str, about: &'static str, role: Role, run: F) -> ExitCode
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    use clap::FromArgMatches;
    let command = DaemonCommand::augment_subcommands(
        clap::Command::new(name)
            .about(about)
            .version(env!("CARGO_PKG_VERSION"))
            .subcommand_required(true)
            .arg_required_else_help(true),
    );
    let parsed = command
        .try_get_matches()
        .and_then(|matches| DaemonCommand::from_arg_matches(&matches));
    let command = match parsed {
        Ok(command) => command,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    block_on_exit_code(async move {
        match command {
            DaemonCommand::Run { config } => run(config).await,
            DaemonCommand::Operator(command) => {
                dispatch(command, role).await.map_err(|e| e.to_string())
            }
        }
    })
}

/// Runs `body` on a multi-threaded runtime: `Ok` exits 0, `Err` prints it and exits 1.
fn block_on_exit_code<Fut, E>(body: Fut) -> ExitCode
where
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
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
