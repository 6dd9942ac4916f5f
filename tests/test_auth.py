"""API authentication: every route but GET /api/health needs the token (API.md "Auth").

The routes are read from the API application itself, so a route added later is covered
without touching this file. Each one is called without a token, with a wrong bearer token
and with a wrong ``?token=``; all must answer 401 with a ``detail`` and change nothing.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import routing as fastapi_routing
from fastapi.routing import APIRoute
from starlette.routing import Route

from app.main import api
from tests.helpers import Panel, processes_under

OPEN_ROUTES = {('GET', '/health')}
# Routes API.md promises; listed too so that a promised route is never left open even when
# the application does not (yet) register it.
CONTRACT_ROUTES = {
    ('POST', '/instances'),
    ('GET', '/instances'),
    ('GET', '/instances/{instance_id}'),
    ('PATCH', '/instances/{instance_id}'),
    ('DELETE', '/instances/{instance_id}'),
    ('POST', '/instances/{instance_id}/start'),
    ('POST', '/instances/{instance_id}/stop'),
    ('POST', '/instances/{instance_id}/restart'),
    ('GET', '/instances/{instance_id}/logs'),
    ('GET', '/instances/{instance_id}/script'),
    ('PUT', '/instances/{instance_id}/script'),
    ('POST', '/instances/{instance_id}/activate'),
    ('POST', '/instances/{instance_id}/deactivate'),
    ('GET', '/blueprints'),
    ('GET', '/blueprints/{name}'),
    ('PUT', '/blueprints/{name}'),
    ('DELETE', '/blueprints/{name}'),
    ('GET', '/trash'),
    ('POST', '/trash/{name}/restore'),
    ('DELETE', '/trash/{name}'),
    ('GET', '/system/stats'),
    ('GET', '/system/history'),
    ('GET', '/docs'),
    ('GET', '/openapi.json'),
}
ATTACK_BODY = {'name': 'intruder', 'blueprint': 'Demo', 'autostart': True, 'gpu_ids': []}


def _plain_routes(routes: Any) -> Iterator[Any]:
    """APIRoutes and plain starlette Routes of an app, through included routers whatever the FastAPI version."""
    flatten = getattr(fastapi_routing, 'iter_route_contexts', None)
    for route in flatten(routes) if flatten is not None else routes:
        original = getattr(route, 'original_route', route)
        if isinstance(original, APIRoute | Route) and isinstance(route.path, str):
            yield route


def app_routes() -> set[tuple[str, str]]:
    found = set()
    for route in _plain_routes(api.routes):
        for method in route.methods or ():
            if method != 'HEAD':
                found.add((method, route.path))
    return found


APP_ROUTES = app_routes()
PROTECTED = sorted((APP_ROUTES | CONTRACT_ROUTES) - OPEN_ROUTES)


def fill(path: str, instance_id: int) -> str:
    """Dummy values for path parameters: the id of a real instance, or ``x`` (a real blueprint and trash entry)."""
    return re.sub(r'\{(\w+)(?::\w+)?\}', lambda m: str(instance_id) if m.group(1).endswith('id') else 'x', path)


@pytest.fixture(scope='module')
def guarded(shared_panel: Panel) -> dict[str, Any]:
    """Targets for the unauthenticated calls: a custom blueprint ``x``, a trash entry ``x``, an instance."""
    shared_panel.put_blueprint('x', '#!/usr/bin/env bash\necho custom x\n')
    doomed = shared_panel.create('x')
    assert shared_panel.client.delete(f'/instances/{doomed["id"]}').status_code == 204
    keep = shared_panel.create('keep')
    script = shared_panel.data_dir / 'instances' / 'keep' / 'launch.sh'
    return {'instance': keep, 'script': script.read_bytes(), 'script_path': script}


def test_routes_were_found() -> None:
    """Guards against a silent, empty enumeration (e.g. FastAPI changing how routes are stored)."""
    assert ('POST', '/instances') in APP_ROUTES
    assert ('GET', '/health') in APP_ROUTES
    assert len(APP_ROUTES) >= 15


def _assert_401(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, f'{what}: expected 401, got {response.status_code}: {response.text[:200]}'
    body = response.json()
    assert isinstance(body.get('detail'), str) and body['detail'].strip(), f'{what}: 401 without a detail: {body!r}'


def _call(panel: Panel, method: str, path: str, **kwargs: Any) -> httpx.Response:
    if method in {'POST', 'PUT', 'PATCH'}:
        kwargs.setdefault('json', ATTACK_BODY)
    return httpx.request(method, f'{panel.url}/api{path}', timeout=10, **kwargs)


@pytest.mark.parametrize('credentials', ['none', 'wrong-bearer', 'wrong-query-token'])
@pytest.mark.parametrize(('method', 'path'), PROTECTED, ids=[f'{m} {p}' for m, p in PROTECTED])
def test_protected_route_refuses(
    shared_panel: Panel, guarded: dict[str, Any], method: str, path: str, credentials: str
) -> None:
    url_path = fill(path, guarded['instance']['id'])
    kwargs: dict[str, Any] = {}
    if credentials == 'wrong-bearer':
        kwargs['headers'] = {'Authorization': 'Bearer not-the-token'}
    elif credentials == 'wrong-query-token':
        kwargs['params'] = {'token': 'not-the-token'}
    _assert_401(_call(shared_panel, method, url_path, **kwargs), f'{method} {url_path} ({credentials})')


@pytest.mark.parametrize(
    'headers',
    [
        {'Authorization': 'Bearer'},
        {'Authorization': 'Basic dXNlcjpwYXNz'},
        {'Authorization': 'Token {token}'},
        {'Authorization': 'Bearer {token}x'},
        {'Authorization': 'Bearer {prefix}'},
        {'Authorization': 'Bearer {upper}'},
        {'X-Api-Token': '{token}'},
        {'Cookie': 'token={token}'},
    ],
    ids=['no-token', 'basic', 'other-scheme', 'suffix', 'prefix', 'other-case', 'other-header', 'cookie'],
)
def test_near_miss_credentials_refused(shared_panel: Panel, headers: dict[str, str]) -> None:
    token = shared_panel.token
    values = {'token': token, 'prefix': token[:-1], 'upper': token.upper() if token.upper() != token else token + 'A'}
    sent = {key: value.format(**values) for key, value in headers.items()}
    _assert_401(httpx.get(f'{shared_panel.url}/api/instances', headers=sent, timeout=10), f'GET /instances {sent}')


@pytest.mark.parametrize('query', ['token=', 'token', 'token={prefix}', 'TOKEN={token}'])
def test_near_miss_query_tokens_refused(shared_panel: Panel, query: str) -> None:
    sent = query.format(token=shared_panel.token, prefix=shared_panel.token[:-1])
    _assert_401(httpx.get(f'{shared_panel.url}/api/instances?{sent}', timeout=10), f'GET /instances?{sent}')


def test_health_is_open(shared_panel: Panel) -> None:
    response = httpx.get(f'{shared_panel.url}/api/health', timeout=10)
    assert response.status_code == 200
    assert response.json() == {'status': 'ok'}


def test_right_token_in_query_works(shared_panel: Panel) -> None:
    response = httpx.get(f'{shared_panel.url}/api/instances', params={'token': shared_panel.token}, timeout=10)
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)
    assert shared_panel.client.get('/instances').status_code == 200  # and the bearer header


@pytest.mark.parametrize('doc', ['/docs', '/openapi.json'])
def test_api_docs_need_the_token(shared_panel: Panel, doc: str) -> None:
    url = f'{shared_panel.url}/api{doc}'
    _assert_401(httpx.get(url, timeout=10), f'GET {doc} without token')
    _assert_401(httpx.get(url, params={'token': 'not-the-token'}, timeout=10), f'GET {doc} wrong token')
    response = httpx.get(url, params={'token': shared_panel.token}, timeout=10)
    assert response.status_code == 200, response.text
    if doc == '/openapi.json':
        paths = response.json()['paths']
        assert '/instances' in paths
        documented = {(m.upper(), p) for p, ops in paths.items() for m in ops}
        assert documented <= APP_ROUTES, f'documented routes the enumeration missed: {documented - APP_ROUTES}'
    else:
        assert 'text/html' in response.headers['content-type']
        assert '/_aikore/api-docs.js' in response.text  # the page's script, which loads openapi.json
        # Swagger UI comes from the panel, not a CDN: the docs work offline.
        assert 'cdn.' not in response.text
        swagger = '/_aikore/swagger'
        for asset, size in ((f'{swagger}/swagger-ui-bundle.js', 10_000), (f'{swagger}/swagger-ui.css', 10_000),
                            ('/_aikore/api-docs.js', 100)):  # fmt: skip
            assert asset in response.text
            served = httpx.get(f'{shared_panel.url}{asset}', timeout=10)
            assert served.status_code == 200 and len(served.content) > size, asset


def test_refused_calls_changed_nothing(shared_panel: Panel, guarded: dict[str, Any]) -> None:
    """Runs after the refusals above (file order): none of them reached a service."""
    client = shared_panel.client
    names = [i['name'] for i in client.get('/instances').json()]
    assert names == ['keep'], f'unauthenticated calls changed the instances: {names}'
    keep = shared_panel.instance(guarded['instance']['id'])
    assert keep['status'] == 'stopped' and keep['autostart'] is False and keep['pid'] is None, keep
    assert guarded['script_path'].read_bytes() == guarded['script'], 'launch.sh was rewritten without a token'
    assert client.get('/blueprints/x').status_code == 200, 'custom blueprint x was deleted without a token'
    assert [e['name'] for e in client.get('/trash').json()] == ['x'], 'the trash changed without a token'
    assert processes_under(shared_panel.data_dir) == [], 'an instance was started without a token'
    assert shared_panel.token not in shared_panel.log_text(), 'the API token (sent as ?token=) leaked into the log'


# ---------------------------------------------------------------- a generated token


def _tokenless_panel(data_dir: Path) -> Panel:
    panel = Panel(data_dir, AIKORE_STOP_ON_EXIT='1')
    panel.env.pop('AIKORE_API_TOKEN', None)
    return panel


def test_generated_token_is_kept_in_secrets_file(tmp_path: Path) -> None:
    data_dir = tmp_path / 'data'
    secrets_file = data_dir / 'secrets.json'

    first = _tokenless_panel(data_dir)
    try:
        first.start()
        assert secrets_file.is_file(), 'no AIKORE_API_TOKEN: the panel generates one into <data>/secrets.json'
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600, oct(secrets_file.stat().st_mode)
        token = json.loads(secrets_file.read_text())['api_token']
        assert isinstance(token, str) and len(token) >= 16
        assert token not in first.log_text(), 'the generated token is never printed'
        assert f'API token generated and stored in {secrets_file}' in first.log_text()
        assert 'aikore token' in first.log_text(), 'the log says how to print it'
        answer = httpx.get(f'{first.url}/api/instances', headers={'Authorization': f'Bearer {token}'}, timeout=10)
        assert answer.status_code == 200, answer.text
        # The random token the Panel helper made up was never given to this panel.
        _assert_401(first.client.get('/instances'), 'a token the panel never issued')
    finally:
        first.stop()

    secrets_file.chmod(0o644)  # loosened by hand: the panel tightens it again
    second = _tokenless_panel(data_dir)
    assert second.log_file == first.log_file  # same log: the second start appends to it
    try:
        second.start()
        assert json.loads(secrets_file.read_text())['api_token'] == token, 'a second start keeps the token'
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600, 'secrets.json is 0600 again after a start'
        answer = httpx.get(f'{second.url}/api/instances', params={'token': token}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert token not in second.log_text(), 'the token is not printed at a later start either'
    finally:
        second.stop()


def test_the_longest_token_works_behind_nginx(tmp_path: Path) -> None:
    """nginx holds the token in its config (a map key, an if): 256 characters still load."""
    token = 'T' * 250 + '.~+/=-'
    panel = Panel(tmp_path / 'data', AIKORE_API_TOKEN=token, AIKORE_NGINX='managed')
    try:
        panel.start()
        assert panel.token == token and panel.client.get('/instances').status_code == 200
    finally:
        panel.stop()
