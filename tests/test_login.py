"""People log in: the printed one-time link, the password, throttling, logout, and the gate
in front of every page and websocket."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import Panel


def browser(panel: Panel) -> httpx.Client:
    return httpx.Client(base_url=panel.url, timeout=15)


def test_pages_need_a_session(panel: Panel) -> None:
    with browser(panel) as client:
        response = client.get('/', follow_redirects=False)
        assert response.status_code == 303 and response.headers['location'] == '/login?next=/'
        assert client.get('/blueprints?x=1', follow_redirects=False).headers['location'] == (
            '/login?next=/blueprints%3Fx%3D1'
        )
        page = client.get('/login')
        assert page.status_code == 200 and 'type="password"' in page.text
        assert client.post('/_nicegui/client/whatever', follow_redirects=False).status_code == 401
        assert client.get('/api/health').status_code == 200


def test_one_time_link_logs_in_once(panel: Panel) -> None:
    link = panel.login_link()
    with browser(panel) as client:
        response = client.get(link, follow_redirects=False)
        assert response.status_code == 303 and response.headers['location'] == '/'
        cookie = response.cookies['aikore_session']
        assert 'httponly' in response.headers['set-cookie'].lower()
        assert client.get('/').status_code == 200
        assert client.get('/api/instances').status_code == 200  # a browser session may call the API
    with browser(panel) as other:
        again = other.get(link, follow_redirects=False)
        assert again.status_code == 401 and 'used already or has expired' in again.text
    with browser(panel) as client:
        client.cookies.set('aikore_session', cookie[:-2] + 'xx')  # forged signature
        assert client.get('/', follow_redirects=False).status_code == 303


def test_password_login_throttling_and_logout(panel: Panel) -> None:
    password = panel.password()
    secrets = panel.data_dir / 'secrets.json'
    assert password not in secrets.read_text() and 'scrypt$' in secrets.read_text()
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    with browser(panel) as client:
        wrong = client.post('/login', data={'password': 'nope', 'next': '/'})
        assert wrong.status_code == 401 and 'Wrong password' in wrong.text
        ok = client.post('/login', data={'password': password, 'next': '/blueprints'}, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers['location'] == '/blueprints'
        evil = client.post('/login', data={'password': password, 'next': '//evil.example'}, follow_redirects=False)
        assert evil.headers['location'] == '/'  # never an open redirect
        assert client.get('/').status_code == 200
        client.get('/logout')
    with browser(panel) as attacker:
        statuses = [attacker.post('/login', data={'password': f'guess{i}'}).status_code for i in range(7)]
        assert statuses[:5] == [401] * 5 and statuses[-1] == 429
        locked = attacker.post('/login', data={'password': password})
        assert locked.status_code == 429 and 'try again in' in locked.text


def test_logout_revokes_the_session(panel: Panel) -> None:
    link = panel.login_link()
    with browser(panel) as client:
        cookie = client.get(link, follow_redirects=False).cookies['aikore_session']
        client.cookies.set('aikore_session', cookie)
        assert client.get('/logout', follow_redirects=False).headers['location'] == '/login'
    with browser(panel) as replay:  # the old cookie is worthless now
        replay.cookies.set('aikore_session', cookie)
        assert replay.get('/', follow_redirects=False).status_code == 303
        assert replay.get('/api/instances').status_code == 401


def test_websocket_needs_a_session_and_the_same_origin(panel: Panel) -> None:
    link = panel.login_link()
    with browser(panel) as client:
        cookie = client.get(link, follow_redirects=False).cookies['aikore_session']
    url = f'ws://127.0.0.1:{panel.port}/_nicegui_ws/socket.io/?EIO=4&transport=websocket'
    with pytest.raises(InvalidStatus):
        connect(url, open_timeout=5).close()
    with pytest.raises(InvalidStatus):
        connect(
            url,
            open_timeout=5,
            additional_headers={'Cookie': f'aikore_session={cookie}'},
            origin='http://evil.example',  # type: ignore[arg-type]
        ).close()
    with connect(
        url,
        open_timeout=5,
        additional_headers={'Cookie': f'aikore_session={cookie}'},
        origin=f'http://127.0.0.1:{panel.port}',  # type: ignore[arg-type]
    ) as socket:
        assert socket.recv(timeout=5).startswith('0')  # engine.io "open" packet


def test_configured_password(tmp_path: Path) -> None:
    panel = Panel(tmp_path / 'data', AIKORE_PASSWORD='correct horse').start()
    try:
        assert 'Login password generated' not in panel.log_text()
        with browser(panel) as client:
            assert client.post('/login', data={'password': 'correct horse'}).status_code == 303
            assert client.get('/api/instances').status_code == 200
    finally:
        panel.stop()
