"""Attacks a browser carries out, tried in a real headless Chromium against a panel subprocess:
a crafted link into the API docs (reflected XSS), and a page of another origin framing the panel."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.helpers import Panel, free_port

# Each payload, if it ran, would set window.__pwned (and change the title for good measure).
XSS_PAYLOADS = [
    "';window.__pwned=1;document.title='pwned';//",
    '</script><script>window.__pwned=1;document.title="pwned"</script>',
    '"><img src=x onerror="window.__pwned=1">',
    "'+(window.__pwned=1)+'",
    "\\';window.__pwned=1;//",
]


@pytest.fixture(scope='module')
def logged_in(browser: Browser, shared_panel: Panel) -> Iterator[BrowserContext]:
    """A browser context with the panel's session cookie (logged in with the password)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f'{shared_panel.url}/login')
    page.get_by_label('Password').fill(shared_panel.password())
    page.get_by_role('button', name='Log in').click()
    expect(page.get_by_text('Instances', exact=True)).to_be_visible(timeout=15000)
    page.close()
    yield context
    context.close()


@pytest.mark.parametrize('payload', XSS_PAYLOADS)
def test_crafted_docs_link_runs_no_script(logged_in: BrowserContext, shared_panel: Panel, payload: str) -> None:
    """A logged-in user follows a crafted link to /api/docs: nothing of the link runs."""
    page = logged_in.new_page()
    try:
        page.goto(f'{shared_panel.url}/api/docs?token={quote(payload, safe="")}')
        expect(page.locator('#swagger-ui')).to_be_attached()
        page.wait_for_load_state('load')
        assert page.evaluate('window.__pwned') is None, f'the payload ran: {payload!r}'
        assert page.title() != 'pwned'
    finally:
        page.close()


def test_docs_page_never_contains_the_query(shared_panel: Panel) -> None:
    marker = 'zz-marker-<>"\''
    response = httpx.get(f'{shared_panel.url}/api/docs', params={'token': shared_panel.token, 'x': marker}, timeout=10)
    assert response.status_code == 200
    assert shared_panel.token not in response.text and 'zz-marker' not in response.text


def test_docs_work_with_the_token_in_the_link(browser: Browser, shared_panel: Panel) -> None:
    """The one thing ?token= is for: the docs load the schema and list the API's operations."""
    page = browser.new_context().new_page()
    try:
        page.goto(f'{shared_panel.url}/api/docs?token={shared_panel.token}')
        expect(page.locator('.opblock-summary-path', has_text='/instances').first).to_be_visible(timeout=15000)
    finally:
        page.context.close()


