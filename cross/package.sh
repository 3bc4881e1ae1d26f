#!/usr/bin/env bash
# Packages the gateway binaries built by cross/build.sh: per target, a .deb and a plain
# tarball for each daemon, with the binary, the systemd unit, an example config, the system
# user and the state directory (DESIGN.md §6).
#
#   cross/package.sh [TARGET...]       TARGET: aarch64 | armv7 | x86_64 (default: aarch64 armv7)
#
# Binaries come from dist/<target>/ (BIN_DIR overrides, e.g. BIN_DIR=target/debug for a
# package test). VERSION defaults to the workspace version. Output: dist/pkg/.
# Install, upgrade and remove keep /var/lib/openclaw* and edited configs; purge removes the
# configs only. A fresh install does not start the daemon: its config needs the site's
# addresses and keys first.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)}
DAEMONS=${DAEMONS:-edge hub}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)
out=dist/pkg
mkdir -p "$out"

deb_arch() {
  case "$1" in
    aarch64) echo arm64 ;;
    armv7) echo armhf ;;
    x86_64) echo amd64 ;;
    *) echo "unknown target '$1' (aarch64, armv7 or x86_64)" >&2; exit 2 ;;
  esac
}

describe() {
  case "$1" in
    edge) echo "OpenClaw edge replication daemon
 Runs on site gateways: three or five form a Raft group over QUIC with mutual TLS,
 keep the site's keys and events in an LSM store, and ship every committed event to
 the regional hub exactly once." ;;
    hub) echo "OpenClaw hub daemon
 Merges many sites' event logs, answers queries over them and is the disaster-recovery
 primary of every site." ;;
  esac
}

for t in "${targets[@]}"; do
  arch=$(deb_arch "$t")
  bin_dir=${BIN_DIR:-dist/$t}
  for d in $DAEMONS; do
    bin="$bin_dir/openclaw-$d"
    [ -x "$bin" ] || { echo "$bin is missing: run cross/build.sh $t first" >&2; exit 1; }
    name="openclaw-$d"

    # The .deb
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    install -D -m 0755 "$bin" "$root/usr/bin/$name"
    install -D -m 0644 "configs/$name.service" "$root/lib/systemd/system/$name.service"
    install -D -m 0640 "configs/$d.toml" "$root/etc/openclaw/$d.toml"
    install -D -m 0644 README.md "$root/usr/share/doc/$name/README.md"
    install -D -m 0644 docs/edge-contract.md "$root/usr/share/doc/$name/contract.md"
    mkdir -p "$root/DEBIAN"
    size_kb=$(du -sk "$root" | cut -f1)
    cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $VERSION
Architecture: $arch
Maintainer: OpenClaw <dev@openclaw.invalid>
Installed-Size: $size_kb
Depends: libc6 (>= 2.17), passwd
Section: net
Priority: optional
Description: $(describe "$d")
CONTROL
    echo "/etc/openclaw/$d.toml" > "$root/DEBIAN/conffiles"
    {
      echo '#!/bin/sh'
      echo 'set -e'
      echo "DAEMON=$d"
      cat cross/pkg/setup.sh
      cat <<POSTINST
if [ "\$1" = configure ]; then
  setup_openclaw
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ -n "\$2" ]; then
      # An upgrade: restart a running daemon on the new binary (its data is untouched).
      systemctl try-restart $name.service || true
    else
      echo "$name installed: edit /etc/openclaw/$d.toml (site, peers, keys), then" >&2
      echo "  systemctl enable --now $name" >&2
    fi
  fi
fi
POSTINST
    } > "$root/DEBIAN/postinst"
    cat > "$root/DEBIAN/prerm" <<PRERM
#!/bin/sh
set -e
# On remove, stop the daemon (SIGTERM: it hands leadership over and flushes). On upgrade
# the running daemon keeps going until postinst restarts it.
if [ "\$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now $name.service >/dev/null 2>&1 || true
fi
PRERM
    cat > "$root/DEBIAN/postrm" <<POSTRM
#!/bin/sh
set -e
[ -d /run/systemd/system ] && systemctl daemon-reload >/dev/null 2>&1 || true
if [ "\$1" = purge ]; then
  # The site's data is never deleted by the package manager: a gateway's store may hold
  # events not yet at the hub. Remove it by hand once that is known to be safe.
  echo "$name purged; its data (if any) stays in /var/lib/openclaw*" >&2
fi
POSTRM
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
    deb="$out/${name}_${VERSION}_${arch}.deb"
    dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
    rm -rf "$root"
    trap - EXIT

    # The tarball: the same files and an install.sh doing what postinst does.
    base="$name-$VERSION-$t-linux"
    stage=$(mktemp -d)
    mkdir -p "$stage/$base"
    install -m 0755 "$bin" "$stage/$base/$name"
    install -m 0644 "configs/$name.service" "$stage/$base/$name.service"
    install -m 0644 "configs/$d.toml" "$stage/$base/$d.toml.example"
    install -m 0644 README.md "$stage/$base/README.md"
    {
      echo '#!/bin/sh'
      echo "# Installs $name from this directory (as root); keeps existing config and data."
      echo 'set -e'
      echo 'cd "$(dirname "$0")"'
      echo "DAEMON=$d"
      cat cross/pkg/setup.sh
      cat <<INSTALL
install -D -m 0755 $name /usr/local/bin/$name
sed 's#/usr/bin/$name#/usr/local/bin/$name#' $name.service > /etc/systemd/system/$name.service
if [ ! -e /etc/openclaw/$d.toml ]; then
  install -D -m 0640 $d.toml.example /etc/openclaw/$d.toml
fi
setup_openclaw
[ -d /run/systemd/system ] && systemctl daemon-reload || true
echo "$name installed: edit /etc/openclaw/$d.toml, then systemctl enable --now $name"
INSTALL
    } > "$stage/$base/install.sh"
    chmod 0755 "$stage/$base/install.sh"
    tar -C "$stage" --owner=0 --group=0 -czf "$out/$base.tar.gz" "$base"
    rm -rf "$stage"
    printf '%-44s %10s bytes\n' "$deb" "$(stat -c %s "$deb")"
    printf '%-44s %10s bytes\n' "$out/$base.tar.gz" "$(stat -c %s "$out/$base.tar.gz")"
  done
done
