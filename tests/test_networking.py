"""Networking through the API with real nginx and socat (DESIGN "Networking", API.md
activate/deactivate and ``urls``): the seed's protocol 6.1 steps 2-5, path and subdomain
routing, websockets, auth at the proxy, takeover and foreign listeners.

One panel in the managed mode serves the whole module; each test uses its own instance
names and public ports.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import socket
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from websockets.sync.client import connect

from tests.helpers import Panel, wait_for
from tests.netkit import (
    ECHO_BLUEPRINT,
    auth,
    call,
    echo,
    echo_name,
    proxied_panel,
    public_ports,
    refused,
    started,
    wait_routable,
    wait_routed,
)


@pytest.fixture(scope='module')
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    panel = proxied_panel(tmp_path_factory.mktemp('net') / 'data')
    try:
        yield panel
    finally:
        panel.stop()


def test_seed_protocol_dynamic_ports(net: Panel) -> None:
    """6.1 step 2-5: public port, start, activate, Open, deactivate, conflict, takeover, pattern switch."""
    port = public_ports(net)[0]
    # 2. Instance creation with a public port
    first = net.create('first', blueprint='Echo', public_port=port)
    assert first['public_port'] == port and first['active'] is False
    # 3. Lifecycle and activation: Activate is possible once started
    assert call(net, 'POST', f'/instances/{first["id"]}/activate', 409)['detail'].startswith("Start 'first'")
    net.client.post(f'/instances/{first["id"]}/start')
    first = wait_routable(net, first['id'])
    assert first['urls'] == {'open': None, 'view': '/instance/first/'}  # port pattern, not mapped yet
    first = call(net, 'POST', f'/instances/{first["id"]}/activate')
    assert first['active'] is True
    assert first['urls']['open'] == f'http://127.0.0.1:{port}/'
    assert echo_name(first['urls']['open']) == 'first'  # Open
    view = f'{net.url}{first["urls"]["view"]}'
    assert echo_name(view, headers=auth(net)) == 'first'  # View: same-origin path URL
    first = call(net, 'POST', f'/instances/{first["id"]}/deactivate')
    assert first['active'] is False and first['urls']['open'] is None
    assert refused(port), 'the Open URL still answers after Deactivate'
    assert call(net, 'POST', f'/instances/{first["id"]}/deactivate')['active'] is False  # idempotent

    # 4. Port conflict: a second instance on the same public port
    second = started(net, 'second', public_port=port)
    assert call(net, 'POST', f'/instances/{first["id"]}/activate')['active'] is True
    conflict = net.client.post(f'/instances/{second["id"]}/activate')
    assert conflict.status_code == 409
    assert conflict.json()['holder'] == {'id': first['id'], 'name': 'first'}
    assert 'first' in conflict.json()['detail'] and str(port) in conflict.json()['detail']
    assert net.instance(first['id'])['active'] is True  # "Cancel": nothing changed
    assert echo_name(f'http://127.0.0.1:{port}/') == 'first'
    second = call(net, 'POST', f'/instances/{second["id"]}/activate', force='true')  # "OK"
    assert second['active'] is True and net.instance(first['id'])['active'] is False
    assert second['urls']['open'] == f'http://127.0.0.1:{port}/'
    assert echo_name(second['urls']['open']) == 'second'

    # 5. Access pattern switching changes the Open URL at once, and back
    host = {'Host': f'localhost:{net.port}'}
    patched = net.client.patch(f'/instances/{second["id"]}', json={'access_pattern': 'subdomain'}, headers=host)
    assert patched.json()['urls']['open'] == f'http://second.localhost:{net.port}/'
    assert echo_name(f'{net.url}/', headers={**auth(net), 'Host': f'second.localhost:{net.port}'}) == 'second'
    patched = net.client.patch(f'/instances/{second["id"]}', json={'access_pattern': 'path'}, headers=host)
    assert patched.json()['urls']['open'] == f'http://localhost:{net.port}/instance/second/'
    patched = net.client.patch(f'/instances/{second["id"]}', json={'access_pattern': 'port'}, headers=host)
    assert patched.json()['urls']['open'] == f'http://localhost:{port}/'
    assert (
        net.client.get(f'/instances/{second["id"]}', headers=host).json()['urls']['open'] == f'http://localhost:{port}/'
    )


def test_path_and_subdomain_routing(net: Panel) -> None:
    alpha, beta = started(net, 'alpha'), started(net, 'Beta')
    for name, slug in (('alpha', 'alpha'), ('Beta', 'beta')):
        wait_routed(f'{net.url}/instance/{slug}/', name, headers=auth(net))
        seen = echo(f'{net.url}/instance/{slug}/deep/page?q=1', headers=auth(net))
        assert seen['path'] == f'/instance/{slug}/deep/page?q=1'  # the full path: SUBFOLDER-aware apps work
        assert seen['headers']['X-Forwarded-Prefix'] == f'/instance/{slug}'
        assert seen['headers']['Host'] == f'127.0.0.1:{net.port}'
        by_host = echo(f'{net.url}/x', headers={**auth(net), 'Host': f'{slug}.example.test:{net.port}'})
        assert by_host['name'] == name and by_host['path'] == '/x'
    # The instances never see the panel's session cookie or API token; other cookies and credentials pass.
    cookies = {'Cookie': 'theme=dark; aikore_session=secret.value; lang=en'}
    seen = echo(f'{net.url}/instance/alpha/', headers={**auth(net), **cookies})
    assert 'aikore_session' not in seen['headers'].get('Cookie', '')
    assert 'theme=dark' in seen['headers']['Cookie'] and 'lang=en' in seen['headers']['Cookie']
    assert 'Authorization' not in seen['headers'], 'the API token reached the instance'
    # An app's own credentials pass (here with the panel's token in the query).
    own = echo(f'{net.url}/instance/alpha/?token={net.token}', headers={'Authorization': 'Basic YXBwOmFwcA=='})
    assert own['headers']['Authorization'] == 'Basic YXBwOmFwcA=='

    redirect = httpx.get(f'{net.url}/instance/alpha?a=1', headers=auth(net))
    assert redirect.status_code == 301 and redirect.headers['location'] == '/instance/alpha/?a=1'
    assert httpx.get(f'{net.url}/instance/nobody/', headers=auth(net)).status_code == 404
    # An unknown subdomain or a bare IP host is the panel itself.
    assert httpx.get(f'{net.url}/api/health', headers={'Host': f'nobody.example.test:{net.port}'}).status_code == 200

    net.client.post(f'/instances/{beta["id"]}/stop')
    net.wait_status(beta['id'], 'stopped')
    wait_for(lambda: httpx.get(f'{net.url}/instance/beta/', headers=auth(net)).status_code == 503, 10)
    assert 'not running' in httpx.get(f'{net.url}/instance/beta/', headers=auth(net)).text
    assert httpx.get(f'{net.url}/', headers={**auth(net), 'Host': 'beta.example.test'}).status_code == 503
    assert echo_name(f'{net.url}/instance/alpha/', headers=auth(net)) == 'alpha'
    assert net.instance(alpha['id'])['urls'] == {'open': None, 'view': '/instance/alpha/'}


def test_websocket_echo_through_path_and_subdomain(net: Panel) -> None:
    started(net, 'wsecho')
    wait_routed(f'{net.url}/instance/wsecho/', 'wsecho', headers=auth(net))
    with connect(f'ws://127.0.0.1:{net.port}/instance/wsecho/ws', additional_headers=auth(net)) as ws:
        for message in ('hello', 'x' * 100_000):
            ws.send(message)
            assert ws.recv(timeout=5) == f'wsecho: {message}'
    url = f'ws://wsecho.localhost:{net.port}/socket?token={net.token}'
    with connect(url, sock=socket.create_connection(('127.0.0.1', net.port))) as ws:
        ws.send('via subdomain')
        assert ws.recv(timeout=5) == 'wsecho: via subdomain'


def test_panel_itself_through_the_proxy(net: Panel) -> None:
    status = call(net, 'GET', '/network')
    assert status['nginx'] == 'managed' and status['proxy']['running'] is True and status['socat'] is True
    assert status['panel'] != f'127.0.0.1:{net.port}'  # the panel listens behind nginx
    assert net.client.get('/instances').status_code == 200  # Panel.client talks to nginx
    page = httpx.get(f'{net.url}/?token={net.token}')
    assert page.status_code == 200 and 'nicegui' in page.text.lower()
    url = f'ws://127.0.0.1:{net.port}/_nicegui_ws/socket.io/?EIO=4&transport=websocket&token={net.token}'
    with connect(url) as ws:
        opening = ws.recv(timeout=5)
    assert isinstance(opening, str) and opening.startswith('0') and 'sid' in json.loads(opening[1:])
    assert httpx.get(f'{net.url}/_aikore/auth', headers={'X-Original-URI': f'/?token={net.token}'}).status_code == 404


def test_auth_at_the_proxy(net: Panel) -> None:
    started(net, 'guarded')
    url = f'{net.url}/instance/guarded/page?x=1'
    wait_routed(url, 'guarded', headers=auth(net))
    plain = httpx.get(url)
    assert plain.status_code == 401 and plain.json()['detail'].startswith('Authentication required')
    assert plain.headers['www-authenticate'] == 'Bearer'
    # A browser never gets an app on the panel's origin: it goes, through the panel (login first),
    # to the same path on the app's own origin (tests/test_app_origins.py).
    browser = httpx.get(url, headers={'Accept': 'text/html,application/xhtml+xml'})
    assert browser.status_code == 302
    assert browser.headers['location'] == '/_aikore/app/guarded/instance/guarded/page?x=1'
    login = httpx.get(f'{net.url}{browser.headers["location"]}', headers={'Accept': 'text/html'})
    assert login.status_code == 303
    assert login.headers['location'] == '/login?next=/_aikore/app/guarded/instance/guarded/page%3Fx%3D1'
    assert httpx.get(url, headers={'Authorization': 'Bearer wrong'}).status_code == 401
    assert httpx.get(f'{url}&token=wrong').status_code == 401
    # Headers the auth decision reads cannot be supplied by the client.
    spoofed = {'X-Original-URI': f'/instance/guarded/?token={net.token}', 'X-AiKore-Route': 'path'}
    assert httpx.get(url, headers=spoofed).status_code == 401

    assert echo_name(f'{url}&token={net.token}') == 'guarded'  # API clients: ?token= passes, no cookie
    on_its_origin = {'Host': f'guarded.localhost:{net.port}', 'Accept': 'text/html'}
    with_token = httpx.get(f'{net.url}/instance/guarded/page?x=1&token={net.token}', headers=on_its_origin)
    assert with_token.status_code == 200
    session = with_token.cookies.get('aikore_session')
    assert session, 'a browser that came with ?token= gets a session cookie'
    its_host = {'Host': on_its_origin['Host']}  # the cookie is bound to the origin it was issued for
    assert echo_name(url, cookies={'aikore_session': session}, headers=its_host) == 'guarded'  # next requests pass
    assert httpx.get(url, cookies={'aikore_session': session}).status_code == 401, 'not on the panel origin'
    assert httpx.get(url, cookies={'aikore_session': session + 'x'}, headers=its_host).status_code == 401

    subdomain = {'Host': f'guarded.localhost:{net.port}'}
    assert httpx.get(f'{net.url}/', headers=subdomain).status_code == 401
    redirected = httpx.get(f'{net.url}/', headers={**subdomain, 'Accept': 'text/html'})
    assert redirected.status_code == 302
    back = quote(f'http://guarded.localhost:{net.port}/', safe='')
    assert redirected.headers['location'] == f'http://localhost:{net.port}/login?next={back}'
    assert echo_name(f'{net.url}/?token={net.token}', headers=subdomain) == 'guarded'
    # Unknown paths under /instance/ say nothing to strangers either.
    assert httpx.get(f'{net.url}/instance/nobody/').status_code == 401


def test_a_browser_login_reaches_a_subdomain_instance(net: Panel) -> None:
    """The session cookie of the panel's host does not reach <slug>.<host>: after the login, the
    browser carries a one-time token there and gets that host's own cookie."""
    started(net, 'sub', access_pattern='subdomain')
    panel_host, sub_host = f'localhost:{net.port}', f'sub.localhost:{net.port}'
    wanted = f'http://{sub_host}/page?x=1'
    first = httpx.get(f'{net.url}/page?x=1', headers={'Host': sub_host, 'Accept': 'text/html'})
    assert first.status_code == 302
    assert first.headers['location'] == f'http://{panel_host}/login?next={quote(wanted, safe="")}'

    form = {'password': net.password(), 'next': wanted}
    logged = httpx.post(f'{net.url}/login', data=form, headers={'Host': panel_host})
    # The hop to another origin is made by the next page (CSP form-action 'self' covers a form's redirects).
    assert logged.status_code == 200, logged.text
    panel_cookie = logged.cookies.get('aikore_session')
    assert panel_cookie
    refresh = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', logged.text)
    assert refresh, logged.text
    handoff = urlsplit(html.unescape(refresh.group(1)))
    assert (handoff.netloc, handoff.path) == (sub_host, '/_aikore/session')
    there = f'{net.url}{handoff.path}?{handoff.query}'
    arrived = httpx.get(there, headers={'Host': sub_host})
    assert arrived.status_code == 303 and arrived.headers['location'] == '/page?x=1'
    sub_cookie = arrived.cookies.get('aikore_session')
    assert sub_cookie and sub_cookie != panel_cookie
    assert echo_name(f'{net.url}/page?x=1', headers={'Host': sub_host}, cookies={'aikore_session': sub_cookie}) == 'sub'
    assert httpx.get(there, headers={'Host': sub_host}).status_code == 401, 'the token works once'

    # A browser already logged in on the panel goes straight on; other targets are never followed.
    browser = httpx.Client(headers={'Host': panel_host}, cookies={'aikore_session': panel_cookie})
    again = browser.get(f'{net.url}/login', params={'next': wanted})
    assert again.status_code == 303 and urlsplit(again.headers['location']).netloc == sub_host
    token = parse_qs(urlsplit(again.headers['location']).query)['once'][0]
    assert httpx.get(f'{net.url}/login', params={'once': token}).status_code == 401, 'a hand-off is no login link'
    foreign = [
        'http://evil.example/', f'http://sub.localhost.evil:{net.port}/', f'http://a.b.localhost:{net.port}/',
        f'http://nobody.localhost:{net.port}/',  # no instance has that slug: no token goes there
        f'http://user@{sub_host}/', f'ftp://{sub_host}/', 'http://sub.localhost:1/', '//evil.example/',
    ]  # fmt: skip
    for target in foreign:
        answer = browser.get(f'{net.url}/login', params={'next': target})
        assert (answer.status_code, answer.headers['location']) == (303, '/'), target


