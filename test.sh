#!/usr/bin/env bash
# The one test command: builds every binary (cluster tests start real processes), then
# runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --workspace --bins
cargo test --workspace -- --test-threads=1
