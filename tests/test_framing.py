"""View knows an app that forbids being framed (JupyterLab's frame-ancestors 'self', or
X-Frame-Options) and offers a new tab instead of a frame showing the browser's error page."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from app.services.net.framing import app_refuses_framing, refuses_framing
from tests.helpers import free_port


@pytest.mark.parametrize(
    ('headers', 'refused'),
    [
        ({}, False),
        ({'Content-Security-Policy': "frame-ancestors 'self'"}, True),
        ({'Content-Security-Policy': "default-src 'self'; frame-ancestors 'none'"}, True),
        ({'Content-Security-Policy': 'frame-ancestors *'}, False),
        ({'Content-Security-Policy': "default-src 'self'"}, False),
        ({'X-Frame-Options': 'SAMEORIGIN'}, True),
        ({'X-Frame-Options': 'DENY'}, True),
    ],
)
def test_headers_that_forbid_framing(headers: dict[str, str], refused: bool) -> None:
    assert refuses_framing(httpx.Headers(headers)) is refused


class _App(http.server.BaseHTTPRequestHandler):
    """/ redirects to /login, as JupyterLab does; /login carries the app's framing policy."""

    policy = ''

    def do_GET(self) -> None:
        if self.path == '/':
            self.send_response(302)
            self.send_header('Location', '/login')
            self.end_headers()
            return
        self.send_response(200)
        if self.policy:
            self.send_header('Content-Security-Policy', self.policy)
        self.end_headers()
        self.wfile.write(b'login')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=["frame-ancestors 'self'", ''])
def app_port(request: pytest.FixtureRequest) -> Iterator[tuple[int, bool]]:
    handler = type('App', (_App,), {'policy': request.param})
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], bool(request.param)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_the_probe_follows_the_app_to_its_page(app_port: tuple[int, bool]) -> None:
    port, refuses = app_port
    assert await app_refuses_framing(port, '/') is refuses


async def test_an_app_not_up_yet_is_tried_in_the_frame() -> None:
    assert await app_refuses_framing(free_port(), '/') is False
