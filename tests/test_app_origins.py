"""Apps in their own origins (DESIGN "Origins", issue 15 items 1-3, 5; issue 11 item 3), with real
nginx and a real headless Chromium.

A browser never gets an app's answer on the panel's origin: ``/instance/<slug>/`` sends it, through
the panel's session hand-off, to the same path on ``<slug>.localhost``. There ``aikore.path``
decides what the app gets: ``keep`` the full path, ``strip`` the path without the prefix (a
path-unaware app with relative URLs works), ``none`` only the root (never offered the path).
An app page there can neither act on the panel nor read it, while the dashboard and View work.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.helpers import Panel, blueprint
from tests.netkit import ECHO_APP, auth, proxied_panel, started, wait_routable


def root_blueprint(name: str, page: str, path_mode: str) -> str:
    script = blueprint(f'ECHO_ROOT_PAGE={page} exec {sys.executable} -u {ECHO_APP}', name=name)
    return script.replace('### AIKORE-METADATA-END ###', f'# aikore.path = {path_mode}\n### AIKORE-METADATA-END ###')


@pytest.fixture(scope='module')
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    panel = proxied_panel(tmp_path_factory.mktemp('origins') / 'data')
    panel.put_blueprint('Relative', root_blueprint('Relative', 'relative', 'strip'))
    panel.put_blueprint('Absolute', root_blueprint('Absolute', 'absolute', 'none'))
    try:
        yield panel
    finally:
        panel.stop()


@pytest.fixture(scope='module')
def user(browser: Browser, net: Panel) -> Iterator[BrowserContext]:
    """A logged-in user on http://localhost:<port> (the panel's origin)."""
    context = browser.new_context(viewport={'width': 1280, 'height': 800})
    page = context.new_page()
    page.goto(f'http://localhost:{net.port}/login')
    page.get_by_label('Password').fill(net.password())
    page.get_by_role('button', name='Log in').click()
    expect(page.get_by_text('Instances', exact=True)).to_be_visible(timeout=15000)
    page.close()
    yield context
    context.close()


def app_works(page: Page, name: str) -> None:
    """The root app's script called its API and its websocket answered, by the URLs it uses."""
    body = page.locator('body')
    expect(body).to_have_attribute('data-api', name, timeout=10000)
    expect(body).to_have_attribute('data-ws', f'{name}: ping', timeout=10000)


def test_strip_serves_a_path_unaware_app_under_the_path(net: Panel, user: BrowserContext) -> None:
    instance = started(net, 'rel', blueprint='Relative', access_pattern='path')
    assert instance['path_mode'] == 'strip'
    assert instance['urls'] == {'open': f'{net.url}/instance/rel/', 'view': '/instance/rel/'}
    page = user.new_page()
    page.goto(f'http://localhost:{net.port}/instance/rel/')
    expect(page).to_have_url(f'http://rel.localhost:{net.port}/instance/rel/')  # its own origin, same path
    app_works(page, 'rel')
    page.close()
    # API clients (the token, no browser) get the app on the panel's port, prefix stripped too.
    hello = httpx.get(f'{net.url}/instance/rel/api/hello', headers=auth(net), timeout=5)
    assert hello.status_code == 200 and hello.json() == {'name': 'rel', 'path': '/api/hello'}


def test_none_is_never_offered_the_path(net: Panel, user: BrowserContext) -> None:
    instance = started(net, 'abs', blueprint='Absolute', access_pattern='path')
    assert instance['path_mode'] == 'none'
    urls = instance['urls']
    assert urls == {'open': f'{net.url}/_aikore/app/abs/', 'view': '/_aikore/app/abs/'}
    page = user.new_page()
    page.goto(f'http://localhost:{net.port}{urls["view"]}')
    expect(page).to_have_url(f'http://abs.localhost:{net.port}/')  # the root of its own origin
    app_works(page, 'abs')
    page.goto(f'http://localhost:{net.port}/instance/abs/api/hello')  # an old link: to the root
    expect(page).to_have_url(f'http://abs.localhost:{net.port}/api/hello')
    page.close()


def test_keep_apps_get_the_full_path_in_their_origin(net: Panel, user: BrowserContext) -> None:
    instance = started(net, 'kept', access_pattern='path')
    assert instance['path_mode'] == 'keep'
    page = user.new_page()
    page.goto(f'http://localhost:{net.port}/instance/kept/deep?q=1')
    expect(page).to_have_url(f'http://kept.localhost:{net.port}/instance/kept/deep?q=1')
    seen: dict[str, Any] = page.evaluate('JSON.parse(document.body.innerText)')
    assert seen['path'] == '/instance/kept/deep?q=1' and seen['headers']['X-Forwarded-Prefix'] == '/instance/kept'
    assert 'aikore_session' not in seen['headers'].get('Cookie', '')
    page.close()


