"""The real image: built with podman from the repository's Dockerfile (once per session; layers
cached between runs, see tests/container_kit.py), run with host networking and a temp /config
as PUID/PGID. The image serves HTTPS by default (AIKORE_HTTPS_ONLY=1, its generated certificate,
trusted here as a user would): plain HTTP redirects there. Logged in with the API token, a Demo
instance is created, started and reached through the proxy; the container is stopped (the
instance gets its SIGTERM and its end is recorded) and started again: the instance is still there
and back (autostart), and every file in /config belongs to PUID:PGID. A persistent Demo instance
streams its desktop through the container's nginx over HTTPS to a logged-in browser."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from tests import container_kit as kit
from tests.container_kit import PGID, PUID, STOP_TIMEOUT, Container
from tests.helpers import wait_for
from tests.test_desktop import frame


@pytest.fixture(scope='session')
def image() -> str:
    """Built once per test session; a failure to run podman fails here with podman's own words."""
    kit.require_podman()
    took = kit.build()
    print(f'image built in {took:.1f} s, {kit.image_size() / 1e6:.0f} MB')  # noqa: T201
    return kit.IMAGE


@pytest.fixture
def container(image: str, tmp_path: Path) -> Iterator[Container]:
    config = tmp_path / 'config'
    config.mkdir()
    running = Container(image, config)
    try:
        yield running
    finally:
        print(running.logs()[-5000:])  # noqa: T201 - shown when the test failed
        kit.remove_container(running.name)
        shutil.rmtree(config, ignore_errors=True)


def owners(folder: Path) -> set[tuple[int, int]]:
    found = {(folder.stat().st_uid, folder.stat().st_gid)}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            info = os.lstat(os.path.join(root, name))
            found.add((info.st_uid, info.st_gid))
    return found


def recorded(config: Path, name: str) -> tuple[Any, ...]:
    with contextlib.closing(sqlite3.connect(config / 'aikore.db')) as db:
        return db.execute('SELECT status, exit_code, pid FROM instances WHERE name = ?', (name,)).fetchone()


def test_image_runs_the_panel_and_keeps_instances_across_a_restart(container: Container) -> None:
    container.run()
    print(f'start -> /api/health 200: {container.wait_healthy():.2f} s')  # noqa: T201
    logs = container.logs()
    # `docker compose logs` shows them; the link leads to HTTPS at once (one login).
    assert f'Log in: https://localhost:{container.https_port}/login?once=' in logs, logs
    assert 'Login password generated' in logs
    container.login()
    plain = httpx.get(f'{container.plain_url}/api/instances')
    assert plain.status_code == 308, plain.text
    assert plain.headers['location'] == f'https://127.0.0.1:{container.https_port}/api/instances'

    instance = container.api('POST', '/instances', 201, json={'name': 'demo', 'blueprint': 'Demo', 'autostart': True})
    container.api('POST', f'/instances/{instance["id"]}/start', 202)
    first_pid = container.wait_status(instance['id'], 'started')['pid']
    assert 'demo' in wait_for(lambda: container.proxied('demo'), 20, 0.05, 'the instance through /instance/demo/')
    assert kit.podman('healthcheck', 'run', container.name, check=False).returncode == 0

    began = time.monotonic()
    kit.podman('stop', '-t', str(STOP_TIMEOUT), container.name, timeout=STOP_TIMEOUT + 30)
    print(f'podman stop: {time.monotonic() - began:.2f} s')  # noqa: T201
    assert recorded(container.config, 'demo') == ('STOPPED', 0, None)  # SIGTERM given, end recorded
    assert owners(container.config) == {(PUID, PGID)}

    kit.podman('start', container.name)
    print(f'restart -> /api/health 200: {container.wait_healthy():.2f} s')  # noqa: T201
    again = container.wait_status(instance['id'], 'started')  # autostart brought it back
    assert again['name'] == 'demo' and again['pid'] != first_pid
    assert 'demo' in wait_for(lambda: container.proxied('demo'), 20, 0.05, 'the instance after the restart')
    assert owners(container.config) == {(PUID, PGID)}


def test_desktop_streams_over_https_in_the_container(container: Container, browser: Browser) -> None:
    """A persistent Demo instance in the running container: its /desktop/<slug>/ page, served by
    the container's nginx over HTTPS to a browser with a session, shows a non-blank frame of the
    stream (Selkies' websocket answered and its H.264 decoded)."""
    container.run()
    container.wait_healthy()
    container.login()
    printed = wait_for(lambda: re.search(r'Log in: (https://\S+)', container.logs()), 60, 0.5, 'the login link')
    link = printed.group(1)
    instance = container.api('POST', '/instances', 201, json={'name': 'desk', 'blueprint': 'Demo', 'persistent': True})
    container.api('POST', f'/instances/{instance["id"]}/start', 202)
    container.wait_status(instance['id'], 'started', timeout=90)

    def desktop_up() -> dict[str, Any] | None:
        current = container.api('GET', f'/instances/{instance["id"]}')
        return current if current['persistent_display'] is not None else None

    wait_for(desktop_up, 90, 0.2, f'the desktop to be up:\n{container.logs()[-3000:]}')
    context = browser.new_context(viewport={'width': 1280, 'height': 720}, ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(link)
        reply = page.goto(f'{container.url}/desktop/desk/')
        assert reply is not None and reply.status == 200
        try:
            frame(page)
        except BaseException:
            page.screenshot(path=str(container.config.parent / 'desktop.png'))
            raise
    finally:
        context.close()
    container.api('POST', f'/instances/{instance["id"]}/stop', 202)
    container.wait_status(instance['id'], 'stopped', timeout=60)