def test_takeover_cuts_the_old_holders_connections(net: Panel) -> None:
    port = public_ports(net)[1]
    old = started(net, 'holder', public_port=port)
    new = started(net, 'taker', public_port=port)
    call(net, 'POST', f'/instances/{old["id"]}/activate')
    with socket.create_connection(('127.0.0.1', port), timeout=5) as live:
        live.sendall(b'GET /live HTTP/1.1\r\nHost: x\r\n\r\n')
        assert b'"holder"' in live.recv(65536)  # a live connection to the holder
        call(net, 'POST', f'/instances/{new["id"]}/activate', force='true')
        try:
            leftover = live.recv(65536)
        except ConnectionResetError:
            leftover = b''
        assert leftover == b'', 'the old holder connection survived the takeover'
    assert echo_name(f'http://127.0.0.1:{port}/') == 'taker'


def test_foreign_listener_on_a_public_port(net: Panel) -> None:
    port = public_ports(net)[2]
    instance = started(net, 'blocked', public_port=port)
    with socket.socket() as foreign:
        foreign.bind(('127.0.0.1', port))
        foreign.listen()
        response = net.client.post(f'/instances/{instance["id"]}/activate', params={'force': 'true'})
        assert response.status_code == 409
        body = response.json()
        assert f'Public port {port} is in use by another program' in body['detail'] and 'holder' not in body
        assert net.instance(instance['id'])['active'] is False
        with socket.create_connection(('127.0.0.1', port), timeout=2):
            pass  # the foreign program still has its port
    assert call(net, 'POST', f'/instances/{instance["id"]}/activate')['active'] is True
    assert echo_name(f'http://127.0.0.1:{port}/') == 'blocked'


