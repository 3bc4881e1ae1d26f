#!/usr/bin/env bash
# The one test command: builds every binary (cluster tests start real processes) and the
# aarch64 gateway build, runs every test in the workspace (the emulated-gateway scenario
# included), checks the HTTP API contract black-box against a lab, runs the bench in a tiny
# configuration so it keeps working (its figures are not judged here), fuzzes every decoder
# for FUZZ_SECONDS (default 10) each, and — under CI, as it installs packages on the
# machine — the package lifecycle test.
#
# Installs what it needs when missing (root, Debian): qemu-user-static and libc6-arm64-cross
# (the emulated gateways and their glibc), binutils-multiarch (objdump for ARM binaries),
# iproute2 and socat (namespaces), faketime (clock jumps), openssh-server and procps (the
# real-device runner against loopback, which checks a node is gone with pgrep), systemd
# (systemd-analyze verify), the fuse module (power cuts); cross/build.sh installs zig
# and cargo-zigbuild from PyPI, shared/fuzz/run.sh cargo-fuzz. HIL_PROFILE picks the aarch64
# build's profile (default dist, what ships).
set -euo pipefail
cd "$(dirname "$0")"
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need+=(libc6-arm64-cross)
command -v ip >/dev/null || need+=(iproute2)
command -v socat >/dev/null || need+=(socat)
command -v faketime >/dev/null || need+=(faketime)
command -v pgrep >/dev/null || need+=(procps)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v systemd-analyze >/dev/null || need+=(systemd)
objdump --help 2>/dev/null | grep aarch64 >/dev/null || need+=(binutils-multiarch)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The fault rig's power-cut disks are FUSE mounts made directly (root, no fusermount); as
# root the power-cut tests must run, not skip.
[ -e /dev/fuse ] || modprobe fuse || true
if [ "$(id -u)" = 0 ]; then export OPENCLAW_REQUIRE_POWER_CUTS=1; fi
cargo build --workspace --bins
BINS=openclaw-edge PROFILE="${HIL_PROFILE:-dist}" cross/build.sh aarch64
export OPENCLAW_HIL_EDGE_BIN="$PWD/dist/aarch64/openclaw-edge"
cargo test --workspace -- --test-threads=1
if [ -f ../shared/tools/contract-check.sh ]; then
  bash ../shared/tools/contract-check.sh target/debug/openclaw-lab
else
  echo "contract check skipped: ../shared/tools/contract-check.sh not found"
fi
target/debug/openclaw-bench --seconds 1 --clients 1,4 --keyed-append-clients 2 --conditional-clients 2 --read-clients 2 --nodes 1 --failovers 1 >/dev/null
echo "bench smoke run: ok"
# Every decoder of untrusted bytes, fuzzed briefly (cargo-fuzz on nightly; installs it).
shared/fuzz/run.sh "${FUZZ_SECONDS:-10}"
bash cross/test-packages.sh
