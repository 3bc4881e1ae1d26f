//! `openclaw-hub`: the cloud daemon that merges sites' logs (ingest over QUIC from each
//! site's edge leader), answers queries over them, and is their DR primary.

mod api;
mod cli;
mod config;
mod hub;
mod ingest;

fn main() -> std::process::ExitCode {
    cli::main()
}