def test_port_change_and_restart_keep_activation_consistent(net: Panel) -> None:
    first, second = public_ports(net)[3], public_ports(net)[4]
    instance = started(net, 'mover', public_port=first)
    call(net, 'POST', f'/instances/{instance["id"]}/activate')
    # A restart keeps the activation; the forwarder follows the internal port, a new one when
    # another program took the old one meanwhile.
    old_internal = instance['internal_port']
    net.client.post(f'/instances/{instance["id"]}/stop')
    net.wait_status(instance['id'], 'stopped')
    wait_for(lambda: refused(first), 5, what='the forwarder to go down with the instance')
    assert net.instance(instance['id'])['active'] is True
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(('127.0.0.1', old_internal))
        squatter.listen()
        net.client.post(f'/instances/{instance["id"]}/start')
        restarted = wait_routable(net, instance['id'])
        assert restarted['internal_port'] != old_internal
        wait_for(lambda: echo_name(f'http://127.0.0.1:{first}/') == 'mover', 5, what='the forwarder to follow')
        assert echo_name(f'{net.url}/instance/mover/', headers=auth(net)) == 'mover'
    # A new public port unmaps the old one; activating maps the new one.
    moved = net.client.patch(f'/instances/{instance["id"]}', json={'public_port': second}).json()
    assert moved['active'] is False
    wait_for(lambda: refused(first), 5, what='the old public port to close')
    call(net, 'POST', f'/instances/{instance["id"]}/activate')
    assert echo_name(f'http://127.0.0.1:{second}/') == 'mover'


