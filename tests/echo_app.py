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


def answer(connection: ServerConnection, request: Request) -> Response | None:
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
