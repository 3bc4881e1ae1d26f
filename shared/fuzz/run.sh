#!/usr/bin/env bash
# Short fuzzing pass over every decoder of untrusted bytes in the `shared` crate (for CI).
#
#   shared/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
#
# Works from any directory. Installs cargo-fuzz if missing (needs the nightly toolchain),
# builds all targets once, runs each for SECONDS_PER_TARGET with its committed seeds
# (corpus/<target>/, read only; new inputs go to target/corpus/<target>/), and prints a
# summary. Exits non-zero if any target crashed, leaked, timed out or ran out of memory;
# the input that did it is in artifacts/<target>/ (reproduce: cargo +nightly fuzz run
# <target> artifacts/<target>/<file>, from shared/fuzz/).
#
# Environment: FUZZ_TOOLCHAIN (default nightly), FUZZ_SANITIZER (default address),
# FUZZ_TIMEOUT (seconds one input may take before it counts as a hang, default 30).
set -uo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL_TARGETS=(wire_frame ship_batch snapshot_file snapshot_install config_toml http_request)

SECONDS_PER_TARGET="${1:-20}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]  (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
fi
shift $(($# > 0 ? 1 : 0))
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
SANITIZER="${FUZZ_SANITIZER:-address}"
TIMEOUT="${FUZZ_TIMEOUT:-30}"

# Longest input per target: enough for every structure the decoder reads, small enough to
# keep executions fast (frames and batches are bounded far above this by their own limits).
max_len() {
    case "$1" in
        wire_frame) echo 16384 ;;
        ship_batch) echo 65536 ;;
        snapshot_file | snapshot_install) echo 65536 ;;
        config_toml) echo 8192 ;;
        http_request) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

for t in "${TARGETS[@]}"; do
    if [ ! -f "$FUZZ_DIR/fuzz_targets/$t.rs" ]; then
        echo "unknown target '$t' (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "== installing the $TOOLCHAIN toolchain (cargo-fuzz needs nightly)"
    rustup toolchain install "$TOOLCHAIN" --profile minimal || exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 2
fi

cd "$FUZZ_DIR" || exit 2
LOG_DIR="$FUZZ_DIR/target/fuzz-logs"
mkdir -p "$LOG_DIR"

# Scratch files of the targets (snapshot files, a store, config files), removed at exit.
SCRATCH_BASE=/dev/shm
[ -d "$SCRATCH_BASE" ] && [ -w "$SCRATCH_BASE" ] || SCRATCH_BASE="${TMPDIR:-/tmp}"
OPENCLAW_FUZZ_SCRATCH="$(mktemp -d "$SCRATCH_BASE/openclaw-fuzz-run.XXXXXX")" || exit 2
export OPENCLAW_FUZZ_SCRATCH
trap 'rm -rf "$OPENCLAW_FUZZ_SCRATCH"' EXIT

start_all=$(date +%s)
echo "== building ${#TARGETS[@]} fuzz targets (cargo +$TOOLCHAIN fuzz build, sanitizer $SANITIZER)"
build_start=$(date +%s)
build_status=0
if [ ${#TARGETS[@]} -eq ${#ALL_TARGETS[@]} ]; then
    cargo +"$TOOLCHAIN" fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" || build_status=1
else
    for t in "${TARGETS[@]}"; do
        cargo +"$TOOLCHAIN" fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" "$t" || {
            build_status=1
            break
        }
    done
fi
build_secs=$(($(date +%s) - build_start))
if [ $build_status -ne 0 ]; then
    echo "fuzz targets failed to build" >&2
    exit 1
fi
echo "== built in ${build_secs}s"

# Run the built binaries directly: `cargo fuzz run` would rebuild first, and a source edit
# during the run would then be compiled into the middle of it.
HOST="$(rustc +"$TOOLCHAIN" -vV | sed -n 's/^host: //p')"
BIN_DIR="$FUZZ_DIR/target/$HOST/release"
# As `cargo fuzz run` sets it (Rust and C globals trip ASan's ODR check).
[ "$SANITIZER" = address ] && export ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

declare -A EXECS SECS RESULT
failed=0
total_execs=0
for t in "${TARGETS[@]}"; do
    work="$FUZZ_DIR/target/corpus/$t"
    seeds="$FUZZ_DIR/corpus/$t"
    mkdir -p "$work" "$seeds" "$FUZZ_DIR/artifacts/$t"
    log="$LOG_DIR/$t.log"
    echo "== $t: ${SECONDS_PER_TARGET}s, max_len $(max_len "$t")"
    t_start=$(date +%s)
    "$BIN_DIR/$t" "$work" "$seeds" \
        -artifact_prefix="$FUZZ_DIR/artifacts/$t/" \
        -max_total_time="$SECONDS_PER_TARGET" \
        -max_len="$(max_len "$t")" \
        -rss_limit_mb=2048 \
        -timeout="$TIMEOUT" \
        -print_final_stats=1 \
        >"$log" 2>&1
    status=$?
    SECS[$t]=$(($(date +%s) - t_start))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    if [ -z "$execs" ]; then # no final stats (e.g. a crash before them): the last status line
        execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    fi
    execs=${execs:-0}
    EXECS[$t]=$execs
    total_execs=$((total_execs + execs))
    if [ $status -eq 0 ]; then
        RESULT[$t]="ok"
    else
        failed=1
        if grep -q 'ERROR: libFuzzer: out-of-memory\|malloc(.*) exceeds limit' "$log"; then
            kind="OUT OF MEMORY"
        elif grep -q 'ERROR: libFuzzer: timeout' "$log"; then
            kind="TIMEOUT"
        elif grep -q 'ERROR: LeakSanitizer' "$log"; then
            kind="LEAK"
        elif grep -q 'ERROR: AddressSanitizer\|ERROR: libFuzzer: deadly signal\|panicked at' "$log"; then
            kind="CRASH"
        else
            kind="FAILED (exit $status)"
        fi
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //')
        RESULT[$t]="$kind${artifact:+: $artifact}"
        echo "-- $t: $kind; log $log" >&2
        grep -m1 -A3 'panicked at\|ERROR: ' "$log" >&2 || tail -20 "$log" >&2
    fi
done

echo
printf '%-18s %14s %8s %10s  %s\n' target executions seconds "execs/s" result
printf '%-18s %14s %8s %10s  %s\n' ------------------ -------------- -------- ---------- ------
for t in "${TARGETS[@]}"; do
    secs=${SECS[$t]}
    rate=$((secs > 0 ? EXECS[$t] / secs : EXECS[$t]))
    printf '%-18s %14s %8s %10s  %s\n' "$t" "${EXECS[$t]}" "$secs" "$rate" "${RESULT[$t]}"
done
echo
echo "total executions: $total_execs"
echo "build: ${build_secs}s; whole run: $(($(date +%s) - start_all))s; logs in $LOG_DIR"
if [ $failed -ne 0 ]; then
    echo "FAILED: a fuzz target found a bug (inputs in $FUZZ_DIR/artifacts/)" >&2
    exit 1
fi