def test_start_and_stop_need_no_reload(net: Panel) -> None:
    """An instance runs on the same internal port again, so its route stays valid while it is
    stopped (503 then) and nginx is not reloaded: other users' connections are left alone."""
    first = started(net, 'steadyport')
    url = f'{net.url}/instance/steadyport/'
    wait_routed(url, 'steadyport', headers=auth(net))
    reloads = call(net, 'GET', '/network')['proxy']['reloads']
    net.client.post(f'/instances/{first["id"]}/stop')
    net.wait_status(first['id'], 'stopped')
    assert net.instance(first['id'])['internal_port'] is None  # the API shows it only while running
    refused_now = httpx.get(url, headers=auth(net))
    assert refused_now.status_code == 503 and 'not running' in refused_now.text
    net.client.post(f'/instances/{first["id"]}/start')
    again = wait_routable(net, first['id'])
    assert again['internal_port'] == first['internal_port']
    assert echo_name(url, headers=auth(net)) == 'steadyport'
    assert call(net, 'GET', '/network')['proxy']['reloads'] == reloads


def test_routes_follow_rename_and_delete(net: Panel) -> None:
    instance = net.create('oldname', blueprint='Echo')
    wait_for(lambda: httpx.get(f'{net.url}/instance/oldname/', headers=auth(net)).status_code == 503, 10)
    net.client.patch(f'/instances/{instance["id"]}', json={'name': 'NewName'})
    wait_for(lambda: httpx.get(f'{net.url}/instance/oldname/', headers=auth(net)).status_code == 404, 10)
    net.client.post(f'/instances/{instance["id"]}/start')
    wait_routed(f'{net.url}/instance/newname/', 'NewName', headers=auth(net))
    net.client.post(f'/instances/{instance["id"]}/stop')
    net.wait_status(instance['id'], 'stopped')
    assert net.client.delete(f'/instances/{instance["id"]}').status_code == 204
    wait_for(lambda: httpx.get(f'{net.url}/instance/newname/', headers=auth(net)).status_code == 404, 10)
    config = (net.data_dir / 'nginx' / 'nginx.conf').read_text()
    assert 'newname' not in config and 'oldname' not in config


