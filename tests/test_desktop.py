"""Persistent desktops (issue 9), with real processes: Xvfb, openbox, Chromium in kiosk mode on
the app, Selkies 2.1.0 on a unix socket, nginx's /desktop/<slug>/ behind the panel's auth, and
a headless Chromium (Playwright) watching the stream and clicking in it.

Heavy (one desktop is ~1 GB of RSS): the tests run one or two desktops at a time."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from app.config import Settings
from app.services.runtime import desktop
from tests.helpers import REPO, Panel, blueprint, gone, wait_for
from tests.netkit import auth, proxied_panel

CLICKER = blueprint(f'exec {sys.executable} -u {REPO / "tests" / "clicker_app.py"}', name='Clicker')
STREAM_TIMEOUT = 45_000  # ms: a loaded CI machine takes seconds to a first frame
MEMBERS = ('Xvfb', 'openbox', 'chromium', 'selkies')

# Reads the stream's pixels: the <video> (or a canvas the client draws on) drawn into a canvas.
FRAME_STATS = """
() => {
    const sources = [...document.querySelectorAll('video'), ...document.querySelectorAll('canvas')];
    for (const source of sources) {
        const width = source.videoWidth || source.width, height = source.videoHeight || source.height;
        if (!width || !height) continue;
        const canvas = document.createElement('canvas');
        canvas.width = 64; canvas.height = 36;
        const context = canvas.getContext('2d');
        try { context.drawImage(source, 0, 0, 64, 36); } catch (e) { continue; }
        const data = context.getImageData(0, 0, 64, 36).data;
        let lit = 0, sum = [0, 0, 0];
        for (let i = 0; i < data.length; i += 4) {
            if (data[i] + data[i + 1] + data[i + 2] > 30) lit += 1;
            sum[0] += data[i]; sum[1] += data[i + 1]; sum[2] += data[i + 2];
        }
        const pixels = data.length / 4;
        // more than half lit: a whole frame (the first one may arrive half decoded)
        const mean = sum.map(v => v / pixels);
        if (lit / pixels > 0.5) return {lit: lit / pixels, mean, tag: source.tagName, width, height};
    }
    return null;
}
"""


def x_display_left_behind(display: int, ours: set[int]) -> str | None:
    """What of display ``display`` our desktop left: its X lock or socket. Another test run on
    this machine may have taken the freed display at once: a lock a live process of someone
    else holds (and its socket) is theirs."""
    lock = Path(f'/tmp/.X{display}-lock')
    try:
        owner = int(lock.read_text().strip())
    except (OSError, ValueError):
        owner = None
    if owner is not None and owner not in ours and not gone(owner):
        return None
    for path in (lock, Path(f'/tmp/.X11-unix/X{display}')):
        if path.exists():
            return str(path)
    return None


def desktop_panel(data: Path, **env: str) -> Panel:
    panel = proxied_panel(data, **env)
    panel.put_blueprint('Clicker', CLICKER)
    return panel


def start_persistent(panel: Panel, name: str) -> dict[str, Any]:
    """Create and start a persistent Clicker instance; wait until its desktop is up."""
    instance = panel.create(name, blueprint='Clicker', persistent=True)
    assert panel.client.post(f'/instances/{instance["id"]}/start').status_code == 202
    panel.wait_status(instance['id'], 'started', timeout=30)
    return wait_desktop(panel, instance['id'])


def wait_desktop(panel: Panel, instance_id: int, timeout: float = 60) -> dict[str, Any]:
    def up() -> dict[str, Any] | None:
        current = panel.instance(instance_id)
        return current if current['persistent_display'] is not None else None

    return wait_for(up, timeout, 0.1, f'the desktop of instance {instance_id} to be up')


def desktop_processes(data: Path, instance_id: int) -> dict[str, int]:
    """The unit's members, by name, from its state file."""

    state = json.loads((data / 'desktops' / str(instance_id) / 'unit.json').read_text())
    return {member['name']: member['pid'] for member in state['members']}


def frame(page: Page) -> dict[str, Any]:
    """Waits for a non-blank frame of the stream (more than half of it lit); its stats."""
    handle = page.wait_for_function(f'() => ({FRAME_STATS})()', timeout=STREAM_TIMEOUT, polling=200)
    stats = handle.json_value()
    assert stats and stats['lit'] > 0.5, stats
    return dict(stats)


