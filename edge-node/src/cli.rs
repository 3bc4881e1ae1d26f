//! Command line: `run` starts the daemon; the other commands talk to a running one over
//! its HTTP API, or make dev certificates. Exit codes: 0 ok, 1 runtime error, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use shared::config::SiteId;
use shared::identity::{create_dev_ca, create_node_cert, NodeIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;

use crate::config::EdgeConfig;
use crate::node::Node;

#[derive(Parser)]
#[command(
    name = "openclaw-edge",
    version,
    about = "OpenClaw edge daemon: a Raft-replicated store for site gateways"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Path of the TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
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

#[derive(clap::Args)]
struct Target {
    /// Client API URL of any node of the group.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    addr: String,
}

#[derive(Subcommand)]
enum MembersAction {
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

#[derive(Subcommand)]
enum CertsAction {
    /// Create a dev CA (ca.pem, ca.key) in DIR.
    Ca {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a node certificate (node-ID.pem, node-ID.key) from the dev CA in DIR.
    Node {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        site: String,
        #[arg(long)]
        id: u64,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => run(config).await,
        Command::Status(t) => print_http(&t.addr, "GET", "/v1/status", None).await,
        Command::Members { action } => match action {
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
                print_http(
                    &target.addr,
                    "POST",
                    &format!("/v1/members/{id}/promote"),
                    None,
                )
                .await
            }
            MembersAction::Remove { target, id } => {
                print_http(&target.addr, "DELETE", &format!("/v1/members/{id}"), None).await
            }
        },
        Command::Snapshot(t) => print_http(&t.addr, "POST", "/v1/admin/snapshot", None).await,
        Command::TransferLeader { target, to } => {
            let body = serde_json::json!({"to": to}).to_string();
            print_http(
                &target.addr,
                "POST",
                "/v1/admin/transfer-leader",
                Some(body),
            )
            .await
        }
        Command::Certs { action } => match action {
            CertsAction::Ca { dir } => {
                create_dev_ca(&dir)?;
                println!("dev CA written to {}", dir.display());
                Ok(())
            }
            CertsAction::Node { dir, site, id } => {
                let site = SiteId::parse(&site).map_err(anyhow::Error::msg)?;
                if id == 0 {
                    bail!("--id must be >= 1");
                }
                let identity = NodeIdentity::edge(site, id);
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: under systemd or a lab, one plain line per event.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = EdgeConfig::load(&config_path)?;
    init_logging();
    let listen = config.http.listen;
    info!(node = config.node.id, site = %config.node.site, raft = %config.raft.listen, http = %listen, "starting");
    let node = Node::start(config).await.context("starting the node")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the client API on {listen}"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = crate::api::router(node.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    crate::supervise::start_leadership_metrics(node.clone());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    crate::supervise::start_watchdog(node.clone());
    info!("serving");
    wait_for_signal().await?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    info!("stopping");
    shutdown(node, stop_tx, server).await;
    info!("stopped");
    Ok(())
}

async fn shutdown(
    node: Arc<Node>,
    stop_http: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    node.shutdown().await;
    let _ = stop_http.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), server).await;
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Longest response an operator command reads.
const MAX_CLI_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// A minimal HTTP/1.1 exchange with a node's client API (loopback, no TLS).
async fn print_http(
    base: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<()> {
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("--addr `{base}` must start with http://"))?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream
        .take(MAX_CLI_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let pretty = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.to_owned());
    println!("{pretty}");
    if !(200..300).contains(&status) {
        bail!("{method} {path} answered HTTP {status}");
    }
    Ok(())
}