ATTACKS = """async ([panel, victim]) => {
  const out = {};
  const body = JSON.stringify({name: 'pwned', blueprint: 'Echo'});
  const post = {method: 'POST', headers: {'Content-Type': 'application/json'}, body};
  const withCookies = {credentials: 'include'};
  const attempt = async (label, run) => {
    try { out[label] = await run(); } catch (error) { out[label] = 'blocked: ' + error.name; }
  };
  await attempt('same_origin_post', async () => (await fetch('/api/instances', post)).status);
  await attempt('panel_post', async () => (await fetch(panel + '/api/instances', {...post, ...withCookies})).status);
  const form = {method: 'POST', mode: 'no-cors', body, ...withCookies};
  await attempt('panel_form', async () => (await fetch(panel + '/api/instances', form)).type);
  const script = panel + '/api/instances/' + victim + '/script';
  await attempt('read_script', async () => (await (await fetch(script, withCookies)).text()));
  await attempt('read_list', async () => (await (await fetch(panel + '/api/instances', withCookies)).text()));
  out.websocket = await new Promise((resolve) => {
    const ws = new WebSocket(panel.replace('http', 'ws') + '/_nicegui_ws/socket.io/?EIO=4&transport=websocket');
    ws.onmessage = (event) => { resolve('message: ' + event.data); ws.close(); };
    ws.onerror = () => resolve('error');
    ws.onclose = () => resolve('closed');
  });
  return out;
}"""


def test_an_app_page_can_neither_act_on_the_panel_nor_read_it(net: Panel, user: BrowserContext) -> None:
    """Issue 11 item 3: the page the dashboard's View shows tries what an XSS in an app would."""
    started(net, 'victim')
    target = started(net, 'viewed', blueprint='Relative', access_pattern='path')
    secret = net.client.get(f'/instances/{target["id"]}/script').text
    dashboard = user.new_page()
    dashboard.goto(f'http://localhost:{net.port}/')
    views = dashboard.get_by_role('button', name='View')
    count = len(net.client.get('/instances').json())
    expect(views).to_have_count(count, timeout=15000)
    views.last.click()  # 'viewed' is the last row, by creation and by name
    frame = dashboard.frame_locator('iframe')
    expect(frame.locator('body')).to_have_attribute('data-ws', 'viewed: ping', timeout=15000)  # View shows the app
    app_frame = next(f for f in dashboard.frames if f.url.startswith('http://viewed.localhost'))
    assert app_frame.url == f'http://viewed.localhost:{net.port}/instance/viewed/'

    before = {item['name'] for item in net.client.get('/instances').json()}
    victim_id = next(item['id'] for item in net.client.get('/instances').json() if item['name'] == 'victim')
    results = app_frame.evaluate(ATTACKS, [f'http://localhost:{net.port}', victim_id])
    assert {item['name'] for item in net.client.get('/instances').json()} == before, results  # nothing created
    assert results['same_origin_post'] != 201 and results['panel_post'] != 201, results
    assert str(results['read_script']).startswith('blocked') and str(results['read_list']).startswith('blocked')
    assert secret[:40] not in str(results), results
    assert not str(results['websocket']).startswith('message: 0'), results  # no socket.io session

    # The dashboard still works: its own API calls pass, and the table lists the instances.
    created = dashboard.evaluate(
        """async () => (await fetch('/api/instances', {method: 'POST', headers: {'Content-Type': 'application/json'},
                       body: JSON.stringify({name: 'mine', blueprint: 'Echo'})})).status"""
    )
    assert created == 201
    expect(views).to_have_count(count + 1, timeout=10000)  # pushed to the table
    dashboard.close()


def test_browsers_never_get_an_app_on_the_panels_origin(net: Panel) -> None:
    """Whatever the credentials, a browser request for /instance/<slug>/ on the panel's origin is
    redirected (a page load or any request with Sec-Fetch-Mode): it never gets the app's answer."""
    instance = wait_routable(net, started(net, 'guard2')['id'])
    url = f'{net.url}/instance/{instance["slug"]}/x?y=1'
    for headers in ({'Accept': 'text/html'}, {'Sec-Fetch-Mode': 'cors'}, {'Sec-Fetch-Mode': 'no-cors'}):
        response = httpx.get(url, headers={**auth(net), **headers}, timeout=5)
        assert response.status_code == 302, headers
        assert response.headers['location'] == '/_aikore/app/guard2/instance/guard2/x?y=1'
