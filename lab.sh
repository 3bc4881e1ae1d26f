#!/usr/bin/env bash
# Quick start: build release binaries and run a local three-node edge group (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --bins
DIR=${LAB_DIR:-/tmp/openclaw-lab}
rm -rf "$DIR"
exec target/release/openclaw-lab up --edge-nodes "${EDGE_NODES:-3}" --dir "$DIR"
