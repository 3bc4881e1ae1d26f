#!/usr/bin/env bash
# Quick start: build release binaries and run a local deployment — two sites of three edge
# nodes, each shipping to a three-node hub group (Ctrl-C stops it all).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --bins
DIR=${LAB_DIR:-/tmp/openclaw-lab}
rm -rf "$DIR"
exec target/release/openclaw-lab up --sites "${SITES:-2}" --edge-nodes "${EDGE_NODES:-3}" \
  --hub-nodes "${HUB_NODES:-3}" --dir "$DIR"
