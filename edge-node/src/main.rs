//! `openclaw-edge`: the OpenClaw daemon for site gateways, and its operator commands.

mod api;
mod cli;
mod config;
mod edge;
mod metrics;
mod uplink;

fn main() -> std::process::ExitCode {
    cli::main()
}