def test_activation_while_starting_and_a_killed_forwarder(net: Panel) -> None:
    port = public_ports(net)[5]
    net.put_blueprint('SlowEcho', ECHO_BLUEPRINT.replace('exec ', 'sleep 1\nexec ', 1))
    instance = net.create('slowpoke', blueprint='SlowEcho', public_port=port)
    net.client.post(f'/instances/{instance["id"]}/start')
    early = call(net, 'POST', f'/instances/{instance["id"]}/activate')  # starting counts: it maps once ready
    assert early['status'] == 'starting' and early['active'] is True and early['urls']['open'] is None
    assert refused(port)
    wait_routable(net, instance['id'])
    wait_for(lambda: echo_name(f'http://127.0.0.1:{port}/') == 'slowpoke', 5, what='the port to open when ready')
    # A forwarder killed from outside is replaced.
    state = net.data_dir / 'ports' / f'{port}.json'
    wait_for(state.exists, 5, what='the forwarder recorded')  # written once it listens: a moment after it answers
    old = json.loads(state.read_text())['pid']
    os.killpg(old, signal.SIGKILL)
    wait_for(lambda: state.exists() and json.loads(state.read_text())['pid'] != old, 10, what='a new forwarder')
    wait_for(lambda: echo_name(f'http://127.0.0.1:{port}/') == 'slowpoke', 5, what='the port to answer again')
    assert net.instance(instance['id'])['active'] is True