def logged_in(browser: Browser, panel: Panel) -> BrowserContext:
    """A browser context with a panel session (the login link works once)."""
    context = browser.new_context(viewport={'width': 1280, 'height': 720})
    context.new_page().goto(panel.login_link())
    return context


def open_desktop(context: BrowserContext, panel: Panel, slug: str) -> Page:
    page = context.new_page()
    page.goto(f'{panel.url}/desktop/{slug}/')
    return page


def app_state(panel: Panel, slug: str) -> dict[str, int]:
    return dict(httpx.get(f'{panel.url}/instance/{slug}/state', headers=auth(panel), timeout=5).json())


def click_center(page: Page) -> None:
    """A click in the middle of the viewer (the stream fills it)."""
    page.mouse.click(640, 360)


def log_text(panel: Panel, instance_id: int) -> str:
    """The instance's log of the current run, as the API pages it."""
    text, offset = '', 0
    while True:
        chunk = panel.client.get(f'/instances/{instance_id}/logs', params={'offset': offset}).json()
        if not chunk['text']:
            return text
        text, offset = text + chunk['text'], chunk['next_offset']


def wait_log(panel: Panel, instance_id: int, done: Callable[[str], bool], what: str) -> str:
    """The instance's log once ``done`` holds for it."""

    def ready() -> str | None:
        text = log_text(panel, instance_id)
        return text if done(text) else None

    return wait_for(ready, 20, 0.1, what)


def desktop_up_line(display: int) -> str:
    return f'[desktop] up on display :{display}, encoder '


def test_stream_click_and_teardown(browser: Browser, tmp_path: Path) -> None:
    """A persistent instance: the stream shows the app, a click reaches it; closing the viewer
    changes nothing; stopping leaves no process, socket or X lock."""
    data = tmp_path / 'data'
    panel = desktop_panel(data)
    try:
        instance = start_persistent(panel, 'clicky')
        assert instance['urls']['view'] == '/desktop/clicky/'
        display = instance['persistent_display']
        pids = desktop_processes(data, instance['id'])
        assert set(pids) == {'xvfb', 'openbox', 'chromium', 'selkies'}
        wait_for(lambda: app_state(panel, 'clicky')['loads'] >= 1, 30, 0.2, 'the kiosk to load the app')
        loads = app_state(panel, 'clicky')['loads']
        # The desktop's status is in the instance's log: the API's and the dashboard's Logs view.
        up_line = desktop_up_line(display)
        text = wait_log(panel, instance['id'], lambda t: up_line in t, 'the desktop in the log')
        assert 'encoder h264enc' in text or 'encoder x264' in text, text
        assert text.count('[desktop] up on display') == 1, text

        context = logged_in(browser, panel)
        dashboard = context.pages[0]
        dashboard.locator('button', has_text=re.compile('^article$')).first.click()
        expect(dashboard.locator('.xterm-rows')).to_contain_text(up_line.strip(), timeout=20000)
        dashboard.close()
        # A rename while the desktop runs is refused, like any running instance's (its stream's
        # subfolder follows the slug): the desktop is left as it was.
        renamed = panel.client.patch(f'/instances/{instance["id"]}', json={'name': 'other'})
        assert renamed.status_code == 409, renamed.text
        assert desktop_processes(data, instance['id']) == pids and all(not gone(pid) for pid in pids.values())
        # Selkies runs through the launcher that idles its key timers (selkies_quiet.py).
        assert 'selkies_quiet.py' in ' '.join(psutil.Process(pids['selkies']).cmdline())
        page = open_desktop(context, panel, 'clicky')
        try:
            before = frame(page)
            # The screen took the viewer's size: the stream is the window's, pixel for pixel.
            page.wait_for_function(f'() => ({FRAME_STATS})()?.width === 1280', timeout=STREAM_TIMEOUT, polling=200)
            assert (frame(page)['width'], frame(page)['height']) == (1280, 720)
            click_center(page)
            wait_for(lambda: app_state(panel, 'clicky')['clicks'] >= 1, 20, 0.1, 'the click to reach the app')
            # The remote page turned bright: the stream shows it.
            changed = f'() => {{ const s = ({FRAME_STATS})(); return s && s.mean[0] > {before["mean"][0]} + 80; }}'
            page.wait_for_function(changed, timeout=STREAM_TIMEOUT, polling=200)
        except BaseException:
            page.screenshot(path=str(tmp_path / 'desktop.png'))
            raise
        finally:
            page.close()
        # No viewer: the app and the desktop run on, with the same page state.
        assert all(not gone(pid) for pid in pids.values())
        page = open_desktop(context, panel, 'clicky')
        try:
            assert frame(page)['mean'][0] > before['mean'][0] + 80, 'the remote page lost its state'
        except BaseException:
            page.screenshot(path=str(tmp_path / 'desktop-again.png'))
            raise
        finally:
            page.close()
        context.close()
        assert app_state(panel, 'clicky')['loads'] == loads, 'the kiosk page was reloaded'

        assert panel.client.post(f'/instances/{instance["id"]}/stop').status_code == 202
        panel.wait_status(instance['id'], 'stopped', timeout=30)
        wait_for(lambda: all(gone(pid) for pid in pids.values()), 20, 0.1, 'the desktop processes to end')
        assert not (data / 'desktops' / str(instance['id']) / 'selkies.sock').exists()
        assert x_display_left_behind(display, set(pids.values())) is None
        assert panel.instance(instance['id'])['persistent_display'] is None
    finally:
        panel.stop()