def test_every_page_carries_the_security_headers(shared_panel: Panel) -> None:
    for path in ('/login', '/api/docs', '/api/health', '/'):
        response = httpx.get(f'{shared_panel.url}{path}', timeout=10)
        csp = response.headers.get('content-security-policy', '')
        for directive in ("frame-ancestors 'self'", "object-src 'none'", "base-uri 'self'", "form-action 'self'"):
            assert directive in csp, f'{path}: {directive} missing from {csp!r}'
        scripts = csp.split('script-src', 1)[1].split(';', 1)[0]
        assert "'unsafe-inline'" not in scripts, f'{path}: inline scripts allowed'
        assert response.headers.get('x-content-type-options') == 'nosniff', path
        assert response.headers.get('x-frame-options') == 'SAMEORIGIN', path
        assert response.headers.get('referrer-policy'), path


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A page of another origin (another port of the same host): its base URL while the block runs."""
    server = http.server.ThreadingHTTPServer(('127.0.0.1', free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _FramingPage(http.server.BaseHTTPRequestHandler):
    target = ''

    def do_GET(self) -> None:
        body = f'<html><body><iframe id="victim" src="{self.target}" width="800" height="600"></iframe></body></html>'
        self.send_response(200)
        self.send_header('Content-Type', 'text/html')
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def framing_site(shared_panel: Panel) -> Iterator[str]:
    """A page on another port of the same host (same site, other origin) that frames the dashboard."""
    handler = type('Framing', (_FramingPage,), {'target': f'{shared_panel.url}/'})
    with serving(handler) as site:
        yield f'{site}/'


def test_another_origin_cannot_frame_the_dashboard(logged_in: BrowserContext, framing_site: str) -> None:
    page = logged_in.new_page()
    try:
        page.goto(framing_site)
        expect(page.locator('#victim')).to_be_attached()
        page.wait_for_load_state('load')
        frame = page.frame_locator('#victim')
        # The framed dashboard would show its table header; a refused frame shows nothing of it.
        expect(frame.get_by_text('Instances', exact=True)).to_have_count(0, timeout=3000)
    finally:
        page.close()


# ---------------------------------------------------------------- request forgery (issue 11 item 2)

FORGED_FORMS = {
    # A JSON body smuggled in a text/plain form: name + '=' + value is {"name":…,"x":"="}.
    '/create': ('/api/instances', 'text/plain', 'name=\'{"name":"forged","blueprint":"Demo","x":"\' value=\'"}\''),
    '/start': ('/api/instances/{id}/start', 'application/x-www-form-urlencoded', "name='a' value='b'"),
    '/logout': ('/logout', 'application/x-www-form-urlencoded', "name='a' value='b'"),
}


class _ForgingPage(http.server.BaseHTTPRequestHandler):
    """Serves, at /create, /start and /logout, a page that submits a form to the panel at once."""

    panel = ''
    instance_id = 0

    def do_GET(self) -> None:
        action, enctype, field = FORGED_FORMS[self.path]
        target = self.panel + action.format(id=self.instance_id)
        body = (
            f'<html><body><form id="f" method="post" action="{target}" enctype="{enctype}">'
            f'<input type="hidden" {field}></form>'
            '<script>document.getElementById("f").submit()</script></body></html>'
        )
        self.send_response(200)
        self.send_header('Content-Type', 'text/html')
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def forging_site(shared_panel: Panel) -> Iterator[tuple[str, int]]:
    """A page on another port of the same host (same site: the session cookie goes along)."""
    instance = shared_panel.create('forgery-target', blueprint='Demo')
    handler = type('Forging', (_ForgingPage,), {'panel': shared_panel.url, 'instance_id': instance['id']})
    with serving(handler) as site:
        yield site, instance['id']
        shared_panel.client.delete(f'/instances/{instance["id"]}')


@pytest.mark.parametrize('attack', sorted(FORGED_FORMS))
def test_forms_of_another_origin_cannot_act_with_the_cookie(
    logged_in: BrowserContext, shared_panel: Panel, forging_site: tuple[str, int], attack: str
) -> None:
    site, instance_id = forging_site
    action = FORGED_FORMS[attack][0].format(id=instance_id)
    page = logged_in.new_page()
    try:
        with page.expect_response(lambda response: response.url.startswith(shared_panel.url + action)) as answer:
            page.goto(site + attack)
        assert answer.value.status == 403, answer.value.text()
        assert "panel's own page" in answer.value.text()
    finally:
        page.close()
    assert shared_panel.instance(instance_id)['status'] == 'stopped', 'the forged start went through'
    assert all(item['name'] != 'forged' for item in shared_panel.client.get('/instances').json())
    # Still logged in (the forged logout did nothing), and the panel's own pages still act.
    own = logged_in.new_page()
    try:
        own.goto(f'{shared_panel.url}/')
        expect(own.get_by_text('Instances', exact=True)).to_be_visible(timeout=15000)
        created = own.evaluate(
            """async () => (await fetch('/api/instances', {
                method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({name: 'own-page', blueprint: 'Demo'})})).status"""
        )
        assert created == 201
    finally:
        own.close()
    made = [item for item in shared_panel.client.get('/instances').json() if item['name'] == 'own-page']
    assert shared_panel.client.delete(f'/instances/{made[0]["id"]}').status_code in {200, 204}
