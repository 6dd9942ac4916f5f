"""Readiness probes: is the app of an instance answering yet?

Probes start every 10 ms and back off as the wait grows (4 % of the time waited, at most
1 s), so a fast app is seen as ready within a few milliseconds and a slow one costs little.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from ..catalog.blueprints import ReadyCheck
from . import logs

HTTP_TIMEOUT = 5.0
MIN_INTERVAL = 0.01
MAX_INTERVAL = 1.0


def probe_interval(waited: float) -> float:
    return min(MAX_INTERVAL, max(MIN_INTERVAL, waited * 0.04))


async def tcp_open(port: int, host: str = '127.0.0.1') -> bool:
    try:
        _reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def http_answers(port: int, host: str = '127.0.0.1', headers: dict[str, str] | None = None) -> bool:
    """True when ``GET /`` gets any HTTP answer below 500; with ``headers`` (a Slurm job's secret)
    not a 403 either: that is the job's gate refusing the secret, not the app answering."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    extra = ''.join(f'{name}: {value}\r\n' for name, value in (headers or {}).items())
    try:
        name = f'[{host}]' if ':' in host else host
        writer.write(f'GET / HTTP/1.1\r\nHost: {name}:{port}\r\n{extra}Connection: close\r\n\r\n'.encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), HTTP_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b'HTTP/') or not parts[1].isdigit():
        return False
    status = int(parts[1])
    return status < 500 and not (headers and status == 403)


class LogWatcher:
    """Follows the run's log (across rotations) and looks for a regex in its lines."""

    MAX_READS = 8  # per check: a few MiB, so a log burst cannot hold a worker thread for long

    def __init__(self, path: Path, pattern: re.Pattern[str]) -> None:
        self.path = path
        self.pattern = pattern
        self.offset = 0
        self.partial = ''

    def matched(self) -> bool:
        for _ in range(self.MAX_READS):
            chunk = logs.read_chunk(self.path, self.offset)
            if chunk.reset:
                self.partial = ''
            self.offset = chunk.next_offset
            if not chunk.text:
                return False
            lines = (self.partial + chunk.text).replace('\r', '\n').split('\n')
            self.partial = lines.pop()[-65536:]
            if any(self.pattern.search(line) for line in lines) or self.pattern.search(self.partial):
                return True
        return False


class ReadinessProbe:
    """One probe for one run of an instance."""

    def __init__(
        self,
        check: ReadyCheck,
        port: int,
        log_path: Path,
        host: str = '127.0.0.1',
        headers: dict[str, str] | None = None,
    ) -> None:
        self.check = check
        self.port = port
        self.host = host
        self.headers = headers or {}  # a Slurm job's gate (``job_gate.py``): its secret
        self.log_watcher = LogWatcher(log_path, check.pattern) if check.kind == 'log' and check.pattern else None

    async def ready(self) -> bool:
        kind = self.check.kind
        if kind == 'none':
            return True
        if kind == 'tcp' and self.headers:  # the gate answers whether the app's port is open
            return await http_answers(self.port, self.host, {**self.headers, 'X-AiKore-Probe': 'tcp'})
        if kind == 'tcp':
            return await tcp_open(self.port, self.host)
        if self.log_watcher is not None:
            return await asyncio.to_thread(self.log_watcher.matched)
        return await http_answers(self.port, self.host, self.headers)
