# Shared by the .deb's postinst and the tarball's install.sh (sourced with DAEMON=edge|hub):
# the system user, the config directory that holds keys, and the state directory.
# Idempotent: safe on every install and upgrade; never touches existing data or config.
setup_openclaw() {
  state_dir=/var/lib/openclaw
  [ "$DAEMON" = hub ] && state_dir=/var/lib/openclaw-hub
  if ! getent group openclaw >/dev/null; then
    groupadd --system openclaw
  fi
  if ! getent passwd openclaw >/dev/null; then
    useradd --system --gid openclaw --home-dir "$state_dir" --no-create-home \
      --shell /usr/sbin/nologin --comment "OpenClaw daemons" openclaw
  fi
  # Keys live here: readable by the daemon's group, nobody else.
  install -d -o root -g openclaw -m 0750 /etc/openclaw
  if [ -f "/etc/openclaw/$DAEMON.toml" ]; then
    chgrp openclaw "/etc/openclaw/$DAEMON.toml"
    chmod 0640 "/etc/openclaw/$DAEMON.toml"
  fi
  # systemd's StateDirectory= makes it too; this serves starts outside systemd.
  if [ ! -d "$state_dir" ]; then
    install -d -o openclaw -g openclaw -m 0700 "$state_dir"
  fi
}
