"""The real image: built with podman from the repository's Dockerfile (once per session; layers
cached between runs, see tests/container_kit.py), run with host networking and a temp /config
as PUID/PGID. Logged in with the API token, a Demo instance is created, started and reached
through the proxy; the container is stopped (the instance gets its SIGTERM and its end is
recorded) and started again: the instance is still there and back (autostart), and every file
in /config belongs to PUID:PGID."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import container_kit as kit
from tests.container_kit import PGID, PUID, STOP_TIMEOUT, Container
from tests.helpers import wait_for


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
    assert 'Log in: http://' in logs and 'Login password generated' in logs  # `docker compose logs` shows them
    container.login()

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
