"""The cost of reaching an instance through the proxy and the public port: a 200 MB download
(throughput) and small requests (p50/p99 latency), direct to the instance's internal port vs
through nginx (``/instance/<slug>/``, auth_request included) vs through socat (the public port),
all in one run, interleaved, against the same instance."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import time

import httpx

from tests.helpers import Panel
from tests.netkit import auth, public_range

from .core import PYTHON, BenchError, Context, Result, create, percentile, poll, post, put_blueprint, wait_status

BIG = 200 * 1024 * 1024
Route = tuple[int, str, str, dict[str, str]]  # port, path prefix, query, headers
AUTH_NOTES = {
    'nginx': '; API token header: auth_request answered by nginx itself',
    'nginx+panel': '; ?token= (as a session cookie): auth_request answered by the panel',
}

# HTTP/1.1 keep-alive on $WEBUI_PORT: .../big sends the file named by argv[1] with sendfile(),
# .../small answers two bytes. No Nagle, so small answers leave at once.
HTTP_APP = """\
import http.server, os, sys
BIG = sys.argv[1]
SIZE = os.path.getsize(BIG)

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path.endswith('/big'):
            self.send_response(200)
            self.send_header('Content-Length', str(SIZE))
            self.end_headers()
            self.wfile.flush()
            with open(BIG, 'rb') as handle:
                self.connection.sendfile(handle)
        else:
            self.send_response(200)
            self.send_header('Content-Length', '2')
            self.end_headers()
            self.wfile.write(b'ok')

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['WEBUI_PORT'])), Handler)
server.daemon_threads = True
server.serve_forever()
"""


class RawClient:
    """One keep-alive connection and the least client code per request (no HTTP library in the timing)."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [f'GET {path} HTTP/1.1', f'Host: 127.0.0.1:{port}', *(f'{k}: {v}' for k, v in headers.items())]
        self.request = ('\r\n'.join(lines) + '\r\n\r\n').encode()
        self.buffer = b''

    def get(self) -> float:
        began = time.perf_counter()
        self.sock.sendall(self.request)
        while b'\r\n\r\n' not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b'\r\n\r\n')
        if not head.startswith(b'HTTP/1.1 200'):
            raise BenchError(f'small request answered {head[:60]!r}')
        length = next(
            int(line.split(b':')[1]) for line in head.split(b'\r\n') if line.lower().startswith(b'content-length')
        )
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return time.perf_counter() - began

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise BenchError('the server closed the connection')
        return data

    def close(self) -> None:
        self.sock.close()


def _download(url: str, headers: dict[str, str]) -> float:
    """MB/s of one 200 MB download by curl (a C client: the client is not the bottleneck)."""
    command = ['curl', '-s', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', url]
    for key, value in headers.items():
        command += ['-H', f'{key}: {value}']
    output = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout.split()
    size, seconds = int(output[0]), float(output[1])
    if size != BIG:
        raise BenchError(f'{url} sent {size} bytes instead of {BIG}')
    return size / seconds / 1e6


def _setup(ctx: Context) -> tuple[Panel, dict[str, Route]]:
    big = ctx.root / 'big.bin'
    with big.open('wb') as handle:
        handle.truncate(BIG)
    app = ctx.write_app('http_app.py', HTTP_APP)
    panel = ctx.panel('proxy', AIKORE_NGINX='managed', AIKORE_PORT_RANGE=public_range())
    put_blueprint(panel, 'BenchHttp', f'exec {PYTHON} -u {app} {big}')
    instance_id = create(panel, 'bench', 'BenchHttp')
    post(panel, f'/instances/{instance_id}/start')
    started, _ = wait_status(panel, instance_id, 'started', timeout=30, interval=0.02)
    post(panel, f'/instances/{instance_id}/activate', expected=200)
    token = auth(panel)
    routes = {
        'direct': (started['internal_port'], '/', '', {}),
        'nginx': (panel.port, '/instance/bench/', '', token),
        'socat': (started['public_port'], '/', '', {}),
        # ?token= is decided by the panel (as a browser session cookie is): one more hop per request.
        'nginx+panel': (panel.port, '/instance/bench/', f'?token={panel.token}', {}),
    }
    for name, (port, prefix, query, headers) in routes.items():
        url = f'http://127.0.0.1:{port}{prefix}small{query}'
        poll(lambda url=url, headers=headers: _answers(url, headers), 10, 0.02, f'{name} to answer')
    return panel, routes


def _answers(url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _latencies(routes: dict[str, Route], rounds: int, per_round: int) -> dict[str, list[float]]:
    clients = {
        name: RawClient(port, f'{prefix}small{query}', headers)
        for name, (port, prefix, query, headers) in routes.items()
    }
    try:
        for client in clients.values():
            for _ in range(200):  # warm-up: connections, upstream keep-alive, caches
                client.get()
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(rounds):
            for name, client in clients.items():
                samples[name].extend(client.get() for _ in range(per_round))
        return samples
    finally:
        for client in clients.values():
            client.close()


def proxy(ctx: Context) -> list[Result]:
    """Median of N curl downloads of 200 MB per path (interleaved) and p50/p99 of small GETs
    on one keep-alive connection per path (rounds interleaved); ratios are to direct."""
    panel, routes = _setup(ctx)
    downloads = 3 if ctx.quick else 5
    speeds: dict[str, list[float]] = {name: [] for name in ('direct', 'nginx', 'socat')}
    for _ in range(downloads):
        for name in speeds:
            port, prefix, query, headers = routes[name]
            speeds[name].append(_download(f'http://127.0.0.1:{port}{prefix}big{query}', headers))
    latency = _latencies(routes, rounds=4 if ctx.quick else 10, per_round=250 if ctx.quick else 500)
    ctx.stop_panel(panel)
    direct_speed = statistics.median(speeds['direct'])
    p50 = {name: percentile(values, 0.5) for name, values in latency.items()}
    p99 = {name: percentile(values, 0.99) for name, values in latency.items()}
    extra = {'mb_per_s': speeds, 'p50_s': p50, 'p99_s': p99, 'host_cpus': os.cpu_count()}
    results = []
    for name, share in (('socat', 0.5), ('nginx', 0.4)):
        speed = statistics.median(speeds[name])
        results.append(
            Result(
                key=f'throughput_{name}',
                label=f'200 MB download through {name} (median)',
                unit='MB/s',
                value=speed,
                target=share * direct_speed,
                target_text=f'>= {share:.0%} of direct',
                original='-',
                baseline=direct_speed,
                baseline_label='direct',
                note=f'n={downloads}',
                higher_is_better=True,
                samples=speeds[name],
                extra=extra,
            )
        )
    for name in ('nginx', 'socat', 'nginx+panel'):
        added = p99[name] - p99['direct']
        results.append(
            Result(
                key=f'latency_{name.replace("+", "_")}',
                label=f'small GET, p99 added by {name}',
                unit='s',
                value=added,
                target=0.002,
                target_text='<= 2 ms',
                original='-',
                baseline=p99['direct'],
                baseline_label='direct p99',
                note=(
                    f'p50 {p50[name] * 1000:.2f} ms vs {p50["direct"] * 1000:.2f} ms direct, '
                    f'p99 {p99[name] * 1000:.2f} ms, n={len(latency[name])}' + AUTH_NOTES.get(name, '')
                ),
                samples=latency[name],
                extra=extra,
            )
        )
    return results
