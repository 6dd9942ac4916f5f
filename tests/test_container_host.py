"""The image's supervisord config and entrypoint, run on the host with other paths: nginx and the
panel come up, an instance is reached through /instance/<slug>/, a SIGKILLed panel is restarted
and re-adopts the instance, a SIGKILLed nginx master serves again within 2 s (its orphaned
workers are ended first), and a stop (as a container stop sends it) stops the instance and
records its end."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import REPO, Panel, gone, kill_processes_under, wait_for
from tests.netkit import public_range, require_tools

CONTAINER = REPO / 'container'
STOP_WAIT = 60


class Supervised:
    """container/entrypoint.sh (PUID=0: the current user) -> supervisord -> nginx + the panel."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.panel = Panel(
            root / 'data', AIKORE_NGINX='external', AIKORE_STOP_ON_EXIT='1', AIKORE_PORT_RANGE=public_range()
        )
        self.run_dir = root / 'run'
        self.log_file = root / 'supervisord.log'
        venv_bin = str(Path(sys.executable).parent)
        self.env = {
            **self.panel.env,
            'PUID': '0',
            'PGID': '0',
            'AIKORE_RUN_DIR': str(self.run_dir),
            'AIKORE_PANEL_COMMAND': f'{sys.executable} -m app',
            'PYTHONPATH': str(REPO),  # this checkout's panel, from any working directory
            'PATH': f'{venv_bin}:{os.environ.get("PATH", "")}',  # supervisord from the dev extras
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_file.open('ab') as log:
            self.process = subprocess.Popen(
                ['bash', str(CONTAINER / 'entrypoint.sh')], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.root,
            )  # fmt: skip
        self.panel.process = self.process  # its health check fails at once if supervisord exits
        wait_for(self.panel._healthy, 60, 0.05, 'the panel behind supervisord to answer /api/health')

    def ctl(self, *args: str) -> str:
        full = {
            **self.env,
            'AIKORE_CONTAINER_DIR': str(CONTAINER),
            'AIKORE_USER': 'root',
            'AIKORE_SUPERVISOR_USER': 'root',
            'AIKORE_STOP_WAIT': '30',
        }
        result = subprocess.run(
            ['supervisorctl', '-c', str(CONTAINER / 'supervisord.conf'), *args],
            env=full, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return result.stdout.strip()

    def program_pid(self, name: str) -> int:
        text = self.ctl('pid', name)
        return int(text) if text.isdigit() else 0

    def log_text(self) -> str:
        return self.log_file.read_text(errors='replace')

    def stop(self, timeout: float = STOP_WAIT) -> float:
        """SIGTERM to supervisord (what tini forwards on a container stop); answers the seconds it took."""
        assert self.process is not None
        began = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout)
        return time.monotonic() - began

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        kill_processes_under(self.panel.data_dir)
        nginx_pid = self.panel.data_dir / 'nginx' / 'nginx.pid'
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            os.killpg(int(nginx_pid.read_text()), signal.SIGKILL)
        self.panel.client.close()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    require_tools()
    assert Path(sys.executable).with_name('supervisord').exists(), (
        'supervisord is missing from the venv: pip install -e .[dev] (make setup does)'
    )
    stack = Supervised(tmp_path)
    try:
        stack.start()
        yield stack
    finally:
        stack.cleanup()


def proxied(stack: Supervised, slug: str) -> str | None:
    """The page of the instance through nginx, or None while it does not answer 200."""
    try:
        response = httpx.get(
            f'{stack.panel.url}/instance/{slug}/', headers={'Authorization': f'Bearer {stack.panel.token}'}, timeout=2
        )
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def read_pid(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def nginx_group(master: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(['name']):
        with contextlib.suppress(psutil.Error):
            if process.info['name'] == 'nginx' and os.getpgid(process.pid) == master:
                found.append(process)
    return found


def test_supervisord_runs_restarts_and_stops_the_stack(supervised: Supervised) -> None:
    stack, panel = supervised, supervised.panel
    assert 'Log in: http://' in stack.log_text()  # the panel's output reaches supervisord's stdout
    instance = panel.create('demo', blueprint='Demo')
    assert panel.client.post(f'/instances/{instance["id"]}/start').status_code == 202
    pid = panel.wait_status(instance['id'], 'started', timeout=30)['pid']
    assert 'demo' in wait_for(lambda: proxied(stack, 'demo'), 15, 0.05, 'the instance through /instance/demo/')

    # kill -9 the panel: supervisord starts a new one, which re-adopts the running instance.
    old_panel = stack.program_pid('panel')
    assert old_panel > 0
    os.kill(old_panel, signal.SIGKILL)
    wait_for(lambda: stack.program_pid('panel') not in {0, old_panel}, 20, 0.05, 'supervisord to restart the panel')
    wait_for(panel._healthy, 60, 0.05, 'the restarted panel to answer /api/health')
    again = panel.wait_status(instance['id'], 'started')
    assert again['pid'] == pid  # re-adopted, not restarted
    assert not gone(pid)
    assert 'Re-adopted demo' in stack.log_text()

    # kill -9 the nginx master: its workers keep the port; the wrapper ends them and nginx serves again.
    pid_file = panel.data_dir / 'nginx' / 'nginx.pid'
    master = int(pid_file.read_text())
    assert nginx_group(master), 'the nginx workers should share the master process group'
    os.kill(master, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: proxied(stack, 'demo'), 2.0, 0.01, 'nginx to serve /instance/demo/ again')
    print(f'nginx serving again {time.monotonic() - killed:.2f} s after kill -9 of its master')  # noqa: T201
    new_master = wait_for(lambda: read_pid(pid_file) not in {0, master} and read_pid(pid_file), 5, 0.02, 'a new master')
    wait_for(lambda: not nginx_group(master), 5, 0.05, "the dead master's workers to end")

    # A container stop: SIGTERM to supervisord -> the panel stops the instance, records its end, exits.
    took = stack.stop()
    assert took < STOP_WAIT
    assert stack.process is not None and stack.process.returncode == 0, stack.log_text()[-3000:]
    assert gone(pid)
    with contextlib.closing(sqlite3.connect(panel.data_dir / 'aikore.db')) as db:
        status, exit_code, recorded_pid = db.execute(
            'SELECT status, exit_code, pid FROM instances WHERE name = ?', ('demo',)
        ).fetchone()
    assert (status, exit_code, recorded_pid) == ('STOPPED', 0, None)  # the enum's name, as SQLModel stores it
    assert not nginx_group(new_master)
