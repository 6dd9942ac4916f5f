"""Account controls (/api/account and the header's account menu) and the panel's cookies: a
session is bound to the origin it was issued for, is Secure over HTTPS, and the panel's cookies
never reach nor clobber an app's own."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from nicegui.testing.user import User

from app.services import core as core_module
from tests.helpers import REPO, Panel, blueprint, free_port
from tests.netkit import public_range, require_tools, wait_routable

COOKIE_BLUEPRINT = blueprint(f'exec {sys.executable} -u {REPO / "tests" / "cookie_app.py"}', name='Cookies')


def own_token(panel: Panel) -> Panel:
    """Start ``panel`` with no AIKORE_API_TOKEN (so the token may be replaced) and use the one
    it generated."""
    panel.env['AIKORE_API_TOKEN'] = ''
    panel.start()
    use_token(panel, json.loads((panel.data_dir / 'secrets.json').read_text())['api_token'])
    return panel


def use_token(panel: Panel, token: str) -> None:
    panel.token = token
    panel.client.headers['Authorization'] = f'Bearer {token}'


def logged_in(panel: Panel, password: str, host: str | None = None, **headers: str) -> str:
    """A new session cookie from the login form (for ``host``, by default the panel's own)."""
    sent = {'Host': host, **headers} if host else headers
    answer = httpx.post(f'{panel.url}/login', data={'password': password}, headers=sent, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return str(answer.cookies['aikore_session'])


def api_status(panel: Panel, cookie: str, path: str = '/api/instances', host: str | None = None) -> int:
    headers = {'Host': host} if host else {}
    return httpx.get(f'{panel.url}{path}', cookies={'aikore_session': cookie}, headers=headers).status_code


@pytest.fixture(scope='module')
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    """A panel without nginx whose password and token are its own (not the environment's)."""
    panel = own_token(Panel(tmp_path_factory.mktemp('account') / 'data', AIKORE_NGINX='off'))
    try:
        yield panel
    finally:
        panel.stop()


def same_origin(panel: Panel) -> dict[str, str]:
    """What a browser adds to a change made from the panel's own page."""
    return {'Origin': panel.url}


def test_change_password(plain: Panel) -> None:
    old = plain.password()
    mine, other = logged_in(plain, old), logged_in(plain, old)
    change = f'{plain.url}/api/account/password'
    cookies = {'aikore_session': mine}
    short = httpx.put(change, json={'current': old, 'new': 'short'}, cookies=cookies, headers=same_origin(plain))
    assert short.status_code == 422 and short.json()['detail'] == 'The new password must be 8 to 1024 characters long'
    wrong = httpx.put(
        change, json={'current': 'not it', 'new': 'long enough'}, cookies=cookies, headers=same_origin(plain)
    )
    assert wrong.status_code == 403 and 'current password is wrong' in wrong.json()['detail']
    assert httpx.put(change, json={'current': old}, cookies=cookies, headers=same_origin(plain)).status_code == 422
    assert api_status(plain, other) == 200, 'refused changes end no session'
    assert (
        httpx.put(
            change, json={'current': old, 'new': 'correct horse'}, cookies=cookies, headers=same_origin(plain)
        ).status_code
        == 204
    )
    assert api_status(plain, mine) == 200, "the caller's own session stays"
    assert api_status(plain, other) == 401, 'every other session ends at once'
    assert httpx.post(f'{plain.url}/login', data={'password': old}).status_code == 401
    logged_in(plain, 'correct horse')
    secrets = plain.data_dir / 'secrets.json'
    assert 'correct horse' not in secrets.read_text() and stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert json.loads(secrets.read_text())['api_token'] == plain.token, 'the token is kept'
    # Back, for the other tests (with the API token: then every session ends).
    back = plain.client.put('/account/password', json={'current': 'correct horse', 'new': f'{old}'})
    assert back.status_code == 204 and api_status(plain, mine) == 401


def test_logout_other_sessions(plain: Panel) -> None:
    mine, others = logged_in(plain, plain.password()), [logged_in(plain, plain.password()) for _ in range(2)]
    answer = httpx.post(
        f'{plain.url}/api/account/logout-others', cookies={'aikore_session': mine}, headers=same_origin(plain)
    )
    assert answer.status_code == 200 and answer.json()['closed'] >= 2
    assert api_status(plain, mine) == 200
    assert [api_status(plain, cookie) for cookie in others] == [401, 401]
    assert httpx.get(f'{plain.url}/', cookies={'aikore_session': others[0]}, follow_redirects=False).status_code == 303


def test_rotate_token(plain: Panel) -> None:
    old = plain.token
    answer = plain.client.post('/account/token')
    assert answer.status_code == 200
    new = answer.json()['token']
    assert new != old and len(new) >= 32
    assert plain.client.get('/instances').status_code == 401, 'the old token stops at once'
    assert httpx.get(f'{plain.url}/api/instances?token={old}').status_code == 401
    use_token(plain, new)
    assert plain.client.get('/instances').status_code == 200
    assert json.loads((plain.data_dir / 'secrets.json').read_text())['api_token'] == new
    assert new not in plain.log_text(), 'the token is answered once, never logged'


def test_values_from_the_environment_are_not_changed(tmp_path: Path) -> None:
    panel = Panel(tmp_path / 'data', AIKORE_NGINX='off', AIKORE_PASSWORD='from the env').start()
    try:
        token = panel.client.post('/account/token')
        assert token.status_code == 409 and 'AIKORE_API_TOKEN' in token.json()['detail']
        password = panel.client.put('/account/password', json={'current': 'from the env', 'new': 'something new'})
        assert password.status_code == 409 and 'AIKORE_PASSWORD' in password.json()['detail']
        assert panel.client.get('/instances').status_code == 200
        logged_in(panel, 'from the env')
    finally:
        panel.stop()


def test_a_session_works_only_on_the_origin_it_was_issued_for(plain: Panel) -> None:
    """Cookies ignore ports: an activated instance's public port receives the panel's cookie.
    Replayed against the panel under another Host, it is refused."""
    cookie = logged_in(plain, plain.password())
    assert api_status(plain, cookie) == 200 and api_status(plain, cookie, '/') == 200
    for host in (f'127.0.0.1:{free_port()}', f'localhost:{plain.port}', 'evil.example'):
        assert api_status(plain, cookie, host=host) == 401, host
        page = httpx.get(f'{plain.url}/', cookies={'aikore_session': cookie}, headers={'Host': host})
        assert page.status_code == 303 and page.headers['location'].startswith('/login'), host
    other_port = f'127.0.0.1:{free_port()}'
    there = logged_in(plain, plain.password(), host=other_port)  # issued for that origin: valid only there
    assert api_status(plain, there, host=other_port) == 200 and api_status(plain, there) == 401


def test_cookies_are_secure_over_https(plain: Panel) -> None:
    answer = httpx.post(
        f'{plain.url}/login',
        data={'password': plain.password()},
        headers={'X-Forwarded-Proto': 'https'},
        follow_redirects=False,
    )
    set_cookie = answer.headers['set-cookie'].lower()
    assert answer.status_code == 303 and '; secure' in set_cookie and 'httponly' in set_cookie
    plain_http = httpx.post(f'{plain.url}/login', data={'password': plain.password()}, follow_redirects=False)
    assert 'secure' not in plain_http.headers['set-cookie'].lower()
    assert not [name for name in plain_http.cookies if name == 'session'], "no cookie has NiceGUI's default name"


# -- behind the panel's own nginx -------------------------------------------------------


@pytest.fixture(scope='module')
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    require_tools()
    data = tmp_path_factory.mktemp('account-net') / 'data'
    panel = Panel(data, AIKORE_NGINX='managed', AIKORE_STOP_ON_EXIT='1', AIKORE_PORT_RANGE=public_range())
    try:
        own_token(panel)
        panel.put_blueprint('Cookies', COOKIE_BLUEPRINT)
        yield panel
    finally:
        panel.stop()


def test_apps_keep_their_cookies_and_never_see_the_panels(proxied: Panel) -> None:
    instance = proxied.create('jar', blueprint='Cookies')
    assert proxied.client.post(f'/instances/{instance["id"]}/start').status_code == 202
    wait_routable(proxied, instance['id'])
    url = f'{proxied.url}/instance/jar'
    own_origin = {'Host': f'jar.localhost:{proxied.port}'}  # an app's pages are served on its own origin
    # A browser page load with ?token=: the panel adds its session cookie, the app sets its own.
    first = httpx.get(f'{url}/set?token={proxied.token}', headers={'Accept': 'text/html', **own_origin})
    assert first.status_code == 200, first.text
    names = sorted(value.split('=', 1)[0] for value in first.headers.get_list('set-cookie'))
    assert names == ['aikore_session', 'session'], first.headers.get_list('set-cookie')
    assert first.cookies['session'] == 'app-own'
    panel_cookie = first.cookies['aikore_session']
    # A browser sends everything it holds for the host; the app gets only its own cookie.
    sent = {'aikore_session': panel_cookie, 'session': 'app-own', 'aikore_storage': 'x', 'my_aikore_session': 'y'}
    seen = httpx.get(f'{url}/read', cookies=sent, headers=own_origin)
    assert seen.status_code == 200
    received = sorted(part.strip() for part in seen.json()['cookie'].split(';'))
    assert received == ['my_aikore_session=y', 'session=app-own'], received
    assert 'set-cookie' not in seen.headers, 'a page load with a session sets no cookie'


def test_rotating_the_token_re_renders_the_proxy(proxied: Panel) -> None:
    instance = proxied.create('rot', blueprint='Cookies')
    assert proxied.client.post(f'/instances/{instance["id"]}/start').status_code == 202
    wait_routable(proxied, instance['id'])
    url = f'{proxied.url}/instance/rot/read'
    old = proxied.token
    assert httpx.get(url, headers={'Authorization': f'Bearer {old}'}).status_code == 200
    answer = proxied.client.post('/account/token')
    assert answer.status_code == 200
    new = answer.json()['token']
    use_token(proxied, new)
    assert httpx.get(url, headers={'Authorization': f'Bearer {old}'}).status_code == 401, 'old token stops at once'
    passed = httpx.get(url, headers={'Authorization': f'Bearer {new}'})
    assert passed.status_code == 200 and passed.json()['cookie'] == ''
    config = (proxied.data_dir / 'nginx' / 'nginx.conf').read_text()
    assert new in config and old not in config


def test_a_subdomain_session_reaches_only_its_instance(proxied: Panel) -> None:
    """The hand-off gives <slug>.<host> a session of its own: it passes nginx's auth_request for
    that host and nothing else (not the panel's API or pages, not another instance)."""
    for name in ('sub', 'other'):
        instance = proxied.create(name, blueprint='Cookies', access_pattern='subdomain')
        assert proxied.client.post(f'/instances/{instance["id"]}/start').status_code == 202
        wait_routable(proxied, instance['id'])
    panel_host, sub_host = f'localhost:{proxied.port}', f'sub.localhost:{proxied.port}'
    wanted = f'http://{sub_host}/read'
    panel_cookie = logged_in(proxied, proxied.password(), host=panel_host)
    go = httpx.get(
        f'{proxied.url}/login', params={'next': wanted}, headers={'Host': panel_host},
        cookies={'aikore_session': panel_cookie}, follow_redirects=False,
    )  # fmt: skip
    handoff = go.headers['location'].split(sub_host, 1)[1]
    assert httpx.get(f'{proxied.url}{handoff}', headers={'Host': panel_host}).status_code == 401, (
        'a hand-off token works only on the host it was made for'
    )
    go = httpx.get(
        f'{proxied.url}/login', params={'next': wanted}, headers={'Host': panel_host},
        cookies={'aikore_session': panel_cookie}, follow_redirects=False,
    )  # fmt: skip
    arrived = httpx.get(f'{proxied.url}{go.headers["location"].split(sub_host, 1)[1]}', headers={'Host': sub_host})
    assert arrived.status_code == 303
    sub_cookie = arrived.cookies['aikore_session']
    through = httpx.get(f'{proxied.url}/read', headers={'Host': sub_host}, cookies={'aikore_session': sub_cookie})
    assert through.status_code == 200 and 'aikore' not in through.json()['cookie']
    other = {'Host': f'other.localhost:{proxied.port}'}
    assert httpx.get(f'{proxied.url}/read', headers=other, cookies={'aikore_session': sub_cookie}).status_code == 401
    # The panel itself, directly on its loopback port, under either Host: refused.
    direct = f'http://{proxied.client.get("/network").json()["panel"]}'
    for host in (sub_host, panel_host):
        api = httpx.get(f'{direct}/api/instances', headers={'Host': host}, cookies={'aikore_session': sub_cookie})
        assert api.status_code == 401, host
        page = httpx.get(f'{direct}/', headers={'Host': host}, cookies={'aikore_session': sub_cookie})
        assert page.status_code == 303, host
    assert api_status(proxied, panel_cookie, host=panel_host) == 200


# -- the account menu (NiceGUI's user simulation) ----------------------------------------


async def test_account_menu_changes_the_password(ui_user: User) -> None:
    sessions = core_module.current().sessions
    password = sessions.generated_password
    assert password
    other = sessions.open('test')
    await ui_user.open('/')
    ui_user.find(marker='account-menu').click()
    ui_user.find(marker='account-password').click()
    await ui_user.should_see(marker='password-current', retries=50)
    ui_user.find(marker='password-current').type(password)
    ui_user.find(marker='password-new').type('a new password')
    ui_user.find(marker='password-again').type('a new password')
    ui_user.find(marker='password-save').click()
    await ui_user.should_see('Password changed; 1 other session(s) logged out', retries=50)
    assert sessions.password_matches('a new password') and not sessions.valid(other, 'test')


async def test_account_menu_token_from_the_environment(ui_user: User) -> None:
    await ui_user.open('/')
    ui_user.find(marker='account-menu').click()
    ui_user.find(marker='account-token').click()
    await ui_user.should_see(marker='token-rotate', retries=50)
    ui_user.find(marker='token-rotate').click()
    await ui_user.should_see('The API token is set by AIKORE_API_TOKEN', retries=50)
    assert core_module.current().api_token == 'ui-test-token'
