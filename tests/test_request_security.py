"""Requests the panel must not believe or act on (issue 11 items 2, 5, 7, 8, 13): cookie changes
from another origin, form bodies on JSON routes, socket.io long-polling from another origin, a
client's own X-Real-IP, control characters in the log and in the Logs view, and `aikore token`
without a token to show."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.services.consoles.log_stream import HistoryGuard, LogStreams, LogText, without_history_erasers
from tests.helpers import REPO, Panel, wait_until

pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning')


@pytest.fixture(scope='module')
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Panel, str]]:
    """A panel behind its nginx, and a logged-in session cookie for it."""
    panel = Panel(tmp_path_factory.mktemp('secured') / 'data', AIKORE_STOP_ON_EXIT='1').start()
    try:
        with httpx.Client(base_url=panel.url) as client:
            cookie = client.get(panel.login_link(), follow_redirects=False).cookies['aikore_session']
        yield panel, cookie
    finally:
        panel.stop()


def cookie_client(panel: Panel, cookie: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=panel.url, cookies={'aikore_session': cookie}, headers=headers, timeout=15)


# ---------------------------------------------------------------- item 2: request forgery


def test_cookie_changes_need_the_panels_own_origin(secured: tuple[Panel, str]) -> None:
    panel, cookie = secured
    own = f'http://127.0.0.1:{panel.port}'
    body = {'name': 'forged', 'blueprint': 'Demo'}
    for headers in ({}, {'Origin': 'http://127.0.0.1:1'}, {'Origin': 'null'}, {'Sec-Fetch-Site': 'same-site'}):
        with cookie_client(panel, cookie, **headers) as client:
            refused = client.post('/api/instances', json=body)
            assert refused.status_code == 403, (headers, refused.text)
            assert "panel's own page" in refused.json()['detail']
            assert client.get('/api/instances').status_code == 200  # reading is not a change
    assert all(item['name'] != 'forged' for item in panel.client.get('/instances').json())
    with cookie_client(panel, cookie, Origin=own) as client:
        made = client.post('/api/instances', json={'name': 'own-origin', 'blueprint': 'Demo'})
        assert made.status_code == 201, made.text
        assert client.delete(f'/api/instances/{made.json()["id"]}').status_code in {200, 204}
    with cookie_client(panel, cookie, **{'Sec-Fetch-Site': 'same-origin'}) as client:
        assert client.put('/api/system/interval', json={'interval': 1.0}).status_code == 200
    # The API token is never sent by a browser on its own: no Origin needed.
    assert panel.client.put('/system/interval', json={'interval': 1.0}).status_code == 200


def test_form_bodies_on_json_routes_are_415(secured: tuple[Panel, str]) -> None:
    panel, cookie = secured
    for content_type in ('application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain'):
        answer = panel.client.post(
            '/instances', content=b'{"name": "formed", "blueprint": "Demo"}', headers={'Content-Type': content_type}
        )
        assert answer.status_code == 415, (content_type, answer.text)
        assert 'JSON' in answer.json()['detail']
    with cookie_client(panel, cookie, Origin=f'http://127.0.0.1:{panel.port}') as client:
        form = client.post('/api/system/interval', data={'interval': '1'})
        assert form.status_code in {405, 415}, form.text
        assert client.put('/api/system/interval', data={'interval': '1'}).status_code == 415
    # Text routes keep taking text, and JSON routes JSON (also "+json").
    assert panel.client.put('/blueprints/TextBody', content=b'#!/bin/bash\necho hi\n').status_code in {201, 204}
    typed = {'Content-Type': 'text/plain'}
    assert panel.client.put('/blueprints/TextBody', content=b'#!/bin/bash\n', headers=typed).status_code == 204
    vendor = {'Content-Type': 'application/vnd.x+json'}
    assert panel.client.put('/system/interval', content=b'{"interval": 1.0}', headers=vendor).status_code == 200


def test_logout_post_from_another_origin_is_refused(secured: tuple[Panel, str]) -> None:
    panel, cookie = secured
    with cookie_client(panel, cookie, Origin='http://127.0.0.1:1') as client:
        assert client.post('/logout', follow_redirects=False).status_code == 403
    with cookie_client(panel, cookie, **{'Sec-Fetch-Site': 'same-site'}) as client:
        assert client.get('/logout', follow_redirects=False).status_code == 403
    with cookie_client(panel, cookie) as client:
        assert client.post('/logout', follow_redirects=False).status_code == 403  # no proof of origin
        assert client.get('/', follow_redirects=False).status_code == 200, 'the session must still be valid'


# ---------------------------------------------------------------- item 5: socket.io long-polling


def test_socketio_polling_from_another_origin_is_refused(secured: tuple[Panel, str]) -> None:
    panel, cookie = secured
    path = '/_nicegui_ws/socket.io/?EIO=4&transport=polling'
    with cookie_client(panel, cookie, Origin='http://127.0.0.1:1') as client:
        foreign = client.get(path)
        assert foreign.status_code == 403, foreign.text
        assert 'access-control-allow-origin' not in foreign.headers
        assert client.post(path + '&sid=x', content=b'40').status_code == 403
    with cookie_client(panel, cookie, Origin=f'http://127.0.0.1:{panel.port}') as client:
        own = client.get(path)
        assert own.status_code == 200 and own.text.startswith('0{'), own.text


# ---------------------------------------------------------------- item 7: X-Real-IP


def panel_port(panel: Panel) -> int:
    """The loopback port the panel itself listens on behind nginx."""
    return int(panel.client.get('/network').json()['panel'].rpartition(':')[2])


def login_statuses(base: str, count: int, rotate: bool, source: str = '127.0.0.1') -> list[int]:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=base, timeout=15, transport=transport) as client:
        return [
            client.post(
                '/login', data={'password': f'guess{i}'}, headers={'X-Real-IP': f'10.0.0.{i}'} if rotate else {}
            ).status_code
            for i in range(count)
        ]


def test_x_real_ip_is_believed_only_from_the_panels_nginx(tmp_path: Path) -> None:
    panel = Panel(tmp_path / 'data', AIKORE_STOP_ON_EXIT='1', AIKORE_NGINX='managed').start()
    try:
        check_x_real_ip(panel)
    finally:
        panel.stop()


def check_x_real_ip(panel: Panel) -> None:
    direct = f'http://127.0.0.1:{panel_port(panel)}'
    assert direct != panel.url
    statuses = login_statuses(direct, 7, rotate=True)
    assert statuses[:5] == [401] * 5 and statuses[-1] == 429, statuses
    # Through nginx the client's real address is the key: another loopback address is not locked ...
    other = login_statuses(panel.url, 7, rotate=True, source='127.0.0.2')
    assert other[:5] == [401] * 5 and other[-1] == 429, other
    # ... and 127.0.0.1 (locked directly above) is the one nginx reports for a client of 127.0.0.1.
    assert login_statuses(panel.url, 1, rotate=True) == [429]


# ---------------------------------------------------------------- item 8: control characters


def test_control_characters_of_a_request_are_escaped_in_the_log(panel: Panel) -> None:
    bearer = {'Authorization': f'Bearer {panel.token}'}
    assert httpx.get(f'{panel.url}/%1b%5b31mred%0d%0aFAKE%20ERROR', headers=bearer).status_code == 404
    logged = [line for line in panel.log_text().splitlines() if 'red' in line and 'not found' in line]
    assert logged, panel.log_text()
    text = panel.log_text()
    assert '\x1b' not in text and '\r' not in text
    assert '\\x1b[31mred\\r\\nFAKE ERROR' in text
    assert not any(line.startswith('FAKE ERROR') for line in text.splitlines())


def test_history_erasers_never_reach_the_logs_view() -> None:
    guard = HistoryGuard()
    kept = 'a\x1b[31mred\x1b[0m 10%\r 20%\r\n'
    assert guard.feed(kept) == kept  # colours and progress bars stay
    assert guard.feed('x\x1bcy\x1b[3Jz\x1b[2J\x1b[?1049hw\x1b[?1049l') == 'xyz\x1b[2Jw'
    assert guard.feed('cut\x1b') == 'cut' and guard.feed('cafter') == 'after'  # ESC c split across chunks
    assert guard.feed('p\x1b[') == 'p' and guard.feed('3Jq') == 'q'
    assert guard.feed('\x9b3J\x1b[?25l') == '\x1b[?25l'  # C1 CSI too; cursor modes stay
    assert without_history_erasers('old\x1bcnew') == 'oldnew'


async def test_log_stream_sends_no_history_erasers(tmp_path: Path) -> None:
    log = tmp_path / 'output.log'
    log.write_text('before\x1bc\n')
    streams = LogStreams()
    received: list[LogText] = []
    replay, stop = await streams.follow(log, received.append)
    try:
        assert replay == 'before\n'
        with log.open('a') as handle:
            handle.write('live\x1bc \x1b[3J\x1b[32mgreen\x1b[0m 50%\r')
        await wait_until(lambda: ''.join(item.text for item in received).endswith('50%\r'), 5, what='the live text')
        assert ''.join(item.text for item in received) == 'live \x1b[32mgreen\x1b[0m 50%\r'
    finally:
        stop()
        streams.shutdown()


# ---------------------------------------------------------------- item 13: aikore token


def aikore_token(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith('AIKORE_')}
    env['AIKORE_DATA_DIR'] = str(data_dir)
    command = [sys.executable, '-c', 'from app.main import main; main(["token"])']
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_aikore_token_never_makes_up_a_token(tmp_path: Path) -> None:
    data = tmp_path / 'elsewhere'
    refused = aikore_token(data)
    assert refused.returncode != 0 and refused.stdout == ''
    assert str(data) in refused.stderr and 'AIKORE_DATA_DIR' in refused.stderr, refused.stderr
    assert not (data / 'secrets.json').exists(), 'a token was created'
    data.mkdir()
    (data / 'secrets.json').write_text('{"api_token": "kept-token"}')
    shown = aikore_token(data)
    assert shown.returncode == 0 and shown.stdout.strip() == 'kept-token', shown.stderr
