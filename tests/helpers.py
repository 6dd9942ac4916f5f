"""Shared test tools: free ports, waiting for conditions, a panel run as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
from nicegui.testing.user import User

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = '/usr/bin/chromium'  # Debian's, installed by `make test`
# As root in a closed network: no sandbox, no GPU, and none of Chromium's own traffic.
CHROMIUM_ARGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
]
T = TypeVar('T')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = '') -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what or condition}')
        time.sleep(interval)


async def click_row_action(user: User, instance_id: int, action: str) -> None:
    """What a click on one of a row's action buttons sends (``app.pages.instance_grid.js``)."""
    await wait_until(lambda: table_row(user, instance_id) is not None, what=f'row {instance_id}')
    user.find(marker='instances').trigger('action', {'id': instance_id, 'name': action})


def table_row(user: User, instance_id: int) -> dict[str, Any] | None:
    """A row of the instance table as the page shows it (``InstanceGrid.rows``, defaults included)."""
    found = user.find(marker='instances').elements if user.client else set()
    return next((element.rows.get(instance_id) for element in found if hasattr(element, 'rows')), None)


async def edit_row(user: User, instance_id: int, **changes: object) -> None:
    """What the Update button of a row sends after editing its cells (browser field names)."""
    await wait_until(lambda: table_row(user, instance_id) is not None, what=f'row {instance_id}')
    user.find(marker='instances').trigger('save', {'id': instance_id, 'changes': changes})