def refused_as_nobody(sock: Path) -> bool:
    """True when another local user cannot connect to the Selkies socket."""
    code = 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])'
    result = subprocess.run(
        ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', sys.executable, '-c', code, str(sock)],
        capture_output=True,
        timeout=10,
    )
    return result.returncode != 0 and b'PermissionError' in result.stderr


def inet_listeners(pid: int) -> list[Any]:
    return [c for c in psutil.Process(pid).net_connections(kind='inet') if c.status == psutil.CONN_LISTEN]


def test_access_xvfb_death_and_panel_kill(browser: Browser, tmp_path: Path) -> None:
    """Without credentials the page and the websocket are refused and the socket is private; a
    killed Xvfb brings the four back (stream and input work again); a panel killed with SIGKILL
    is followed by one that re-adopts the desktop."""
    data = tmp_path / 'data'
    panel = desktop_panel(data, AIKORE_STOP_ON_EXIT='')
    second: Panel | None = None
    try:
        instance = start_persistent(panel, 'guarded')
        url = f'{panel.url}/desktop/guarded/'
        assert httpx.get(url, headers={'Accept': 'text/html'}).status_code == 302  # to the login page
        assert httpx.get(url).status_code == 401
        upgrade = {'Connection': 'Upgrade', 'Upgrade': 'websocket', 'Sec-WebSocket-Version': '13',
                   'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Origin': panel.url}  # fmt: skip
        assert httpx.get(url + 'api/websockets', headers=upgrade).status_code == 401
        assert httpx.get(url, headers=auth(panel)).status_code == 200
        sock = data / 'desktops' / str(instance['id']) / 'selkies.sock'
        assert (sock.parent.stat().st_mode & 0o777) == 0o700
        assert refused_as_nobody(sock)
        pids = desktop_processes(data, instance['id'])
        assert inet_listeners(pids['selkies']) == [], 'Selkies must not listen on TCP'

        os.kill(pids['xvfb'], signal.SIGKILL)
        wait_for(lambda: all(gone(pid) for pid in pids.values()), 20, 0.1, 'the other members to end with Xvfb')

        def restarted() -> dict[str, int] | None:
            try:
                now = desktop_processes(data, instance['id'])
            except (OSError, ValueError):
                return None
            return now if now['xvfb'] != pids['xvfb'] and panel.instance(instance['id'])['persistent_display'] else None

        pids = wait_for(restarted, 60, 0.1, 'the desktop to come back')
        # The instance's log says what happened to the desktop.
        text = wait_log(panel, instance['id'], lambda t: t.count('] up on') == 2, 'the restart in the log')
        assert re.search(r'\[desktop\] \w+ ended \(code -?\d+\); restarting the desktop in ', text), text
        context = logged_in(browser, panel)
        page = open_desktop(context, panel, 'guarded')
        try:
            frame(page)
            click_center(page)
            wait_for(lambda: app_state(panel, 'guarded')['clicks'] >= 1, 20, 0.1, 'the click to reach the app')
        finally:
            context.close()

        panel.kill()
        second = desktop_panel(data, AIKORE_API_TOKEN=panel.token, AIKORE_PORT_RANGE=panel.env['AIKORE_PORT_RANGE'])
        adopted = wait_desktop(second, instance['id'])
        assert adopted['status'] == 'started'
        assert desktop_processes(data, instance['id']) == pids, 'the desktop was started again, not re-adopted'
        assert all(not gone(pid) for pid in pids.values())
        assert httpx.get(f'{second.url}/desktop/guarded/', headers=auth(second)).status_code == 200
        assert second.client.post(f'/instances/{instance["id"]}/stop').status_code == 202
        second.wait_status(instance['id'], 'stopped', timeout=30)
        wait_for(lambda: all(gone(pid) for pid in pids.values()), 20, 0.1, 'the desktop processes to end')
    finally:
        if second is not None:
            second.stop()
        panel.stop()


