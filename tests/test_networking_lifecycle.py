"""The proxy and the public ports over time, each test with its own panel: surviving a panel
SIGKILL, nginx dying, a broken template, reloads under load, a busy AIKORE_PORT, and the
panel without nginx (AIKORE_NGINX=off)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import REPO, Panel, gone, wait_for
from tests.netkit import (
    ECHO_BLUEPRINT,
    auth,
    call,
    echo_name,
    proxied_panel,
    public_ports,
    refused,
    started,
    wait_routed,
)


def test_activation_survives_panel_sigkill(tmp_path: Path) -> None:
    data = tmp_path / 'data'
    first = proxied_panel(data, AIKORE_STOP_ON_EXIT='')
    second: Panel | None = None
    try:
        port = public_ports(first)[0]
        instance = started(first, 'durable', public_port=port)
        call(first, 'POST', f'/instances/{instance["id"]}/activate')
        forwarder = json.loads((data / 'ports' / f'{port}.json').read_text())['pid']
        master = int((data / 'nginx' / 'nginx.pid').read_text())

        first.kill()
        wait_for(lambda: gone(master), 5, what='the managed nginx to end with its panel')
        assert echo_name(f'http://127.0.0.1:{port}/') == 'durable', 'the public port died with the panel'
        # Stale proxy state from the dead panel: the next start replaces it.
        (data / 'nginx' / 'nginx.conf').write_text('this is not an nginx config\n')

        second = proxied_panel(data, AIKORE_API_TOKEN=first.token, AIKORE_PORT_RANGE=first.env['AIKORE_PORT_RANGE'])
        adopted = second.instance(instance['id'])
        assert adopted['status'] == 'started' and adopted['active'] is True
        assert json.loads((data / 'ports' / f'{port}.json').read_text())['pid'] == forwarder, 'not re-adopted'
        assert not gone(forwarder)
        assert echo_name(f'http://127.0.0.1:{port}/') == 'durable'
        wait_routed(f'{second.url}/instance/durable/', 'durable', headers=auth(second))
        assert call(second, 'GET', f'/instances/{instance["id"]}')['urls']['open'] == f'http://127.0.0.1:{port}/'
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_nginx_is_restarted_when_it_dies(tmp_path: Path) -> None:
    panel = proxied_panel(tmp_path / 'data')
    try:
        started(panel, 'phoenix')
        wait_routed(f'{panel.url}/instance/phoenix/', 'phoenix', headers=auth(panel))
        pid_file = panel.data_dir / 'nginx' / 'nginx.pid'
        old = int(pid_file.read_text())
        psutil.Process(old).kill()

        def restarted() -> bool:
            try:
                return int(pid_file.read_text()) != old
            except (OSError, ValueError):
                return False

        wait_for(restarted, 10, what='the panel to start a new nginx master')
        wait_routed(f'{panel.url}/instance/phoenix/', 'phoenix', headers=auth(panel))
        assert call(panel, 'GET', '/network')['proxy']['running'] is True
    finally:
        panel.stop()


def test_broken_template_is_rejected_and_the_proxy_keeps_serving(tmp_path: Path) -> None:
    templates = tmp_path / 'templates'
    shutil.copytree(REPO / 'container' / 'nginx', templates)
    template = templates / 'nginx.conf.j2'
    good = template.read_text()
    panel = proxied_panel(tmp_path / 'data', AIKORE_NGINX_TEMPLATES=str(templates))
    config = panel.data_dir / 'nginx' / 'nginx.conf'
    try:
        started(panel, 'keeper')
        wait_routed(f'{panel.url}/instance/keeper/', 'keeper', headers=auth(panel))
        live = config.read_text()

        template.write_text(good.replace('http {\n', 'http {\n    this_is_not_a_directive on;\n', 1))
        newcomer = panel.create('newcomer', blueprint='Echo')  # a new route: a new render
        error = wait_for(lambda: call(panel, 'GET', '/network')['proxy']['last_error'], 10, what='the report')
        assert 'unknown directive "this_is_not_a_directive"' in error and 'previous one stays live' in error
        assert config.read_text() == live, 'the refused config replaced the live one'
        assert 'newcomer' in (config.parent / 'nginx.conf.candidate').read_text()  # kept for inspection
        assert 'unknown directive' in panel.log_text()  # logged too
        assert echo_name(f'{panel.url}/instance/keeper/', headers=auth(panel)) == 'keeper'

        template.write_text(good.replace('{% for item in instances %}', '{% for item in %}', 1))  # Jinja error
        panel.create('third', blueprint='Echo')
        wait_for(lambda: 'stays live' in (call(panel, 'GET', '/network')['proxy']['last_error'] or '') and
                 'third' not in config.read_text(), 10, what='the template error to be reported')  # fmt: skip
        assert config.read_text() == live

        template.write_text(good)
        panel.client.post(f'/instances/{newcomer["id"]}/start')
        wait_routed(f'{panel.url}/instance/newcomer/', 'newcomer', headers=auth(panel))
        assert call(panel, 'GET', '/network')['proxy']['last_error'] is None
        assert echo_name(f'{panel.url}/instance/keeper/', headers=auth(panel)) == 'keeper'
    finally:
        panel.stop()


def _hammer(url: str, count: int, headers: dict[str, str], keep_alive: bool, failures: list[str]) -> None:
    """GET ``url`` ``count`` times. keep_alive: one pooled connection, and a request lost on a
    connection nginx closed at that instant (a reload ends idle keep-alive connections) is
    retried once, as browsers do; otherwise a new connection each time, no retry."""
    limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
    kind = 'keep-alive' if keep_alive else 'new connections'
    with httpx.Client(headers=headers, timeout=10, limits=limits) as client:
        for _ in range(count):
            try:
                try:
                    response = client.get(url)
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    if not keep_alive:
                        raise
                    response = client.get(url)
                if response.status_code != 200 or b'"steady"' not in response.content:
                    failures.append(f'{kind}: {response.status_code} {response.text[:100]}')
            except httpx.HTTPError as exc:
                failures.append(f'{kind}: {exc!r}')


def test_reload_under_load(tmp_path: Path) -> None:
    panel = proxied_panel(tmp_path / 'data')
    try:
        started(panel, 'steady')
        url = f'{panel.url}/instance/steady/load'
        wait_routed(url, 'steady', headers=auth(panel))
        reloads_before = call(panel, 'GET', '/network')['proxy']['reloads']
        failures: list[str] = []
        loaders = [
            threading.Thread(target=_hammer, args=(url, 500, auth(panel), keep_alive, failures))
            for keep_alive in (False, True)
        ]
        for loader in loaders:
            loader.start()
        cycles = 0
        while any(loader.is_alive() for loader in loaders) or cycles < 2:
            # New instances are new routes, and so is their first port; deleting them removes
            # the routes: each cycle reloads nginx (starts and stops alone need no reload).
            churn = [panel.create(f'churn-{cycles}-{index}', blueprint='Echo')['id'] for index in range(3)]
            for instance_id in churn:
                panel.client.post(f'/instances/{instance_id}/start')
            for instance_id in churn:
                panel.wait_status(instance_id, 'started')
            for instance_id in churn:
                panel.client.post(f'/instances/{instance_id}/stop')
            for instance_id in churn:
                panel.wait_status(instance_id, 'stopped')
            for instance_id in churn:
                assert panel.client.delete(f'/instances/{instance_id}').status_code == 204
            cycles += 1
        for loader in loaders:
            loader.join()
        reloads = call(panel, 'GET', '/network')['proxy']['reloads'] - reloads_before
        assert failures == [], f'{len(failures)} of 1000 requests failed during {reloads} reloads: {failures[:5]}'
        # A burst of changes is one reload: at least one per cycle happened under load.
        assert reloads >= cycles, f'only {reloads} reloads in {cycles} cycles'
    finally:
        panel.stop()


def test_busy_panel_port_stops_the_panel_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(('127.0.0.1', 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        panel = Panel(tmp_path / 'data', AIKORE_NGINX='managed', AIKORE_PORT=str(port))
        try:
            with pytest.raises(AssertionError, match='panel exited with 1'):
                panel.start(timeout=30)
            assert 'aikore: nginx' in panel.log_text() and 'Address already in use' in panel.log_text()
        finally:
            panel.stop()


def test_without_nginx_only_port_access(tmp_path: Path) -> None:
    panel = Panel(tmp_path / 'data', AIKORE_NGINX='off', AIKORE_STOP_ON_EXIT='1').start()
    try:
        status = call(panel, 'GET', '/network')
        assert status['nginx'] == 'off' and status['proxy'] is None and status['panel'] == f'127.0.0.1:{panel.port}'
        refused_pattern = panel.client.post('/instances', json={'name': 'pathy', 'blueprint': 'Demo',
                                                                'access_pattern': 'path'})  # fmt: skip
        assert refused_pattern.status_code == 422 and 'needs the NGINX proxy' in refused_pattern.json()['detail']
        panel.put_blueprint('Echo', ECHO_BLUEPRINT)
        port = panel.create('porty', blueprint='Echo')['public_port']
        instance = panel.instance(1)
        assert (
            panel.client.patch(f'/instances/{instance["id"]}', json={'access_pattern': 'subdomain'}).status_code == 422
        )
        panel.client.post(f'/instances/{instance["id"]}/start')
        assert panel.wait_status(instance['id'], 'started')['urls'] == {'open': None, 'view': None}
        active = call(panel, 'POST', f'/instances/{instance["id"]}/activate')
        assert active['urls'] == {'open': f'http://127.0.0.1:{port}/', 'view': f'http://127.0.0.1:{port}/'}
        assert echo_name(f'http://127.0.0.1:{port}/') == 'porty'
        panel.client.post(f'/instances/{instance["id"]}/stop')
        panel.wait_status(instance['id'], 'stopped')
        wait_for(lambda: refused(port), 5, what='the forwarder to go down with the instance')
    finally:
        panel.stop()
    assert not list((tmp_path / 'data' / 'ports').glob('*.json')), 'AIKORE_STOP_ON_EXIT left a forwarder'


def test_sigkilled_panel_leaves_nothing_behind_once_cleaned(tmp_path: Path) -> None:
    """What the tests rely on: nginx ends with its panel, socat runs in the data dir (for cleanup)."""
    panel = proxied_panel(tmp_path / 'data', AIKORE_STOP_ON_EXIT='')
    try:
        port = public_ports(panel)[0]
        instance = started(panel, 'orphan', public_port=port)
        call(panel, 'POST', f'/instances/{instance["id"]}/activate')
        panel.kill()
    finally:
        panel.stop()
    wait_for(lambda: refused(port), 5, what='the forwarder to be cleaned')
    wait_for(lambda: refused(panel.port), 5, what='nginx to be gone')


def test_external_nginx_is_only_configured_and_signalled(tmp_path: Path) -> None:
    """AIKORE_NGINX=external (the container): someone else runs the master on the panel's config."""
    data = tmp_path / 'data'
    panel = Panel(data, AIKORE_NGINX='external', AIKORE_STOP_ON_EXIT='1')
    config = data / 'nginx' / 'nginx.conf'
    master: subprocess.Popen[bytes] | None = None
    try:
        data.mkdir(parents=True)
        with panel.log_file.open('ab') as log:
            panel.process = subprocess.Popen([sys.executable, '-m', 'app'], cwd=REPO, env=panel.env, stdout=log,
                                             stderr=subprocess.STDOUT)  # fmt: skip
        wait_for(config.exists, 30, what='the panel to write its nginx config')
        pid_file = data / 'nginx' / 'nginx.pid'  # (nginx -t creates it empty)
        assert not (pid_file.exists() and pid_file.read_text().strip()), 'the panel started nginx itself'
        # What supervisord does in the container:
        master = subprocess.Popen(['nginx', '-c', str(config), '-g', 'daemon off;'], cwd=config.parent,
                                  start_new_session=True, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_for(panel._healthy, 30, what='the panel behind the external nginx')
        panel.put_blueprint('Echo', ECHO_BLUEPRINT)
        started(panel, 'outside')
        wait_routed(f'{panel.url}/instance/outside/', 'outside', headers=auth(panel))
        status = call(panel, 'GET', '/network')
        assert status['nginx'] == 'external' and status['proxy']['running'] is True
        assert status['proxy']['last_error'] is None and status['proxy']['reloads'] >= 1
    finally:
        panel.stop()
        if master is not None:
            os.killpg(master.pid, signal.SIGTERM)
            master.wait(10)
