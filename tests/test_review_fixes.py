"""Edges a review found: odd cookies, a token link naming another site, a forwarded scheme from
the client, a name that would capture the panel's host, and guessing the password with a session."""

from __future__ import annotations

import httpx

from tests.helpers import Panel


def test_a_non_ascii_cookie_is_just_not_a_session(shared_panel: Panel) -> None:
    odd = 'aikore_session=abc.\xe9'.encode('latin-1')  # as a browser may send it
    answer = httpx.get(f'{shared_panel.url}/api/instances', headers={'Cookie': odd})
    assert answer.status_code == 401, answer.text
    page = httpx.get(f'{shared_panel.url}/', headers={'Cookie': odd, 'Accept': 'text/html'})
    assert page.status_code == 303 and page.headers['location'].startswith('/login')
    assert 'Traceback' not in shared_panel.log_text()


def test_a_token_link_never_leads_to_another_site(shared_panel: Panel) -> None:
    link = f'{shared_panel.url}//evil.example/?token={shared_panel.token}'
    answer = httpx.get(link, headers={'Accept': 'text/html'})
    assert answer.status_code == 303
    assert not answer.headers['location'].startswith('//'), answer.headers['location']


def test_the_client_cannot_claim_https(shared_panel: Panel) -> None:
    form = {'password': shared_panel.password(), 'next': '/'}
    answer = httpx.post(f'{shared_panel.url}/login', data=form, headers={'X-Forwarded-Proto': 'https'})
    assert answer.status_code == 303
    cookie = next(value for value in answer.headers.get_list('set-cookie') if value.startswith('aikore_session='))
    assert 'Secure' not in cookie, "only the panel's own nginx may say the browser came over HTTPS"


def test_an_instance_may_not_take_the_panels_host_name(shared_panel: Panel) -> None:
    answer = shared_panel.client.post('/instances', json={'name': 'localhost', 'blueprint': 'Demo'})
    assert answer.status_code == 422 and "panel's own host name" in answer.json()['detail'], answer.text


def test_guessing_the_password_with_a_session_is_throttled(shared_panel: Panel) -> None:
    change = '/account/password'
    codes = [shared_panel.client.put(change, json={'current': f'guess-{n}', 'new': 'whatever-1'}).status_code
             for n in range(12)]  # fmt: skip
    assert codes[0] == 403 and 429 in codes, codes
