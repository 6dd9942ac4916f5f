"""Hostile input through the REST API: every request gets a 4xx with a clear sentence and changes nothing.

DESIGN "Security": nothing a user types reaches a shell, a path or a config unvalidated; bad input
gets a 4xx with a clear message and changes nothing. API.md "Errors": never 500 for bad input.

One panel serves the whole module. ``target`` creates the instance ``victim`` and snapshots the
state (instances table, files in and around the data directory, victim's launch.sh); every case
then throws one hostile request at the panel, and ``test_nothing_changed`` (after the cases, in file
order) compares the state with the snapshot.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import STOCK_BLUEPRINTS_DIR
from tests.helpers import Panel, processes_under

OVERSIZED = b'#' * (300 * 1024)  # 300 KiB: above the 256 KiB script limit
VALID_BLUEPRINT = (
    '#!/usr/bin/env bash\n'
    '### AIKORE-METADATA-START ###\n'
    '# aikore.name = Hostile\n'
    '### AIKORE-METADATA-END ###\n'
    'echo hello\n'
)
# Values only known at run time, substituted into a case's JSON body by ``_resolve``.
ABOVE_RANGE = '<port just above AIKORE_PORT_RANGE>'
BELOW_RANGE = '<port just below AIKORE_PORT_RANGE>'


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length), so the limit must hold while streaming."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def new(name: Any = 'fresh', blueprint: Any = 'Demo', **fields: Any) -> dict[str, Any]:
    """Keyword arguments for POST /instances."""
    return {'json': {'name': name, 'blueprint': blueprint, **fields}}


# (id, method, path, request kwargs, expected status: one code, or a set where the contract leaves a choice)
# ``{victim}`` in a path is the id of the instance ``victim``.
CASES: list[tuple[str, str, str, dict[str, Any], int | set[int]]] = [
    # --- instance names
    ('name-dotdot', 'POST', '/instances', new('../x'), 422),
    ('name-slash', 'POST', '/instances', new('a/b'), 422),
    ('name-shell', 'POST', '/instances', new('x;rm -rf /'), 422),
    ('name-subst', 'POST', '/instances', new('$(id)'), 422),
    ('name-backticks', 'POST', '/instances', new('`id`'), 422),
    ('name-empty', 'POST', '/instances', new(''), 422),
    ('name-200-chars', 'POST', '/instances', new('a' * 200), 422),
    ('name-49-chars', 'POST', '/instances', new('a' * 49), 422),
    ('name-cyrillic-e', 'POST', '/instances', new('d\u0435mo'), 422),
    ('name-fullwidth-d', 'POST', '/instances', new('\uff44emo'), 422),
    ('name-trailing-newline', 'POST', '/instances', new('demo\n'), 422),
    ('name-nul', 'POST', '/instances', new('demo\x00x'), 422),
    ('name-leading-dash', 'POST', '/instances', new('-rf'), 422),
    ('name-dot', 'POST', '/instances', new('.'), 422),
    ('name-null', 'POST', '/instances', new(None), 422),
    ('name-number', 'POST', '/instances', new(12), 422),
    ('name-taken-ignoring-case', 'POST', '/instances', new('VICTIM'), 409),
    # --- public ports
    ('port-0', 'POST', '/instances', new(public_port=0), 422),
    ('port-80', 'POST', '/instances', new(public_port=80), 422),
    ('port-70000', 'POST', '/instances', new(public_port=70000), 422),
    ('port-negative', 'POST', '/instances', new(public_port=-1), 422),
    ('port-above-range', 'POST', '/instances', new(public_port=ABOVE_RANGE), 422),
    ('port-below-range', 'POST', '/instances', new(public_port=BELOW_RANGE), 422),
    ('port-text', 'POST', '/instances', new(public_port='eighty'), 422),
    # --- GPU ids
    ('gpu-negative', 'POST', '/instances', new(gpu_ids=[-1]), 422),
    ('gpu-duplicate', 'POST', '/instances', new(gpu_ids=[0, 0]), 422),
    ('gpu-text', 'POST', '/instances', new(gpu_ids=['abc']), 422),
    ('gpu-fraction', 'POST', '/instances', new(gpu_ids=[0.5]), 422),
    ('gpu-not-a-list', 'POST', '/instances', new(gpu_ids='0,1'), 422),
    ('gpu-too-many', 'POST', '/instances', new(gpu_ids=list(range(65))), 422),
    # --- blueprints named at creation
    ('blueprint-unknown', 'POST', '/instances', new(blueprint='NoSuchBlueprint'), 404),
    ('blueprint-traversal', 'POST', '/instances', new(blueprint='../../etc/passwd'), 422),
    ('blueprint-subst', 'POST', '/instances', new(blueprint='$(id)'), 422),
    ('blueprint-sh-suffix', 'POST', '/instances', new(blueprint='Demo.sh'), 422),
    ('blueprint-functions', 'POST', '/instances', new(blueprint='functions'), {404, 422}),
    ('blueprint-empty', 'POST', '/instances', new(blueprint=''), 422),
    # --- other fields
    ('output-traversal', 'POST', '/instances', new(output_path='../../etc'), 422),
    ('output-absolute', 'POST', '/instances', new(output_path='/abs'), 422),
    ('output-inner-traversal', 'POST', '/instances', new(output_path='a/../../b'), 422),
    ('output-empty-segment', 'POST', '/instances', new(output_path='a//b'), 422),
    ('access-pattern', 'POST', '/instances', new(access_pattern='evil'), 422),
    ('restart-policy', 'POST', '/instances', new(restart_policy='always'), 422),
    (
        'body-not-json',
        'POST',
        '/instances',
        {'content': b'{name', 'headers': {'content-type': 'application/json'}},
        422,
    ),
    ('body-list', 'POST', '/instances', {'json': ['victim', 'Demo']}, 422),
    ('body-missing', 'POST', '/instances', {}, 422),
    # --- blueprint library
    ('put-blueprint-sh-suffix', 'PUT', '/blueprints/evil.sh', {'content': VALID_BLUEPRINT.encode()}, 422),
    ('put-blueprint-stock', 'PUT', '/blueprints/Demo', {'content': VALID_BLUEPRINT.encode()}, 409),
    ('put-blueprint-stock-other-case', 'PUT', '/blueprints/dEMO', {'content': VALID_BLUEPRINT.encode()}, 409),
    ('put-blueprint-oversized', 'PUT', '/blueprints/Huge', {'content': OVERSIZED}, 413),
    ('put-blueprint-oversized-chunked', 'PUT', '/blueprints/Huge', {'content': _chunks(OVERSIZED)}, 413),
    ('put-blueprint-nul', 'PUT', '/blueprints/Nul', {'content': b'echo a\x00b\n'}, 422),
    ('put-blueprint-not-utf8', 'PUT', '/blueprints/Latin', {'content': b'echo caf\xe9\n'}, 422),
    ('put-blueprint-blank', 'PUT', '/blueprints/Blank', {'content': b'  \n\t\n'}, 422),
    ('put-blueprint-unclosed-meta', 'PUT', '/blueprints/Open', {'content': b'### AIKORE-METADATA-START ###\n'}, 422),
    (
        'put-blueprint-bad-ready',
        'PUT',
        '/blueprints/Ready',
        {'content': b'# x\n' + VALID_BLUEPRINT.encode().replace(b'# aikore.name = Hostile', b'# aikore.ready = log:(')},
        422,
    ),
    ('put-blueprint-hidden', 'PUT', '/blueprints/.hidden', {'content': VALID_BLUEPRINT.encode()}, 422),
    ('put-blueprint-dotdot', 'PUT', '/blueprints/%2E%2E', {'content': VALID_BLUEPRINT.encode()}, {404, 405, 422}),
    (
        'put-blueprint-traversal',
        'PUT',
        '/blueprints/..%2F..%2Fevil',
        {'content': VALID_BLUEPRINT.encode()},
        {404, 405, 422},
    ),
    ('get-blueprint-traversal', 'GET', '/blueprints/..%2F..%2Fetc%2Fpasswd', {}, {404, 422}),
    ('get-blueprint-functions', 'GET', '/blueprints/functions', {}, {404, 422}),
    ('delete-blueprint-stock', 'DELETE', '/blueprints/Demo', {}, 403),
    ('delete-blueprint-unknown', 'DELETE', '/blueprints/NoSuchBlueprint', {}, 404),
    # --- the instance victim
    ('put-script-oversized', 'PUT', '/instances/{victim}/script', {'content': OVERSIZED}, 413),
    ('put-script-oversized-chunked', 'PUT', '/instances/{victim}/script', {'content': _chunks(OVERSIZED)}, 413),
    ('put-script-nul', 'PUT', '/instances/{victim}/script', {'content': b'#!/bin/bash\necho a\x00b\n'}, 422),
    ('put-script-not-utf8', 'PUT', '/instances/{victim}/script', {'content': b'echo \xff\xfe\n'}, 422),
    ('put-script-blank', 'PUT', '/instances/{victim}/script', {'content': b'\n\n'}, 422),
    ('patch-name-traversal', 'PATCH', '/instances/{victim}', {'json': {'name': '../x'}}, 422),
    ('patch-name-shell', 'PATCH', '/instances/{victim}', {'json': {'name': 'x;reboot'}}, 422),
    ('patch-name-null', 'PATCH', '/instances/{victim}', {'json': {'name': None}}, 422),
    ('patch-gpu-negative', 'PATCH', '/instances/{victim}', {'json': {'autostart': True, 'gpu_ids': [-1]}}, 422),
    ('patch-port-0', 'PATCH', '/instances/{victim}', {'json': {'autostart': True, 'public_port': 0}}, 422),
    ('patch-output-traversal', 'PATCH', '/instances/{victim}', {'json': {'output_path': '../../etc'}}, 422),
    ('patch-blueprint-unknown', 'PATCH', '/instances/{victim}', {'json': {'blueprint': 'NoSuchBlueprint'}}, 404),
    ('patch-blueprint-traversal', 'PATCH', '/instances/{victim}', {'json': {'blueprint': '../../etc/passwd'}}, 422),
    (
        'patch-rename-then-bad-port',
        'PATCH',
        '/instances/{victim}',
        {'json': {'name': 'renamed', 'public_port': 80}},
        422,
    ),
    (
        'patch-rename-then-bad-blueprint',
        'PATCH',
        '/instances/{victim}',
        {'json': {'name': 'renamed', 'blueprint': 'Nope'}},
        404,
    ),
    ('patch-access-pattern', 'PATCH', '/instances/{victim}', {'json': {'access_pattern': 'file'}}, 422),
    ('logs-negative-offset', 'GET', '/instances/{victim}/logs', {'params': {'offset': -1}}, 422),
    ('logs-text-offset', 'GET', '/instances/{victim}/logs', {'params': {'offset': 'abc'}}, 422),
    ('instance-id-text', 'GET', '/instances/abc', {}, 422),
    ('instance-id-unknown', 'GET', '/instances/999999', {}, 404),
    ('start-unknown', 'POST', '/instances/999999/start', {}, 404),
    ('delete-unknown', 'DELETE', '/instances/999999', {}, 404),
    ('get-id-beyond-int64', 'GET', f'/instances/{2**63}', {}, {404, 422}),
    ('patch-id-beyond-int64', 'PATCH', f'/instances/{2**63}', {'json': {'autostart': True}}, {404, 422}),
    ('delete-id-beyond-int64', 'DELETE', f'/instances/{2**63}', {}, {404, 422}),
    ('start-id-beyond-int64', 'POST', f'/instances/{2**63}/start', {}, {404, 422}),
    ('put-script-id-beyond-int64', 'PUT', f'/instances/{2**63}/script', {'content': b'echo hi\n'}, {404, 422}),
    # --- trash
    ('restore-traversal', 'POST', '/trash/..%2Fx/restore', {}, {404, 422}),
    ('restore-dotdot', 'POST', '/trash/%2E%2E/restore', {}, {404, 422}),
    ('restore-shell', 'POST', '/trash/x;id/restore', {}, 422),
    ('restore-unknown', 'POST', '/trash/NoSuchEntry/restore', {}, 404),
    ('purge-dotdot', 'DELETE', '/trash/%2E%2E', {}, {404, 422}),
    ('purge-instances-dir', 'DELETE', '/trash/..%2Finstances%2Fvictim', {}, {404, 422}),
    ('purge-unknown', 'DELETE', '/trash/victim', {}, 404),
]


# ---------------------------------------------------------------- the state a hostile request must not touch


def instance_rows(data_dir: Path) -> list[tuple[Any, ...]]:
    """Every row of the instances table, read through a read-only connection."""
    conn = sqlite3.connect(f'file:{data_dir / "aikore.db"}?mode=ro', uri=True)
    try:
        return conn.execute('SELECT * FROM instances ORDER BY id').fetchall()
    finally:
        conn.close()


def tree(root: Path, skip: set[Path] | None = None) -> set[str]:
    """Relative paths of everything under ``root`` (folders included), minus ``skip`` subtrees."""
    found = set()
    for path in root.rglob('*'):
        if skip and any(path == s or s in path.parents for s in skip):
            continue
        found.add(str(path.relative_to(root)))
    return found


def data_tree(data_dir: Path) -> set[str]:
    return {name for name in tree(data_dir) if not name.endswith(('aikore.db-wal', 'aikore.db-shm'))}


def outside_tree(data_dir: Path) -> set[str]:
    """What lies beside the data directory, the panel's own log file excepted."""
    parent = data_dir.parent
    return {
        name
        for name in tree(parent, skip={data_dir})
        if not (Path(name).name.startswith('panel-') and name.endswith('.log'))
    }


