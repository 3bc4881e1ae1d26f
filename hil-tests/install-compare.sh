#!/usr/bin/env bash
# Installs what `openclaw-bench --compare` runs against: Debian's etcd-server.
set -euo pipefail
if ! command -v etcd >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server
fi
etcd --version | head -1
