#!/usr/bin/env bash
# supervisord's nginx program. The panel (AIKORE_NGINX=external) writes the config to
# $AIKORE_DATA_DIR/nginx/nginx.conf and reloads this master with `nginx -s reload` (same -c,
# pid file named in the config): so the master must run exactly that file.
#
# The trap this wrapper closes: when the master is SIGKILLed its workers live on and keep the
# listening socket; a new master would loop on "bind() ... Address already in use" while
# supervisord shows RUNNING. The workers stay in the dead master's process group (supervisord
# starts each program in a group of its own), so the previous group is ended first.
set -euo pipefail

folder="$AIKORE_DATA_DIR/nginx"
config="$folder/nginx.conf"
pgid_file="$AIKORE_RUN_DIR/nginx.pgid"
nginx=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nginx) || { echo 'nginx is not installed' >&2; exit 1; }

group_alive() { pgrep -g "$1" -x nginx >/dev/null; }

end_previous_group() {
  local old
  old=$(cat "$pgid_file" 2>/dev/null) || return 0
  [[ $old =~ ^[0-9]+$ ]] && group_alive "$old" || return 0
  echo "Ending the nginx processes left by the previous master (process group $old)"
  kill -TERM -- "-$old" 2>/dev/null || true
  for _ in $(seq 50); do group_alive "$old" || return 0; sleep 0.1; done
  kill -KILL -- "-$old" 2>/dev/null || true
}

end_previous_group
own_group=$(ps -o pgid= -p $$ | tr -d ' ')
echo "$own_group" >"$pgid_file"

# On the very first start the panel has not written its config yet.
if [ ! -s "$config" ]; then
  echo "Waiting for the panel to write $config"
  while [ ! -s "$config" ]; do sleep 0.1; done
fi
exec "$nginx" -p "$folder/" -c "$config" -e stderr -g 'daemon off;'
