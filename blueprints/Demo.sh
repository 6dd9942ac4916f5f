#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = Demo
# aikore.category = Demo
# aikore.description = Offline demo web app: shows the instance name, its GPUs and uptime
# aikore.ready = http
# aikore.stall_timeout = 60
### AIKORE-METADATA-END ###
#
# A tiny web app that needs nothing but python3 (standard library): no network,
# no GPU, nothing to install. It prints coloured log lines and a "\r" progress
# bar, then serves one page on 127.0.0.1:$WEBUI_PORT (any path, so it also
# works behind the /instance/<slug>/ prefix) and exits with code 0 on SIGTERM.
# It also runs outside AiKore:  WEBUI_PORT=7860 INSTANCE_NAME=test bash Demo.sh
set -euo pipefail

if [[ -n "${AIKORE_FUNCTIONS:-}" && -f "${AIKORE_FUNCTIONS}" ]]; then
  # shellcheck source-path=SCRIPTDIR source=functions.sh
  source "${AIKORE_FUNCTIONS}"
  aikore_log "Shared helpers loaded from ${AIKORE_FUNCTIONS}"
fi

export WEBUI_PORT="${WEBUI_PORT:-7860}"
export INSTANCE_NAME="${INSTANCE_NAME:-demo}"
if [[ ! "$WEBUI_PORT" =~ ^[0-9]{1,5}$ ]]; then
  printf 'Invalid WEBUI_PORT: %s\n' "$WEBUI_PORT" >&2
  exit 1
fi

# A stop request during the loading phase is a clean exit too (exec resets the trap).
trap 'exit 0' TERM INT

green=$'\033[1;32m'
yellow=$'\033[1;33m'
cyan=$'\033[1;36m'
reset=$'\033[0m'

printf '%sLoading demo model...%s\n' "$green" "$reset"
printf '%sWarning: this is a demo app; no real model is loaded and no GPU is needed%s\n' "$yellow" "$reset"
printf '%sInstance: %s | CUDA_VISIBLE_DEVICES: %s%s\n' \
  "$cyan" "$INSTANCE_NAME" "${CUDA_VISIBLE_DEVICES:-(all)}" "$reset"

# Progress bar redrawn in place with "\r": 20 steps of 0.1 s (about 2 s).
steps=20
for ((i = 0; i <= steps; i++)); do
  bar=""
  for ((j = 1; j <= steps; j++)); do
    if ((j <= i)); then bar+="#"; else bar+="-"; fi
  done
  printf '\rLoading [%s] %3d%%' "$bar" $((i * 100 / steps))
  if ((i < steps)); then sleep 0.1; fi
done
printf '\n'
printf '%sDemo model loaded%s\n' "$green" "$reset"

exec python3 -u - <<'EOF'
import html
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()
NAME = os.environ.get("INSTANCE_NAME") or "demo"
GPUS = os.environ.get("CUDA_VISIBLE_DEVICES") or "(all)"
PORT = int(os.environ.get("WEBUI_PORT") or "7860")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AiKore Demo \u2014 {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #111827; color: #e5e7eb; margin: 3rem; }}
h1 {{ color: #34d399; }}
dt {{ color: #9ca3af; margin-top: .8rem; }}
dd {{ margin: .2rem 0 0 0; font-size: 1.3rem; }}
</style>
</head>
<body>
<h1>{name}</h1>
<p>AiKore offline demo app.</p>
<dl>
<dt>Instance</dt><dd id="instance">{name}</dd>
<dt>CUDA_VISIBLE_DEVICES</dt><dd id="gpus">{gpus}</dd>
<dt>Uptime</dt><dd id="uptime">{uptime} s</dd>
<dt>Requested path</dt><dd id="path">{path}</dd>
</dl>
</body>
</html>
"""


def printable(text):
    """Keep a log line on one line: escape control characters."""
    return "".join(c if c.isprintable() else "\\x%02x" % ord(c) for c in str(text))


class Handler(BaseHTTPRequestHandler):
    server_version = "AiKoreDemo/1.0"

    def _page(self, with_body):
        body = PAGE.format(
            name=html.escape(NAME),
            gpus=html.escape(GPUS),
            uptime=int(time.monotonic() - STARTED),
            path=html.escape(self.path),
        ).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):
        self._page(True)

    def do_HEAD(self):
        self._page(False)

    def log_request(self, code="-", size="-"):
        # Exactly one line per request.
        method = getattr(self, "command", None) or "-"
        path = getattr(self, "path", None) or "-"
        code = getattr(code, "value", code)
        print(f"{method} {printable(path)} {code} from {self.client_address[0]}", flush=True)

    def log_message(self, format, *args):
        pass


def stop(signum, frame):
    raise SystemExit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
ThreadingHTTPServer.daemon_threads = True
try:
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
except OSError as exc:
    print(f"Demo cannot listen on 127.0.0.1:{PORT}: {exc}", flush=True)
    sys.exit(1)

print(f"Demo listening on http://127.0.0.1:{PORT}", flush=True)
try:
    server.serve_forever()
except SystemExit:
    print("Demo stopping", flush=True)
finally:
    server.server_close()
sys.exit(0)
EOF
