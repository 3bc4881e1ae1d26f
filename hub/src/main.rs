//! `openclaw-hub`: the cloud daemon that merges sites' logs and is their DR primary.
//!
//! Not built yet (the hub and uplink issue). The binary exists so the workspace layout,
//! packaging and `--help` are in place; `run` refuses with a clear message.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "openclaw-hub",
    version,
    about = "OpenClaw hub daemon (not implemented yet)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub daemon (not implemented yet).
    Run {
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Run { config } => {
            let _ = shared::limits::MAX_FRAME_BYTES;
            eprintln!(
                "error: openclaw-hub is not implemented yet (config {} not read); \
                 see the hub and uplink issue",
                config.display()
            );
            std::process::ExitCode::from(1)
        }
    }
}
