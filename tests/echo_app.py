"""A tiny instance app for the networking tests: on $WEBUI_PORT (127.0.0.1) it answers every
plain GET with JSON naming the instance, the path it received and the request headers, and
echoes every websocket message back prefixed with the instance name.

Run by a blueprint as ``exec python -u tests/echo_app.py``; needs only the ``websockets``
package (a uvicorn dependency, so it is in the panel's venv).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

NAME = os.environ.get('INSTANCE_NAME', 'echo')
PORT = int(os.environ.get('WEBUI_PORT', '8000'))
# ECHO_ROOT_PAGE=relative|absolute: a path-unaware app (as ComfyUI is) that serves only at "/": a
# page whose script calls its API and opens its websocket by relative (or absolute) URLs.
ROOT_PAGE = os.environ.get('ECHO_ROOT_PAGE', '')
PAGE = '<!DOCTYPE html><html><head><title>{name}</title><script src="{base}app.js"></script></head><body></body></html>'
SCRIPT = """
fetch('{base}api/hello').then(r => r.json()).then(j => {{ document.body.dataset.api = j.name; }});
const ws = new WebSocket(new URL('{base}ws', location.href).href.replace(/^http/, 'ws'));
ws.onopen = () => ws.send('ping');
ws.onmessage = (event) => {{ document.body.dataset.ws = event.data; }};
"""


def root_app(connection: ServerConnection, request: Request) -> Response | None:
    base = './' if ROOT_PAGE == 'relative' else '/'
    path = request.path.partition('?')[0]
    if request.headers.get('Upgrade', '').lower() == 'websocket':
        return None if path == '/ws' else connection.respond(HTTPStatus.NOT_FOUND, 'no such websocket\n')
    known = {
        '/': ('text/html', PAGE.format(name=NAME, base=base)),
        '/app.js': ('text/javascript', SCRIPT.format(base=base)),
        '/api/hello': ('application/json', json.dumps({'name': NAME, 'path': request.path})),
    }
    if path not in known:
        return connection.respond(HTTPStatus.NOT_FOUND, f'{NAME} serves only at /, not {path}\n')
    kind, body = known[path]
    response = connection.respond(HTTPStatus.OK, body)
    response.headers['Content-Type'] = kind
    return response


def answer(connection: ServerConnection, request: Request) -> Response | None:
    if ROOT_PAGE:
        return root_app(connection, request)
    if request.headers.get('Upgrade', '').lower() == 'websocket':
        return None  # go on with the websocket handshake
    body = json.dumps({'name': NAME, 'path': request.path, 'headers': dict(request.headers.raw_items())})
    response = connection.respond(HTTPStatus.OK, body)
    response.headers['Content-Type'] = 'application/json'
    return response


async def echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(f'{NAME}: {message}')


async def main() -> None:
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(echo, '127.0.0.1', PORT, process_request=answer):
        sys.stdout.write(f'{NAME} listening on {PORT}\n')
        sys.stdout.flush()
        await stop


if __name__ == '__main__':
    asyncio.run(main())
