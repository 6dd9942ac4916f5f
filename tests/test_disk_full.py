"""A full disk under the data directory (a small tmpfs): every write answers a clear 507, nothing
half-written is left behind, and everything works again once space is freed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import Panel, blueprint, wait_for

SIZE = '24m'


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / 'disk'
    mount.mkdir()
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={SIZE}', 'tmpfs', str(mount)], capture_output=True)
    assert done.returncode == 0, f'cannot mount a small tmpfs for the disk-full test: {done.stderr.decode()}'
    try:
        yield mount
    finally:
        subprocess.run(['umount', '-l', str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the returned file frees it again."""
    filler = disk / 'filler'
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 4096, 1):  # big writes first, then the last pages, then the last bytes
            with contextlib.suppress(OSError):
                while os.write(fd, b'\0' * size):
                    pass
    finally:
        os.close(fd)
    return filler


def temp_debris(data: Path) -> list[Path]:
    return [path for path in data.rglob('*') if path.is_file() and path.name.endswith('.tmp')]


def test_full_disk_gets_507_and_recovers(small_disk: Path, tmp_path: Path) -> None:
    panel = Panel(small_disk / 'data', AIKORE_STOP_ON_EXIT='1', AIKORE_NGINX='off')
    panel.log_file = tmp_path / 'panel.log'  # the panel's own output, off the full disk
    panel.start()
    try:
        client = panel.client
        before = panel.create('before')
        script_before = client.get(f'/instances/{before["id"]}/script').text
        filler = fill(small_disk)

        attempts = {
            'create': client.post('/instances', json={'name': 'after', 'blueprint': 'Demo'}),
            'patch': client.patch(f'/instances/{before["id"]}', json={'autostart': True, 'gpu_ids': []}),
            'script': client.put(f'/instances/{before["id"]}/script', content=script_before + '\n# more\n' * 2000),
            'blueprint': client.put('/blueprints/Big', content='#!/bin/bash\n' + '# filler\n' * 10000),
            'start': client.post(f'/instances/{before["id"]}/start'),
        }
        for what, answer in attempts.items():
            assert answer.status_code == 507, f'{what}: {answer.status_code} {answer.text}'
            assert 'full' in answer.json()['detail'], what
        login = httpx.post(f'{panel.url}/login', data={'password': panel.password(), 'next': '/'}, timeout=10)
        assert login.status_code == 507 and 'disk of the data directory is full' in login.text, login.text
        assert 'aikore_session' not in login.cookies
        assert temp_debris(panel.data_dir) == [], 'a failed write left a temporary file'
        assert 'Traceback' not in panel.log_text()

        filler.unlink()
        assert client.get(f'/instances/{before["id"]}/script').text == script_before, 'the script was damaged'
        row = panel.instance(before['id'])
        assert row['autostart'] is False and row['status'] in {'stopped', 'error'}, row
        created = client.post('/instances', json={'name': 'after', 'blueprint': 'Demo'})
        assert created.status_code == 201, created.text
        assert client.post(f'/instances/{before["id"]}/start').status_code == 202
        panel.wait_status(before['id'], 'started', timeout=30)
        assert httpx.get(f'{panel.url}/api/health', timeout=5).status_code == 200
        login = httpx.post(f'{panel.url}/login', data={'password': panel.password(), 'next': '/'}, timeout=10)
        assert login.status_code == 303 and login.cookies.get('aikore_session'), 'logging in works again'
    finally:
        panel.stop()


CHATTY = blueprint(  # serves HTTP and prints a line every 10 ms, as a training run does
    f'exec {sys.executable} -u -c "import http.server as h, os, threading, time; '
    "s = h.ThreadingHTTPServer(('127.0.0.1', int(os.environ['WEBUI_PORT'])), h.SimpleHTTPRequestHandler); "
    'threading.Thread(target=s.serve_forever, daemon=True).start(); '
    "[print('step', i, 'x' * 200, flush=True) or time.sleep(0.01) for i in iter(int, 1)]\""
)


def test_an_instance_outlives_a_full_disk_and_its_end_is_recorded(small_disk: Path, tmp_path: Path) -> None:
    panel = Panel(small_disk / 'data', AIKORE_STOP_ON_EXIT='1', AIKORE_NGINX='off')
    panel.log_file = tmp_path / 'panel.log'
    panel.start()
    try:
        panel.put_blueprint('Chatty', CHATTY)
        instance = panel.create('chatty', blueprint='Chatty')
        assert panel.client.post(f'/instances/{instance["id"]}/start').status_code == 202
        runner = panel.wait_status(instance['id'], 'started', timeout=30)['pid']
        filler = fill(small_disk)
        log = panel.data_dir / 'instances' / 'chatty' / 'logs' / 'output.log'
        writes = psutil.Process(runner).io_counters().write_count
        # The runner goes on trying to write (and dropping) the app's lines on the full disk.
        wait_for(lambda: psutil.Process(runner).io_counters().write_count > writes + 50, 15, what='writes')
        app = psutil.Process(runner).children()[0]
        assert panel.instance(instance['id'])['status'] == 'started', 'the app died with the full disk'
        assert app.is_running(), 'the app died with the full disk'
        app.kill()  # it ends while the disk is full: nowhere to record its exit
        wait_for(lambda: not psutil.pid_exists(runner), 10, what='the runner to end')
        assert panel.instance(instance['id'])['status'] == 'started', 'the end cannot be recorded yet'
        filler.unlink()
        ended = panel.wait_status(instance['id'], 'error', timeout=15)
        assert ended['exit_code'] == 137 and ended['pid'] is None, ended
        text = log.read_text(errors='replace')
        assert 'bytes of output were lost here: the disk was full' in text or 'while the disk was full' in text
        assert 'while the disk was full' in text, text[-500:]
        assert panel.client.delete(f'/instances/{instance["id"]}').status_code == 204, 'delete works again'
        assert 'Traceback' not in panel.log_text()
    finally:
        panel.stop()
