"""An instance's custom host name (the original AiKore's ``hostname`` with
``use_custom_hostname``, kept by the upgrade, or set with PATCH ``custom_hostname``): nginx
serves the instance there as on ``<slug>.<host>``, with the same authentication, and a
logged-in browser is handed a session on it. Names of the panel itself are refused."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.helpers import Panel, wait_for
from tests.netkit import auth, echo, echo_name, proxied_panel, started, wait_routed

HOST = 'comfy.example.lan'


@pytest.fixture(scope='module')
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    panel = proxied_panel(tmp_path_factory.mktemp('custom-host') / 'data')
    try:
        yield panel
    finally:
        panel.stop()


def test_a_custom_host_name_serves_the_instance_behind_the_same_login(net: Panel) -> None:
    instance = started(net, 'hosted')
    response = net.client.patch(f'/instances/{instance["id"]}', json={'custom_hostname': 'Comfy.Example.LAN.'})
    assert response.status_code == 200, response.text
    assert response.json()['custom_hostname'] == HOST
    url = f'http://127.0.0.1:{net.port}/some/page'
    host = f'{HOST}:{net.port}'  # as a browser sends it
    wait_routed(url, 'hosted', headers={'Host': host, **auth(net)})
    assert echo(url, headers={'Host': host, **auth(net)})['path'] == '/some/page'

    # no credentials: an API client is refused, a browser is sent to log in (no public host set)
    bare = httpx.get(url, headers={'Host': host})
    assert bare.status_code == 401
    page = httpx.get(url, headers={'Host': host, 'Accept': 'text/html'})
    assert page.status_code == 302
    explained = httpx.get(f'http://127.0.0.1:{net.port}{page.headers["location"]}', headers={'Host': host})
    assert explained.status_code == 401 and 'open this instance from there' in explained.text

    # a browser logged in on the panel is handed a session on the custom host
    browser = httpx.Client(base_url=f'http://127.0.0.1:{net.port}')
    origin = {'Origin': f'http://127.0.0.1:{net.port}'}
    login = browser.post(
        '/login', data={'password': net.password(), 'next': f'http://{HOST}:{net.port}/x'}, headers=origin
    )
    assert login.status_code == 200, login.text  # a page that continues to the instance's host
    link = re.search(r'href="([^"]+)"', login.text)
    assert link is not None, login.text
    target = urlsplit(html.unescape(link.group(1)))
    assert target.netloc == f'{HOST}:{net.port}' and target.path == '/_aikore/session'
    once = parse_qs(target.query)['once'][0]
    handed = httpx.get(f'http://127.0.0.1:{net.port}/_aikore/session?once={once}&next=/x', headers={'Host': host})
    assert handed.status_code == 303
    cookies = {name: value for name, value in handed.cookies.items()}
    assert echo(url, headers={'Host': host}, cookies=cookies)['name'] == 'hosted'
    browser.close()

    # cleared: the host name no longer reaches it
    cleared = net.client.patch(f'/instances/{instance["id"]}', json={'custom_hostname': ''})
    assert cleared.json()['custom_hostname'] is None
    wait_for(
        lambda: echo_name(url, headers={'Host': host, **auth(net)}) is None, 10, 0.05, 'the host to stop reaching it'
    )


@pytest.mark.parametrize(
    ('value', 'status', 'words'),
    [
        ('not a host', 422, 'Invalid host name'),
        ('10.0.0.5', 422, 'Invalid host name'),
        ('localhost', 422, 'name of the panel itself'),
        ('-bad.example', 422, 'Invalid host name'),
    ],
)
def test_bad_custom_host_names_are_refused(net: Panel, value: str, status: int, words: str) -> None:
    instance = net.create(f'bad{abs(hash(value)) % 10000}')
    response = net.client.patch(f'/instances/{instance["id"]}', json={'custom_hostname': value})
    assert response.status_code == status, response.text
    assert words in response.json()['detail']
    assert net.instance(instance['id'])['custom_hostname'] is None


def test_one_instance_per_custom_host_name(net: Panel) -> None:
    first = net.create('first-host')
    second = net.create('second-host')
    assert net.client.patch(f'/instances/{first["id"]}', json={'custom_hostname': 'one.example.lan'}).status_code == 200
    taken = net.client.patch(f'/instances/{second["id"]}', json={'custom_hostname': 'one.example.lan'})
    assert taken.status_code == 409 and 'first-host' in taken.json()['detail']


def test_a_custom_host_never_takes_the_panels_or_another_instances_requests(net: Panel) -> None:
    """The host the admin reaches the panel on, names under it, ``*.localhost``, and a name an
    other instance's subdomain route answers for (``<its slug>.<anything>``) are refused."""
    taker = net.create('taker')
    net.create('victim')
    url = f'/instances/{taker["id"]}'
    browsed = {'Host': f'gpu-box.lan:{net.port}'}  # the name the admin's browser uses for the panel
    cases = [
        ('gpu-box.lan', browsed, 422, 'name of the panel itself'),
        ('b.gpu-box.lan', browsed, 422, "under the panel's name"),
        ('app.localhost', {}, 422, 'name of the panel itself'),
        ('victim.example.lan', {}, 409, "'victim'"),
    ]
    for value, headers, status, words in cases:
        response = net.client.patch(url, json={'custom_hostname': value}, headers=headers)
        assert response.status_code == status, (value, response.text)
        assert words in response.json()['detail'], (value, response.text)
    assert net.instance(taker['id'])['custom_hostname'] is None
    assert net.client.patch(url, json={'custom_hostname': 'taker.example.lan'}).status_code == 200  # its own slug
