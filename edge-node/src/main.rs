//! `openclaw-edge`: the OpenClaw daemon for site gateways, and its operator commands.

mod api;
mod cli;
mod config;
mod metrics;
mod node;
mod rpc;
mod supervise;

fn main() -> std::process::ExitCode {
    cli::main()
}
