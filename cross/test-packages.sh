#!/usr/bin/env bash
# Package lifecycle test: builds the x86_64 .deb from BIN_DIR (default target/debug, stripped:
# the package scripts are under test, not the build) and installs, upgrades, removes and purges it
# on THIS machine as root, checking that the data and edited configs survive, the user and
# directories are right, and `systemd-analyze verify` passes on the installed units.
# It changes the system: it runs only under CI=true or OPENCLAW_PACKAGE_TEST=1.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${CI:-}" != true ] && [ "${OPENCLAW_PACKAGE_TEST:-}" != 1 ]; then
  echo "package test skipped: it installs packages on this machine (set OPENCLAW_PACKAGE_TEST=1)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "package test needs root" >&2; exit 1; }
fail() { echo "package test FAILED: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Stripped copies: a debug build is ~200 MB of symbols that would only slow compression.
mkdir -p "$work/bin"
for d in edge hub; do
  cp "${BIN_DIR:-target/debug}/openclaw-$d" "$work/bin/"
  strip "$work/bin/openclaw-$d"
done
export BIN_DIR="$work/bin"

VERSION=0.0.1 DAEMONS="edge hub" cross/package.sh x86_64 >/dev/null
cp dist/pkg/openclaw-edge_0.0.1_amd64.deb dist/pkg/openclaw-hub_0.0.1_amd64.deb "$work/"
VERSION=0.0.2 DAEMONS="edge" cross/package.sh x86_64 >/dev/null
cp dist/pkg/openclaw-edge_0.0.2_amd64.deb "$work/"

for d in edge hub; do
  dpkg -i "$work/openclaw-${d}_0.0.1_amd64.deb" >/dev/null
  /usr/bin/openclaw-$d --help >/dev/null || fail "openclaw-$d --help"
  systemd-analyze verify /lib/systemd/system/openclaw-$d.service \
    || fail "systemd-analyze verify openclaw-$d.service"
done
getent passwd openclaw >/dev/null || fail "no openclaw user"
[ "$(stat -c '%U:%G %a' /etc/openclaw)" = "root:openclaw 750" ] || fail "/etc/openclaw: $(stat -c '%U:%G %a' /etc/openclaw)"
[ "$(stat -c '%G %a' /etc/openclaw/edge.toml)" = "openclaw 640" ] || fail "edge.toml mode"
[ "$(stat -c '%U %a' /var/lib/openclaw)" = "openclaw 700" ] || fail "/var/lib/openclaw: $(stat -c '%U %a' /var/lib/openclaw)"

# Data and an operator's config edit survive an upgrade and a remove.
echo "site data" > /var/lib/openclaw/marker
echo "# edited by the operator" >> /etc/openclaw/edge.toml
DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$work/openclaw-edge_0.0.2_amd64.deb" >/dev/null
[ "$(dpkg-query -W -f='${Version}' openclaw-edge)" = 0.0.2 ] || fail "upgrade"
grep -q "edited by the operator" /etc/openclaw/edge.toml || fail "upgrade lost the config edit"
[ -f /var/lib/openclaw/marker ] || fail "upgrade lost data"
dpkg -r openclaw-edge >/dev/null
[ ! -e /usr/bin/openclaw-edge ] || fail "remove left the binary"
[ -f /var/lib/openclaw/marker ] || fail "remove lost data"
grep -q "edited by the operator" /etc/openclaw/edge.toml || fail "remove lost the config"
dpkg -P openclaw-edge >/dev/null 2>&1
[ ! -e /etc/openclaw/edge.toml ] || fail "purge left the config"
[ -f /var/lib/openclaw/marker ] || fail "purge deleted the site's data"
dpkg -P openclaw-hub >/dev/null 2>&1

# The tarball's installer, dry: it is valid shell and holds what it installs.
tar -tzf dist/pkg/openclaw-edge-0.0.2-x86_64-linux.tar.gz | sort > "$work/tar.txt"
for f in openclaw-edge openclaw-edge.service edge.toml.example install.sh README.md; do
  grep -q "/$f\$" "$work/tar.txt" || fail "tarball lacks $f"
done
tar -xzf dist/pkg/openclaw-edge-0.0.2-x86_64-linux.tar.gz -C "$work"
sh -n "$work/openclaw-edge-0.0.2-x86_64-linux/install.sh" || fail "install.sh syntax"

rm -rf /var/lib/openclaw /var/lib/openclaw-hub /etc/openclaw
userdel openclaw 2>/dev/null || true
groupdel openclaw 2>/dev/null || true
rm -f dist/pkg/openclaw-*_0.0.[12]_amd64.deb dist/pkg/openclaw-*-0.0.[12]-x86_64-linux.tar.gz
echo "package test: install, upgrade, remove, purge and systemd-analyze verify: ok"
