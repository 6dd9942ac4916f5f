"""A tiny instance app with a cookie of its own, named ``session`` as many apps name theirs:
``GET /set`` sets it, every GET answers JSON with the Cookie header the app received.

Run by a blueprint as ``exec python -u tests/cookie_app.py`` on $WEBUI_PORT (127.0.0.1).
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get('WEBUI_PORT', '8000'))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({'cookie': self.headers.get('Cookie', '')}).encode()
        self.send_response(200)
        if self.path.endswith('/set') or '/set?' in self.path:
            self.send_header('Set-Cookie', 'session=app-own; Path=/; HttpOnly')
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == '__main__':
    print(f'cookie app listening on {PORT}', flush=True)  # noqa: T201 - the instance log
    ThreadingHTTPServer(('127.0.0.1', PORT), Handler).serve_forever()
