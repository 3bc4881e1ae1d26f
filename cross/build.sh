#!/usr/bin/env bash
# Builds stripped gateway binaries of openclaw-edge and openclaw-hub for ARM (and x86_64),
# linked against an old glibc so they run on the gateways people have (Debian 10/11,
# Raspberry Pi OS bullseye, Ubuntu 18.04+), and reports each binary's size and glibc floor.
#
#   cross/build.sh [TARGET...]      TARGET: aarch64 | armv7 | x86_64   (default: aarch64 armv7)
#
# Output: dist/<target>/openclaw-{edge,hub}. Uses rustup targets and cargo-zigbuild with zig
# from PyPI as the C compiler and linker (ring and zstd build C); installs what is missing.
# Environment: GLIBC_FLOOR (default 2.17, the oldest glibc with aarch64 support),
# PROFILE (default dist: see Cargo.toml), BINS (default "openclaw-edge openclaw-hub").
set -euo pipefail
cd "$(dirname "$0")/.."

GLIBC_FLOOR=${GLIBC_FLOOR:-2.17}
PROFILE=${PROFILE:-dist}
BINS=${BINS:-openclaw-edge openclaw-hub}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)

triple() {
  case "$1" in
    aarch64) echo aarch64-unknown-linux-gnu ;;
    armv7) echo armv7-unknown-linux-gnueabihf ;;
    x86_64) echo x86_64-unknown-linux-gnu ;;
    *) echo "unknown target '$1' (aarch64, armv7 or x86_64)" >&2; exit 2 ;;
  esac
}

ensure_tools() {
  if ! command -v cargo-zigbuild >/dev/null || ! python3 -m ziglang version >/dev/null 2>&1; then
    echo "installing cargo-zigbuild and zig (PyPI)" >&2
    if ! python3 -m pip --version >/dev/null 2>&1 && command -v apt-get >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    # Debian's own python3 refuses pip installs outside a venv (PEP 668, "externally
    # managed"); these two are build tools with no Debian package, so install them anyway.
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
      ziglang cargo-zigbuild
  fi
  # pip puts the cargo-zigbuild script here, which need not be on PATH.
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
  hash -r
  if ! command -v objdump >/dev/null || ! objdump --help | grep aarch64 >/dev/null; then
    if command -v apt-get >/dev/null; then
      echo "installing binutils-multiarch (objdump for ARM binaries)" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils-multiarch >/dev/null
    fi
  fi
}

packages=()
for bin in $BINS; do
  case "$bin" in
    openclaw-edge) packages+=(-p openclaw-edge-node) ;;
    openclaw-hub) packages+=(-p openclaw-hub) ;;
    *) echo "unknown binary '$bin'" >&2; exit 2 ;;
  esac
done

ensure_tools
printf '%-32s %-15s %10s  %s\n' "target" "binary" "bytes" "needs glibc"
for t in "${targets[@]}"; do
  tr=$(triple "$t")
  rustup target list --installed | grep -x "$tr" >/dev/null || rustup target add "$tr" >&2
  cargo zigbuild --quiet --locked --profile "$PROFILE" --target "$tr.$GLIBC_FLOOR" \
    "${packages[@]}" --bins >&2
  mkdir -p "dist/$t"
  for bin in $BINS; do
    cp "target/$tr/$PROFILE/$bin" "dist/$t/$bin"
    size=$(stat -c %s "dist/$t/$bin")
    floor=$(objdump -T "dist/$t/$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -n 1)
    printf '%-32s %-15s %10s  %s\n' "$tr" "$bin" "$size" "${floor#GLIBC_}"
  done
done
