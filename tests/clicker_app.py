"""A tiny instance app for the desktop tests: on $WEBUI_PORT (127.0.0.1) it serves one page, a
full-screen dark field that turns bright and counts each click (the count is kept by the
server: ``GET /state`` answers ``{"clicks": n, "loads": n}``); the key "m" starts or stops a
moving square (the desktop benchmark's moving content). Standard library only."""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get('WEBUI_PORT', '8000'))
STATE = {'clicks': 0, 'loads': 0}
PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>clicker</title>
<style>html, body { margin: 0; height: 100%; background: #102030; color: #fff; font: 48px sans-serif; }
#box { position: fixed; top: 30%; width: 20vw; height: 20vh; background: #e04080; display: none; }</style>
</head><body><div id="n">0</div><div id="box"></div><script>
let n = 0, moving = false;
function step(time) {
  const box = document.getElementById('box');
  box.style.left = (40 + 40 * Math.sin(time / 500)) + 'vw';
  box.textContent = String(Math.floor(time));
  if (moving) requestAnimationFrame(step);
}
document.addEventListener('keydown', (event) => {
  if (event.key !== 'm') return;
  moving = !moving;
  document.getElementById('box').style.display = moving ? 'block' : 'none';
  if (moving) requestAnimationFrame(step);
});
document.addEventListener('mousedown', () => {
  n += 1;
  document.getElementById('n').textContent = String(n);
  document.body.style.background = n % 2 ? '#f0c020' : '#20c0f0';
  fetch('click', {method: 'POST'});
});
</script></body></html>"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.endswith('/state'):
            self._send(json.dumps(STATE).encode(), 'application/json')
            return
        if self.path.endswith('favicon.ico'):
            self.send_error(404)
            return
        STATE['loads'] += 1
        self._send(PAGE, 'text/html')

    def do_POST(self) -> None:
        STATE['clicks'] += 1
        self._send(b'{}', 'application/json')

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header('Content-Type', kind)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(('127.0.0.1', PORT), Handler).serve_forever()
