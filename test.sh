#!/usr/bin/env bash
# The one test command: builds every binary (cluster tests start real processes), runs every
# test in the workspace, checks the HTTP API contract black-box against a lab, and runs the
# bench in a tiny configuration so it keeps working (its figures are not judged here).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --workspace --bins
cargo test --workspace -- --test-threads=1
if [ -f ../shared/tools/contract-check.sh ]; then
  bash ../shared/tools/contract-check.sh target/debug/openclaw-lab
else
  echo "contract check skipped: ../shared/tools/contract-check.sh not found"
fi
target/debug/openclaw-bench --seconds 1 --clients 1,4 --read-clients 2 --nodes 1 >/dev/null
echo "bench smoke run: ok"
