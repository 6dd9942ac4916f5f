"""The JupyterLab stock blueprint, for real: installed from PyPI into the instance's venv (pip's
download cache is kept between runs, so a warm run takes seconds), started behind the panel's
nginx, and a kernel runs ``1+1`` through the path route (/instance/<slug>/, given to Jupyter
without the prefix) and through the subdomain route (<slug>.localhost, the app's own origin,
where browsers run it): Jupyter's REST API makes the kernel, its websocket runs the code."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.helpers import Panel
from tests.netkit import auth, proxied_panel

PIP_CACHE = Path(os.environ.get('AIKORE_TEST_CACHE', '/var/cache/aikore-test')) / 'pip'
INSTALL_TIMEOUT = 900.0  # a cold run downloads JupyterLab and its dependencies (~60 MB)


@pytest.fixture(scope='module')
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    PIP_CACHE.mkdir(parents=True, exist_ok=True)
    panel = proxied_panel(tmp_path_factory.mktemp('jupyter') / 'data', PIP_CACHE_DIR=str(PIP_CACHE))
    try:
        instance = panel.create('lab', 'JupyterLab', access_pattern='subdomain')
        assert panel.client.post(f'/instances/{instance["id"]}/start').status_code == 202
        try:
            panel.wait_status(instance['id'], 'started', timeout=INSTALL_TIMEOUT)
        except AssertionError:
            log = panel.client.get(f'/instances/{instance["id"]}/logs').json()['text']
            raise AssertionError(f'JupyterLab did not start; its log ends with:\n{log[-3000:]}') from None
        yield panel
    finally:
        panel.stop()


class Route:
    """Jupyter through one of the panel's routes: an HTTP client and a websocket opener."""

    def __init__(self, panel: Panel, prefix: str, host: str | None) -> None:
        self.panel, self.prefix, self.host = panel, prefix, host
        headers = {**auth(panel), **({'Host': host} if host else {})}
        self.client = httpx.Client(base_url=f'{panel.url}{prefix}', headers=headers, timeout=30)

    def xsrf(self) -> str:
        """Jupyter's page sets its XSRF cookie, which a browser sends back with every change."""
        page = self.client.get('/lab')
        assert page.status_code == 200 and 'JupyterLab' in page.text, (page.status_code, page.text[:300])
        return str(self.client.cookies['_xsrf'])

    def new_kernel(self) -> str:
        response = self.client.post('/api/kernels', json={'name': 'python3'}, headers={'X-XSRFToken': self.xsrf()})
        assert response.status_code == 201, response.text
        return str(response.json()['id'])

    def run(self, kernel: str, code: str) -> str:
        """Execute ``code`` in the kernel over its websocket; the text of its result."""
        url = f'ws://{self.host or f"127.0.0.1:{self.panel.port}"}{self.prefix}/api/kernels/{kernel}/channels'
        sock = socket.create_connection(('127.0.0.1', self.panel.port))
        with connect(url, sock=sock, additional_headers=auth(self.panel), open_timeout=20) as ws:
            request = execute_request(code)
            ws.send(json.dumps(request))
            while True:
                message = json.loads(ws.recv(timeout=60))
                if message.get('parent_header', {}).get('msg_id') != request['header']['msg_id']:
                    continue
                if message['msg_type'] == 'execute_result':
                    return str(message['content']['data']['text/plain'])
                if message['msg_type'] == 'error':
                    raise AssertionError(f'the kernel failed: {message["content"]}')


def execute_request(code: str) -> dict[str, Any]:
    msg_id = uuid.uuid4().hex
    return {
        'header': {'msg_id': msg_id, 'msg_type': 'execute_request', 'username': 'test', 'session': uuid.uuid4().hex,
                   'version': '5.3', 'date': ''},
        'parent_header': {},
        'metadata': {},
        'content': {'code': code, 'silent': False, 'store_history': False, 'user_expressions': {},
                    'allow_stdin': False, 'stop_on_error': True},
        'channel': 'shell',
        'buffers': [],
    }  # fmt: skip


def test_kernel_runs_code_through_the_path_route(lab: Panel) -> None:
    route = Route(lab, '/instance/lab', None)
    assert route.run(route.new_kernel(), '1+1') == '2'


def test_kernel_runs_code_through_the_subdomain_route(lab: Panel) -> None:
    host = f'lab.localhost:{lab.port}'
    [instance] = lab.client.get('/instances', headers={'Host': f'localhost:{lab.port}'}).json()
    assert instance['urls']['open'] == f'http://{host}/', 'the Open URL is the app origin root'
    root = Route(lab, '', host)
    assert root.client.get('/').headers.get('location', '').startswith('/lab'), 'its root leads to the lab'
    assert root.run(root.new_kernel(), '1+1') == '2'
    # the path route in the app's own origin (where the panel sends browsers for /instance/lab/)
    in_origin = Route(lab, '/instance/lab', host)
    assert in_origin.run(in_origin.new_kernel(), 'sum(range(5))') == '10'


def test_environment_and_folders(lab: Panel) -> None:
    folder = lab.data_dir / 'instances' / 'lab'
    assert (folder / 'env' / 'bin' / 'jupyter').exists(), 'JupyterLab is in the instance venv'
    assert (folder / 'notebooks' / 'models').resolve() == (lab.data_dir / 'models').resolve()
    assert (folder / 'notebooks' / 'outputs').resolve() == (lab.data_dir / 'outputs' / 'lab').resolve()
