"""Shared tools of the networking tests: a panel behind its own (managed) nginx, the echo
instance app, and small HTTP helpers that talk to the proxy and to public ports."""

from __future__ import annotations

import random
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import REPO, Panel, blueprint, wait_for

ECHO_APP = REPO / 'tests' / 'echo_app.py'
ECHO_BLUEPRINT = blueprint(f'exec {sys.executable} -u {ECHO_APP}', name='Echo')


def require_tools() -> None:
    missing = [tool for tool in ('nginx', 'socat') if not shutil.which(tool, path='/usr/sbin:/usr/bin:/sbin:/bin')]
    assert not missing, f'the networking tests need {missing}: apt-get install -y nginx socat (make setup does)'


def proxied_panel(data_dir: Path, **env: str) -> Panel:
    """A started panel in the managed mode: nginx on AIKORE_PORT, the panel behind it."""
    require_tools()
    defaults = {'AIKORE_STOP_ON_EXIT': '1', 'AIKORE_PORT_RANGE': public_range()}
    panel = Panel(data_dir, AIKORE_NGINX='managed', **{**defaults, **env}).start()
    panel.put_blueprint('Echo', ECHO_BLUEPRINT)
    return panel


def public_range(size: int = 10) -> str:
    """Public ports below the kernel's ephemeral range (as 9001-9020 is in production): a
    connection's own local port can never sit on them and make them look taken."""
    low_ephemeral = int(Path('/proc/sys/net/ipv4/ip_local_port_range').read_text().split()[0])
    for _ in range(100):
        low = random.randrange(20000, low_ephemeral - size)
        if all(_bindable(port) for port in range(low, low + size)):
            return f'{low}-{low + size - 1}'
    raise AssertionError('no free block of public ports below the ephemeral range')


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


def public_ports(panel: Panel) -> list[int]:
    low, high = (int(part) for part in panel.env['AIKORE_PORT_RANGE'].split('-'))
    return list(range(low, high + 1))


def auth(panel: Panel) -> dict[str, str]:
    return {'Authorization': f'Bearer {panel.token}'}


def started(panel: Panel, name: str, **fields: Any) -> dict[str, Any]:
    """Create an Echo instance, start it, wait until ``started`` and routed by nginx (``urls.view``)."""
    instance = panel.create(name, **{'blueprint': 'Echo', **fields})
    response = panel.client.post(f'/instances/{instance["id"]}/start')
    assert response.status_code == 202, response.text
    return wait_routable(panel, instance['id'])


def wait_routable(panel: Panel, instance_id: int) -> dict[str, Any]:
    """``started`` and routed by nginx: ``urls.view`` is the path URL, or for a root-only app
    (``aikore.path = none``) the panel's way to its origin (before nginx routes it, an active
    instance's view is its public port URL)."""
    panel.wait_status(instance_id, 'started')

    def routed() -> dict[str, Any] | None:
        instance = panel.instance(instance_id)
        return instance if (instance['urls']['view'] or '').startswith(('/instance/', '/_aikore/app/')) else None

    return wait_for(routed, 10, 0.01, 'urls.view on the path route')


def call(panel: Panel, method: str, path: str, expected: int = 200, **params: Any) -> dict[str, Any]:
    response = panel.client.request(method, path, params=params)
    assert response.status_code == expected, f'{method} {path}: {response.status_code} {response.text}'
    return response.json()


def echo(url: str, **kwargs: Any) -> dict[str, Any]:
    """GET ``url`` from an echo instance: its JSON (name, path, headers)."""
    response = httpx.get(url, timeout=5, **kwargs)
    assert response.status_code == 200, f'{url}: {response.status_code} {response.text[:300]}'
    return response.json()


def echo_name(url: str, **kwargs: Any) -> str | None:
    """The name of the instance answering ``url``, None while nothing (or something else) answers."""
    try:
        response = httpx.get(url, timeout=5, **kwargs)
    except httpx.HTTPError:
        return None
    if response.status_code != 200 or 'json' not in response.headers.get('content-type', ''):
        return None
    return str(response.json().get('name'))


def wait_routed(url: str, name: str, timeout: float = 10.0, **kwargs: Any) -> None:
    wait_for(lambda: echo_name(url, **kwargs) == name, timeout, 0.02, f'{url} to reach {name}')


def refused(port: int, host: str = '127.0.0.1') -> bool:
    """True when nothing listens on ``host:port`` (the connection is refused)."""
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect((host, port))
        except ConnectionRefusedError:
            return True
    return False
