//! `openclaw-edge`: the OpenClaw daemon for site gateways, and its operator commands.

mod api;
mod cli;
mod config;
mod edge;
mod metrics;
mod uplink;

/// mimalloc instead of glibc's malloc: a node's allocations are many, small and freed on
/// other threads (values, encoded entries, HTTP buffers), where glibc's arenas spent ~18% of
/// a loaded node's CPU (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`; perf,
/// docs/benchmarks.md 2026-12-06 night). Built with `no_thp`: mimalloc then never asks for
/// transparent huge pages, which cost 2 MiB of RSS per touched region (25 MiB idle);
/// `daemon_main` also opts the process out where the kernel gives them unasked.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