def test_two_desktops_then_nothing_left(tmp_path: Path) -> None:
    """Two persistent instances at once: their own displays and sockets; stopping both leaves no
    Xvfb, openbox, Chromium, Selkies, socket or X lock."""
    data = tmp_path / 'data'
    panel = desktop_panel(data)
    try:
        first = start_persistent(panel, 'one')
        other = start_persistent(panel, 'two')
        assert first['persistent_display'] != other['persistent_display']
        members = {**{f'1{k}': v for k, v in desktop_processes(data, first['id']).items()},
                   **{f'2{k}': v for k, v in desktop_processes(data, other['id']).items()}}  # fmt: skip
        assert len(set(members.values())) == 8 and all(not gone(pid) for pid in members.values())
        for instance in (first, other):
            assert panel.client.post(f'/instances/{instance["id"]}/stop').status_code == 202
        for instance in (first, other):
            panel.wait_status(instance['id'], 'stopped', timeout=30)
        wait_for(lambda: all(gone(pid) for pid in members.values()), 20, 0.1, 'every desktop process to end')
        for instance in (first, other):
            folder = data / 'desktops' / str(instance['id'])
            assert not (folder / 'selkies.sock').exists() and not (folder / 'unit.json').exists()
            display = instance['persistent_display']
            assert x_display_left_behind(display, set(members.values())) is None
        ours = str(data / 'desktops')
        left = [p for p in psutil.process_iter(['cmdline']) if ours in ' '.join(p.info['cmdline'] or [])]
        assert left == [], left

        # Renamed while stopped: the next start streams under the new slug.
        assert panel.client.patch(f'/instances/{first["id"]}', json={'name': 'uno'}).status_code == 200
        assert panel.client.post(f'/instances/{first["id"]}/start').status_code == 202
        panel.wait_status(first['id'], 'started', timeout=30)
        wait_desktop(panel, first['id'])
        assert httpx.get(f'{panel.url}/desktop/uno/', headers=auth(panel)).status_code == 200
        assert httpx.get(f'{panel.url}/desktop/one/', headers=auth(panel)).status_code != 200
        wait_log(panel, first['id'], lambda t: 'streamed at /desktop/uno/' in t, 'the new slug in the log')
        assert panel.client.post(f'/instances/{first["id"]}/stop').status_code == 202
        panel.wait_status(first['id'], 'stopped', timeout=30)
    finally:
        panel.stop()


def test_selkies_is_taken_from_its_own_venv(tmp_path: Path) -> None:
    """AIKORE_SELKIES names Selkies' program in a venv of its own; its web client is found in that venv."""
    venv = tmp_path / 'selkies-venv'
    program = venv / 'bin' / 'selkies'
    program.parent.mkdir(parents=True)
    program.write_text('#!/bin/sh\n')
    program.chmod(0o755)
    settings = Settings.from_env({'AIKORE_DATA_DIR': str(tmp_path / 'data'), 'AIKORE_SELKIES': str(program)})
    with pytest.raises(desktop.DesktopError, match='selkies web client'):
        desktop.find_programs(settings)
    web = venv / 'lib' / 'python3.11' / 'site-packages' / 'selkies' / 'selkies_web'
    web.mkdir(parents=True)
    programs = desktop.find_programs(settings)
    assert (programs.selkies, programs.web_root) == (str(program), str(web))
