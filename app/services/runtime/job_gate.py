"""What a Slurm job of an instance runs on its node: a gate in front of the app, and the runner.

On a cluster every user can reach every port of a node, so the app listens on the node's
loopback only (``WEBUI_PORT`` on 127.0.0.1, a port the kernel picked free on this node, so jobs
on one node never collide) and the gate listens on all addresses, on a port of its own also
picked by the kernel. The gate lets a connection through only when its first request carries
``X-AiKore-Job: <secret>``, the per-job secret that only the panel's nginx holds (read from a
0600 file in the instance's run folder); the header is removed before the app sees the request,
and the rest of the connection is piped both ways (websockets included). Anything else gets 403.
A request with ``X-AiKore-Probe: tcp`` (and the secret) is answered by the gate itself: 204 when
the app's port accepts connections, 503 otherwise (the panel's ``tcp`` readiness check).

Once listening, it writes ``<node> <gate port>`` to the endpoint file (the panel reads it), then
runs ``runner.py`` (log and exit file as for a local run) and exits with its code. ``scancel``
ends it and the whole tree (cgroup process tracking).

Run as ``python -I -S job_gate.py --secret-file F --endpoint-file F -- runner args...``; stdlib only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import socket
import sys

HEAD_MAX = 64 * 1024
HEAD_TIMEOUT = 30.0
SECRET_HEADER = b'x-aikore-job'
PROBE_HEADER = b'x-aikore-probe'


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return int(probe.getsockname()[1])


def answer(status: str) -> bytes:
    return f'HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'.encode()


def checked_head(head: bytes, secret: bytes) -> tuple[bool, bool, bytes]:
    """(secret right, a tcp probe, the head without the gate's headers)."""
    lines = head.split(b'\r\n')
    kept, authorised, probe = [lines[0]], False, False
    for line in lines[1:]:
        name, _sep, value = line.partition(b':')
        key = name.strip().lower()
        if key == SECRET_HEADER:
            authorised = hmac.compare_digest(value.strip(), secret)
        elif key == PROBE_HEADER:
            probe = value.strip().lower() == b'tcp'
        else:
            kept.append(line)
    return authorised, probe, b'\r\n'.join(kept)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


class Gate:
    def __init__(self, secret: bytes, app_port: int) -> None:
        self.secret = secret
        self.app_port = app_port

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b'\r\n\r\n'), HEAD_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        authorised, probe, head = checked_head(head, self.secret)
        if not authorised:
            await self._close_with(writer, '403 Forbidden')
            return
        try:
            app_reader, app_writer = await asyncio.open_connection('127.0.0.1', self.app_port)
        except OSError:
            await self._close_with(writer, '503 Service Unavailable' if probe else '502 Bad Gateway')
            return
        if probe:
            app_writer.close()
            await self._close_with(writer, '204 No Content')
            return
        app_writer.write(head)
        await asyncio.gather(pipe(reader, app_writer), pipe(app_reader, writer))

    @staticmethod
    async def _close_with(writer: asyncio.StreamWriter, status: str) -> None:
        with contextlib.suppress(OSError):
            writer.write(answer(status))
            await writer.drain()
            writer.close()


def read_secret(path: str) -> bytes:
    with open(path, 'rb') as handle:
        return handle.read().strip()


def write_endpoint(path: str, text: str) -> None:
    with open(f'{path}.tmp', 'w') as handle:
        handle.write(text)
    os.replace(f'{path}.tmp', path)


async def main(argv: list[str]) -> int:
    split = argv.index('--')
    options = dict(zip(argv[:split:2], argv[1:split:2], strict=True))
    runner = argv[split + 1 :]
    secret = read_secret(options['--secret-file'])
    app_port = free_loopback_port()
    gate = Gate(secret, app_port)
    # One socket (host=None would open one per address family, each on a port of its own).
    server = await asyncio.start_server(gate.serve, host='0.0.0.0', port=0, limit=HEAD_MAX)
    gate_port = server.sockets[0].getsockname()[1]
    node = os.environ.get('SLURMD_NODENAME') or socket.gethostname()
    endpoint = options['--endpoint-file']
    write_endpoint(endpoint, f'{node} {gate_port}\n')
    sys.stdout.write(f'[aikore] job gate on {node}:{gate_port}, app on 127.0.0.1:{app_port}\n')
    sys.stdout.flush()
    env = {**os.environ, 'WEBUI_PORT': str(app_port)}
    process = await asyncio.create_subprocess_exec(*runner, env=env)
    code = await process.wait()
    server.close()
    return code if code >= 0 else 128 - code


if __name__ == '__main__':
    sys.exit(asyncio.run(main(sys.argv[1:])))
