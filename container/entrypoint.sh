#!/usr/bin/env bash
# The image's entrypoint (run by tini as PID 1's child): becomes the user PUID:PGID, makes the
# data folder theirs, then hands over to supervisord, which runs nginx and the panel as that user.
#
# The same script runs on a bare host (tests/test_container_host.py) with other paths:
# AIKORE_DATA_DIR, AIKORE_RUN_DIR and AIKORE_PANEL_COMMAND override the image's defaults, and
# PUID=0 keeps the current (root) user.
set -euo pipefail

here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
export AIKORE_CONTAINER_DIR="$here"
export AIKORE_DATA_DIR="${AIKORE_DATA_DIR:-/config}"
export AIKORE_RUN_DIR="${AIKORE_RUN_DIR:-/run/aikore}"
export AIKORE_PANEL_COMMAND="${AIKORE_PANEL_COMMAND:-aikore}"
export AIKORE_NGINX="${AIKORE_NGINX:-external}"
export AIKORE_STOP_ON_EXIT="${AIKORE_STOP_ON_EXIT:-1}"
PUID="${PUID:-1000}"
PGID="${PGID:-1000}"

say() { printf '[entrypoint] %s\n' "$*"; }
fail() { printf '[entrypoint] %s\n' "$*" >&2; exit 1; }

[[ $PUID =~ ^[0-9]+$ && $PGID =~ ^[0-9]+$ ]] || fail "PUID and PGID must be numbers (got PUID=$PUID PGID=$PGID)"

# supervisord gives the panel this long to stop every instance (each one AIKORE_STOP_GRACE, in
# parallel) before it sends SIGKILL: the grace plus a margin. compose's stop_grace_period is longer still.
grace="${AIKORE_STOP_GRACE:-10}"
[[ $grace =~ ^[0-9]+([.][0-9]+)?$ ]] || fail "AIKORE_STOP_GRACE must be a number of seconds (got $grace)"
export AIKORE_STOP_WAIT="${AIKORE_STOP_WAIT:-$(( ${grace%.*} + 20 ))}"

# The account the panel runs as: PUID/PGID, created or adapted (name aikore) when missing.
ensure_account() {
  local group user
  group=$(getent group "$PGID" | cut -d: -f1 || true)
  if [ -z "$group" ]; then
    if getent group aikore >/dev/null; then groupmod -o -g "$PGID" aikore; else groupadd -o -g "$PGID" aikore; fi
    group=aikore
  fi
  user=$(getent passwd "$PUID" | cut -d: -f1 || true)
  if [ -z "$user" ]; then
    if getent passwd aikore >/dev/null; then
      usermod -o -u "$PUID" -g "$PGID" aikore
    else
      useradd -o -u "$PUID" -g "$PGID" -M -d "$AIKORE_DATA_DIR/home" -s /bin/bash aikore
    fi
    user=aikore
  fi
  AIKORE_USER="$user"
}

if [ "$(id -u)" -eq 0 ] && [ "$PUID" -ne 0 ]; then
  ensure_account
  # Instances keep their caches (pip, Hugging Face, ~/.config) in /config/home: they survive image updates.
  export HOME="$AIKORE_DATA_DIR/home" USER="$AIKORE_USER"
else
  AIKORE_USER=$(id -un)
  PUID=$(id -u)
  PGID=$(id -g)
fi
export AIKORE_USER
AIKORE_SUPERVISOR_USER=$(id -un)
export AIKORE_SUPERVISOR_USER

mkdir -p "$AIKORE_DATA_DIR" "$AIKORE_RUN_DIR"
[ "$HOME" = "$AIKORE_DATA_DIR/home" ] && mkdir -p "$HOME"
# The data belongs to PUID:PGID (never chmod 777). A full walk only when the folder's owner
# differs (a new PUID, or data copied in): later starts cost nothing however large /config grows.
if [ "$(id -u)" -eq 0 ]; then
  if [ "$(stat -c %u:%g "$AIKORE_DATA_DIR")" != "$PUID:$PGID" ]; then
    say "Giving $AIKORE_DATA_DIR to $PUID:$PGID"
    chown -R "$PUID:$PGID" "$AIKORE_DATA_DIR"
  fi
  [ -d "$AIKORE_DATA_DIR/home" ] && chown "$PUID:$PGID" "$AIKORE_DATA_DIR/home"
  chown "$PUID:$PGID" "$AIKORE_RUN_DIR"
fi
rm -f "$AIKORE_RUN_DIR/nginx.pgid"  # nothing of an earlier run is alive now

say "Starting supervisord: nginx and the panel as $AIKORE_USER ($PUID:$PGID), data in $AIKORE_DATA_DIR"
exec supervisord --nodaemon --configuration "$here/supervisord.conf"
