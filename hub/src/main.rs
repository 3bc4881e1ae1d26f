//! `openclaw-hub`: the cloud daemon that merges sites' logs (ingest over QUIC from each
//! site's edge leader), answers queries over them, and is their DR primary.

mod api;
mod cli;
mod config;
mod hub;
mod ingest;

/// mimalloc, as in openclaw-edge (see its main.rs): ~20% less hub CPU per ingested event
/// than glibc's malloc (openclaw-ship-bench, docs/benchmarks.md 2026-12-06 night).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