def stock_digest() -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(STOCK_BLUEPRINTS_DIR.iterdir())
        if p.is_file()
    }


@dataclass
class Target:
    panel: Panel
    victim: dict[str, Any]
    rows: list[tuple[Any, ...]]
    data: set[str]
    outside: set[str]
    script: bytes
    stock: dict[str, str]

    @property
    def script_path(self) -> Path:
        return self.panel.data_dir / 'instances' / self.victim['name'] / 'launch.sh'


@pytest.fixture(scope='module')
def target(shared_panel: Panel) -> Target:
    victim = shared_panel.create('victim', 'Demo')
    data_dir = shared_panel.data_dir
    script = data_dir / 'instances' / 'victim' / 'launch.sh'
    assert script.is_file(), 'creating an instance writes <data>/instances/<name>/launch.sh'
    return Target(
        panel=shared_panel,
        victim=victim,
        rows=instance_rows(data_dir),
        data=data_tree(data_dir),
        outside=outside_tree(data_dir),
        script=script.read_bytes(),
        stock=stock_digest(),
    )


def _resolve(target: Target, path: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    low, high = (int(x) for x in target.panel.env['AIKORE_PORT_RANGE'].split('-'))
    path = path.replace('{victim}', str(target.victim['id']))
    if 'json' in kwargs and isinstance(kwargs['json'], dict):
        markers = {ABOVE_RANGE: high + 1, BELOW_RANGE: low - 1}
        body = {
            key: markers.get(value, value) if isinstance(value, str) else value for key, value in kwargs['json'].items()
        }
        kwargs = {**kwargs, 'json': body}
    if 'content' in kwargs and not isinstance(kwargs['content'], bytes):
        kwargs = {**kwargs, 'content': _chunks(OVERSIZED)}  # a generator is used up once: make a new one
    return path, kwargs


def assert_human_detail(body: Any, case: str) -> None:
    assert isinstance(body, dict) and 'detail' in body, f'{case}: the error body must be JSON with "detail": {body!r}'
    detail = body['detail']
    if isinstance(detail, list):  # FastAPI's request validation form
        assert detail, f'{case}: an empty list of validation errors explains nothing'
        for item in detail:
            assert isinstance(item, dict), f'{case}: each validation error is an object: {item!r}'
            assert isinstance(item.get('msg'), str) and item['msg'].strip(), f'{case}: validation error without msg'
        return
    assert isinstance(detail, str), f'{case}: detail must be a sentence (string) or the 422 list: {detail!r}'
    assert detail.strip() and any(ch.isalpha() for ch in detail), f'{case}: detail must be a human sentence: {detail!r}'
    assert 'Traceback' not in detail, f'{case}: a traceback leaked into the answer: {detail!r}'


@pytest.mark.parametrize(('method', 'path', 'kwargs', 'expected'), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_request_is_refused(
    target: Target, method: str, path: str, kwargs: dict[str, Any], expected: int | set[int]
) -> None:
    path, kwargs = _resolve(target, path, kwargs)
    allowed = expected if isinstance(expected, set) else {expected}
    panel = target.panel
    # A fresh connection per case: a server error on one must not break the next through keep-alive.
    with httpx.Client(base_url=panel.client.base_url, headers=panel.client.headers, timeout=15) as client:
        response = client.request(method, path, **kwargs)
    assert response.status_code < 500, (
        f'APP BUG: {method} {path} answered {response.status_code} to bad input (API.md "Errors": never 500 for '
        f'bad input; expected {sorted(allowed)}): {response.text[:200]}'
    )
    assert response.status_code in allowed, (
        f'{method} {path}: expected {sorted(allowed)}, got {response.status_code}: {response.text[:300]}'
    )
    assert response.headers.get('content-type', '').startswith('application/json'), response.headers
    assert_human_detail(response.json(), f'{method} {path}')


def test_table_covers_the_contract() -> None:
    """The table keeps at least the cases the contract's status codes call for."""
    codes = {c[4] for c in CASES if isinstance(c[4], int)}
    assert {403, 404, 409, 413, 422} <= codes
    assert len(CASES) >= 25


def test_nothing_changed(target: Target) -> None:
    """Runs after every case above (file order): the refused requests left no trace."""
    panel = target.panel
    data_dir = panel.data_dir
    # (a) the instances table, row for row
    assert instance_rows(data_dir) == target.rows, 'a refused request changed the instances table'
    assert [i['name'] for i in panel.client.get('/instances').json()] == ['victim']
    current = panel.instance(target.victim['id'])
    for key in ('name', 'blueprint', 'gpu_ids', 'autostart', 'public_port', 'output_path', 'status', 'access_pattern'):
        assert current[key] == target.victim[key], f'victim.{key} changed: {target.victim[key]!r} -> {current[key]!r}'
    # (b) no file written beside the data directory, none added or removed inside it
    assert outside_tree(data_dir) == target.outside, 'a refused request wrote next to the data directory'
    assert data_tree(data_dir) == target.data, (
        f'files changed in the data directory: added {sorted(data_tree(data_dir) - target.data)}, '
        f'removed {sorted(target.data - data_tree(data_dir))}'
    )
    assert not any((data_dir / 'blueprints').iterdir()), 'a refused request created a custom blueprint'
    assert stock_digest() == target.stock, 'a stock blueprint file was modified'
    # (c) no process started
    assert processes_under(data_dir) == [], 'a refused request started a process'
    # (d) victim's launch script untouched
    assert target.script_path.read_bytes() == target.script, "victim's launch.sh was modified"
    assert not target.script_path.with_name('launch.sh.bak').exists(), "victim's launch.sh was replaced"


def test_reserved_blueprint_name_is_refused_or_usable(target: Target) -> None:
    """``functions`` names the shared helper file: a custom blueprint by that name would be invisible.

    Runs after ``test_nothing_changed`` because, with the bug, it leaves a file behind.
    """
    client = target.panel.client
    response = client.put('/blueprints/functions', content=VALID_BLUEPRINT.encode())
    if 400 <= response.status_code < 500:
        assert_human_detail(response.json(), 'PUT /blueprints/functions')
        return
    listed = [b['name'] for b in client.get('/blueprints').json()]
    assert client.get('/blueprints/functions').status_code == 200 and 'functions' in listed, (
        f'APP BUG (app/services/blueprints.py put_custom): PUT /blueprints/functions answered '
        f'{response.status_code} and wrote <data>/blueprints/functions.sh, but the library skips that file name '
        f'(_scan ignores functions.sh): GET answers 404 and the list {listed} lacks it; expected a 409/422 '
        f'refusal of the reserved name'
    )