def end_group(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """End a process that leads its own session: SIGTERM to its group, SIGKILL after ``grace`` s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


class HeldCall:
    """A real call (squeue, an executor's adopt or start) whose answer is held back, in its
    thread, until ``release`` is set: for the calls ``when`` picks. Opens a race's window on
    purpose: ``asked`` is set once a held call has run."""

    def __init__(self, when: Callable[..., bool] = lambda *args: True) -> None:
        self.when = when
        self.asked = threading.Event()
        self.release = threading.Event()
        self.answers = 0
        self.call: Callable[..., Any] | None = None

    def patch(self, monkeypatch: Any, target: object, name: str) -> None:
        """Hold ``target.name`` from now on (undone with ``monkeypatch``)."""
        self.call = getattr(target, name)
        monkeypatch.setattr(target, name, self)

    def __call__(self, *args: Any) -> Any:
        assert self.call is not None
        answer = self.call(*args)
        if self.when(*args):
            self.asked.set()
            self.release.wait(10)
        self.answers += 1
        return answer


async def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = '') -> None:
    """``wait_for`` for async tests: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what or condition}')
        await asyncio.sleep(0.02)


def processes_under(data_dir: Path) -> list[psutil.Process]:
    """Processes whose working directory lies in ``data_dir`` (the instances a test started)."""
    found = []
    root = str(data_dir)
    for process in psutil.process_iter(['cwd']):
        cwd = process.info.get('cwd') or ''
        if cwd == root or cwd.startswith(root + os.sep):
            found.append(process)
    return found


def gone(process: psutil.Process | int) -> bool:
    """The process (a ``psutil.Process`` or a PID) no longer exists or is a zombie."""
    try:
        if isinstance(process, int):
            process = psutil.Process(process)
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_processes_under(data_dir: Path) -> None:
    """Instances (and forwarders) by working directory, and an nginx master left by a killed
    panel by its command line (its config lies in the data dir)."""
    config = str(data_dir / 'nginx' / 'nginx.conf')
    masters = [p for p in psutil.process_iter(['cmdline']) if config in ' '.join(p.info.get('cmdline') or [])]
    for process in [*processes_under(data_dir), *masters]:
        with contextlib.suppress(psutil.Error):
            for child in process.children():
                child.kill()
            process.kill()


class Panel:
    """``python -m app`` in a subprocess with its own data directory, port and token."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.token = env.pop('AIKORE_API_TOKEN', None) or secrets.token_urlsafe(16)
        low = free_port()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(('PYTEST_', 'NICEGUI_'))}
        self.env = {
            # As in production: behind the panel's own nginx when it is installed (AIKORE_NGINX=auto);
            # a test, or AIKORE_NGINX in the environment, may choose another mode.
            'AIKORE_NGINX': 'auto',
            **inherited,
            'AIKORE_DATA_DIR': str(data_dir),
            'AIKORE_PORT': str(self.port),
            'AIKORE_API_TOKEN': self.token,
            'AIKORE_PORT_RANGE': f'{low}-{low + 9}' if low + 9 <= 65535 else '40001-40010',
            'AIKORE_STOP_GRACE': '2',
            'AIKORE_HTTPS_PORT': 'off',  # on a port of its own when a test asks (tests/test_https.py)
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = data_dir.parent / f'panel-{data_dir.name}.log'
        # Behind nginx, each call on a new connection: a reload closes idle keep-alive connections,
        # and a request sent on one at that instant is lost (browsers retry; httpx does not).
        keep_alive = self.env['AIKORE_NGINX'] == 'off'
        self.client = httpx.Client(
            base_url=f'http://127.0.0.1:{self.port}/api',
            headers={'Authorization': f'Bearer {self.token}'},
            timeout=15,
            limits=httpx.Limits(max_keepalive_connections=None if keep_alive else 0),
        )

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def start(self, timeout: float = 30.0) -> Panel:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open('ab') as log:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'app'], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for(self._healthy, timeout, 0.05, 'the panel to answer /api/health')
        except BaseException:
            self.stop()  # a panel that never came up must not outlive the test
            raise
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f'panel exited with {self.process.returncode}:\n{self.log_text()}')
        try:
            return httpx.get(f'{self.url}/api/health', timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log_text(self) -> str:
        return self.log_file.read_text(errors='replace') if self.log_file.exists() else ''

    def _printed(self, pattern: str, what: str) -> str:
        """The latest panel's (panels on one data dir share the log file)."""
        found = re.findall(pattern, self.log_text())
        if not found:
            raise AssertionError(f'no {what} in the panel log ({pattern!r} not found)')
        return str(found[-1])

    def login_link(self) -> str:
        """The one-time login link the panel printed (``Log in: <url>``)."""
        return self._printed(r'Log in: (https?://\S+)', 'one-time login link')

    def password(self) -> str:
        """The generated login password the panel printed once."""
        return self._printed(r'Login password generated \(shown once, stored hashed\): (\S+)', 'generated password')

    def kill(self) -> None:
        """SIGKILL the panel only: its instances keep running."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop_panel_only(self) -> None:
        """Graceful panel exit (SIGTERM); what happens to instances is the panel's business."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def stop(self) -> None:
        """Graceful panel exit, then make sure nothing the test started is left."""
        self.stop_panel_only()
        kill_processes_under(self.data_dir)
        self.client.close()

    # -- API shortcuts ---------------------------------------------------------------

    def create(self, name: str, blueprint: str = 'Demo', **fields: Any) -> dict[str, Any]:
        response = self.client.post('/instances', json={'name': name, 'blueprint': blueprint, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def instance(self, instance_id: int) -> dict[str, Any]:
        response = self.client.get(f'/instances/{instance_id}')
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, instance_id: int, *statuses: str, timeout: float = 20.0) -> dict[str, Any]:
        seen: list[str] = []

        def reached() -> dict[str, Any] | None:
            current = self.instance(instance_id)
            now = f'{current["status"]} ({current.get("status_detail") or "no detail"})'
            if not seen or seen[-1] != now:
                seen.append(now)
            return current if current['status'] in statuses else None

        try:
            return wait_for(reached, timeout, 0.02, f'instance {instance_id} to be {statuses}')
        except AssertionError as exc:  # say what it was instead
            raise AssertionError(f'{exc}; it was: {" -> ".join(seen[-8:])}') from None

    def put_blueprint(self, name: str, script: str) -> None:
        response = self.client.put(f'/blueprints/{name}', content=script.encode())
        assert response.status_code in {201, 204}, response.text


def blueprint(body: str, ready: str = 'http', stall_timeout: float = 30, name: str = 'Test') -> str:
    """A small custom blueprint script around ``body``."""
    return (
        '#!/usr/bin/env bash\n'
        '### AIKORE-METADATA-START ###\n'
        f'# aikore.name = {name}\n'
        '# aikore.category = Test\n'
        f'# aikore.ready = {ready}\n'
        f'# aikore.stall_timeout = {stall_timeout}\n'
        '### AIKORE-METADATA-END ###\n'
        f'{body}\n'
    )


def python_server_blueprint(delay: float = 0.0, ready: str = 'http') -> str:
    """Serves HTTP on $WEBUI_PORT after ``delay`` seconds (the app process replaces bash)."""
    python = sys.executable
    return blueprint(
        f'echo "booting $INSTANCE_NAME"\n'
        f"exec {python} -u -c \"import time; time.sleep({delay}); print('serving', flush=True); "
        'import http.server as h, os; '
        "h.ThreadingHTTPServer(('127.0.0.1', int(os.environ['WEBUI_PORT'])), h.SimpleHTTPRequestHandler)"
        '.serve_forever()"',
        ready=ready,
    )
