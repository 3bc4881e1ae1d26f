#!/usr/bin/env bash
# CPU flamegraphs of a loaded 3-node edge group: the leader and one follower while
# `openclaw-bench` drives 64 writers (or what BENCH_ARGS says) against a lab.
#
#   hil-tests/profile.sh [OUT_DIR]        (default: target/profile)
#
# Writes OUT_DIR/{leader,follower}.svg (flamegraphs), OUT_DIR/{leader,follower}.folded
# (collapsed stacks) and prints each node's top functions by self time. Installs what it
# needs: Debian's linux-perf, and inferno (collapse + flamegraph) from crates.io into
# OUT_DIR/tools. Needs root (perf attaches to the nodes) and a release build, which it
# makes. Figures vary with the machine; docs/benchmarks.md says how to read them.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$repo/target/profile}")"
seconds="${PROFILE_SECONDS:-4}"
bench_args="${BENCH_ARGS:---clients 64 --append-clients 0 --keyed-append-clients 0 --conditional-clients 0 --read-clients 1 --failovers 0}"
mkdir -p "$out/tools"

if ! command -v perf >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf
fi
tools="$out/tools/bin"
if [ ! -x "$tools/inferno-flamegraph" ]; then
  cargo install --quiet --locked --root "$out/tools" inferno
fi

cd "$repo"
cargo build --release --bins --quiet
lab_dir="$out/lab"
rm -rf "$lab_dir"
target/release/openclaw-lab up --dir "$lab_dir" >"$out/lab.log" 2>&1 &
lab=$!
trap 'kill -TERM $lab 2>/dev/null; wait $lab 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  [ -s "$lab_dir/endpoints.json" ] && break
  kill -0 $lab 2>/dev/null || { cat "$out/lab.log"; exit 1; }
  sleep 0.1
done
[ -s "$lab_dir/endpoints.json" ] || { echo "the lab did not come up" >&2; exit 1; }

# The leader's pid and a follower's, from endpoints.json and the leader's /v1/status.
read -r leader_pid follower_pid < <(python3 - "$lab_dir/endpoints.json" <<'PY'
import json, sys, time, urllib.request
nodes = json.load(open(sys.argv[1]))["sites"][0]["nodes"]
for _ in range(300):
    try:
        status = json.load(urllib.request.urlopen(nodes[0]["http"] + "/v1/status", timeout=2))
        leader = status.get("leader_id")
    except OSError:
        leader = None
    if leader is not None:
        break
    time.sleep(0.1)
else:
    sys.exit("no leader")
lead = [n for n in nodes if n["id"] == leader][0]
follow = [n for n in nodes if n["id"] != leader][0]
print(lead["pid"], follow["pid"])
PY
)

# The bench runs its workload for longer than perf records, so every sample is under load.
target/release/openclaw-bench --endpoints "$lab_dir/endpoints.json" \
  --seconds $((seconds + 3)) $bench_args >"$out/bench.txt" 2>&1 &
bench=$!
sleep 1.5
perf record -F 499 -g --call-graph dwarf,16384 -p "$leader_pid" -o "$out/leader.data" -- sleep "$seconds" 2>/dev/null &
perf_leader=$!
perf record -F 499 -g --call-graph dwarf,16384 -p "$follower_pid" -o "$out/follower.data" -- sleep "$seconds" 2>/dev/null &
perf_follower=$!
wait $perf_leader $perf_follower
wait $bench
cat "$out/bench.txt"

for role in leader follower; do
  perf script -i "$out/$role.data" 2>/dev/null | "$tools/inferno-collapse-perf" >"$out/$role.folded"
  "$tools/inferno-flamegraph" --title "openclaw-edge $role, $bench_args" --minwidth 0.2 \
    <"$out/$role.folded" >"$out/$role.svg"
  echo "== $role: share of samples by thread, in parts of the code (inclusive), top functions (self)"
  python3 - "$out/$role.folded" <<'PY'
import collections, sys
# Inclusive shares: a sample counts for a part if any frame of its stack contains the marker.
PARTS = [
    ("HTTP server (axum, hyper)", "axum::serve::handle_connection"),
    ("QUIC connection driver (quinn)", "ConnectionDriver"),
    ("Raft core and replication (openraft)", "openraft::"),
    ("state machine apply", "shared::store::machine"),
    ("group-commit fsync", "fdatasync"),
    ("fjall memtable skiplist", "crossbeam_skiplist"),
    ("allocator (mimalloc)", "mi_"),
    ("in the kernel (system calls)", "do_syscall_64"),
    ("scheduler switches", "finish_task_switch"),
]
threads, parts, self_time = collections.Counter(), collections.Counter(), collections.Counter()
total = 0
for line in open(sys.argv[1]):
    stack, _, count = line.rstrip("\n").rpartition(" ")
    count = int(count)
    total += count
    frames = stack.split(";")
    threads[frames[0]] += count
    self_time[frames[-1]] += count
    for name, marker in PARTS:
        if marker in stack:
            parts[name] += count
share = lambda n: f"{100 * n / max(total, 1):5.1f}%"
for name, n in threads.most_common(6):
    print(f"{share(n)}  thread {name}")
for name, _ in PARTS:
    print(f"{share(parts[name])}  {name}")
for name, n in self_time.most_common(12):
    print(f"{share(n)}  self: {name[:100]}")
PY
done
echo "flamegraphs: $out/leader.svg $out/follower.svg"
