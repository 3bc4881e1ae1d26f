#!/usr/bin/env bash
# Installs what `openclaw-bench --compare` runs against:
# - Debian's etcd-server (system package, from the system's own sources);
# - nats-server >= 2.10 (JetStream `sync_interval: always` needs 2.10; Debian 12 ships 2.9.10),
#   taken from Debian trixie's package WITHOUT touching the system's apt sources or state: a
#   private sources list and private apt lists/cache under $OPENCLAW_COMPARE_DIR, `apt-get
#   download` of the .deb only, unpacked with `dpkg-deb -x` into $OPENCLAW_COMPARE_DIR/nats.
#   Nothing is registered with dpkg; delete the directory to uninstall. The bench finds the
#   binary at $OPENCLAW_COMPARE_DIR/nats/usr/sbin/nats-server (or takes --nats-server PATH).
set -euo pipefail

OPENCLAW_COMPARE_DIR="${OPENCLAW_COMPARE_DIR:-/opt/openclaw-compare}"
# The suite the private sources list names; its nats-server must be >= NATS_MIN_VERSION.
NATS_SUITE="${NATS_SUITE:-trixie}"
NATS_MIN_VERSION=2.10

if ! command -v etcd >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server
fi
etcd --version | head -1

nats_bin="$OPENCLAW_COMPARE_DIR/nats/usr/sbin/nats-server"
version_ok() { # $1: a nats-server binary
  local v
  v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p' | head -1)"
  [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$NATS_MIN_VERSION" "$v" | sort -V | head -1)" = "$NATS_MIN_VERSION" ]
}
if [ -x "$nats_bin" ] && version_ok "$nats_bin"; then
  echo "nats-server already in $OPENCLAW_COMPARE_DIR/nats: $("$nats_bin" --version)"
  exit 0
fi

apt_dir="$OPENCLAW_COMPARE_DIR/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d" \
  "$apt_dir/preferences.d" "$apt_dir/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $NATS_SUITE main" \
  >"$apt_dir/sources.list"
: >"$apt_dir/preferences"
# Every apt path that update/download write or read for source selection points at the
# private directory; the system's dpkg status is only read (for dependency checks below).
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list"
  -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
  -o "Dir::Etc::Preferences=$apt_dir/preferences"
  -o "Dir::Etc::PreferencesParts=$apt_dir/preferences.d"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o "Dir::Cache::pkgcache="
  -o "Dir::Cache::srcpkgcache="
  -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" update -qq
(cd "$apt_dir/debs" && rm -f nats-server_*.deb && apt-get "${apt_opts[@]}" download nats-server)
deb="$(ls "$apt_dir"/debs/nats-server_*.deb | head -1)"
echo "downloaded $(basename "$deb")"

# The package's dependencies: Debian builds nats-server as a Go binary; check whatever it
# declares (typically only libc6, or nothing) is satisfied by this system's packages.
depends="$(dpkg-deb -f "$deb" Depends || true)"
echo "nats-server Depends: ${depends:-(none)}"
if [ -n "$depends" ]; then
  IFS=',' read -ra deps <<<"$depends"
  for dep in "${deps[@]}"; do
    dep="$(echo "$dep" | sed 's/|.*//; s/^ *//; s/ *$//')"
    name="${dep%% *}"
    want="$(echo "$dep" | sed -n 's/.*(>= *\([^)]*\)).*/\1/p')"
    have="$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || true)"
    if [ -z "$have" ]; then
      echo "missing dependency $name (needed: $dep)" >&2
      exit 1
    fi
    if [ -n "$want" ] && ! dpkg --compare-versions "$have" ge "$want"; then
      echo "dependency $name is $have, nats-server needs >= $want" >&2
      exit 1
    fi
  done
fi

rm -rf "$OPENCLAW_COMPARE_DIR/nats"
dpkg-deb -x "$deb" "$OPENCLAW_COMPARE_DIR/nats"
if ! version_ok "$nats_bin"; then
  echo "$nats_bin is not nats-server >= $NATS_MIN_VERSION" >&2
  exit 1
fi
echo "nats-server in $OPENCLAW_COMPARE_DIR/nats: $("$nats_bin" --version)"
