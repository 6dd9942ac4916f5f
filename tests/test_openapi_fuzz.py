"""The OpenAPI document tells the truth: a bounded Schemathesis run against a real panel finds
no server error, no undocumented status code or content type, and no answer off its schema."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Panel

SCHEMATHESIS = Path(sys.executable).with_name('st')
CHECKS = 'not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance'


@pytest.fixture(scope='module')
def fuzzed_panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    # Its API token comes from the environment (AIKORE_API_TOKEN, set by Panel), so a fuzzed
    # POST /account/token answers 409 and the fuzzer never locks itself out; no operation is excluded.
    panel = Panel(tmp_path_factory.mktemp('fuzz') / 'data', AIKORE_STOP_ON_EXIT='1', AIKORE_NGINX='off').start()
    try:
        panel.create('fuzz-target')  # id 1: something for the operations on an instance to find
        yield panel
    finally:
        panel.stop()


def test_schema_documents_auth_errors_and_limits(fuzzed_panel: Panel) -> None:
    schema = fuzzed_panel.client.get('/openapi.json').json()
    assert schema['paths']['/health']['get']['security'] == [], '/api/health is open to all'
    for path, operations in schema['paths'].items():
        for method, operation in operations.items():
            if path != '/health':
                assert '401' in operation['responses'], f'{method.upper()} {path} does not document 401'
            if '{' in path:
                assert '404' in operation['responses'], f'{method.upper()} {path} does not document 404'
    create = schema['paths']['/instances']['post']['responses']
    assert {'201', '404', '409', '422'} <= set(create)
    assert 'oneOf' in create['422']['content']['application/json']['schema'], 'a 422 may carry a sentence'
    name = schema['components']['schemas']['InstanceCreate']['properties']['name']
    assert name['maxLength'] == 48 and name['pattern'].startswith('^[A-Za-z0-9]')
    interval = schema['components']['schemas']['Interval']['properties']['interval']
    assert (interval['minimum'], interval['maximum']) == (0.25, 10)


def test_fuzzed_api_stays_within_its_schema(fuzzed_panel: Panel, tmp_path: Path) -> None:
    assert SCHEMATHESIS.exists(), 'schemathesis is installed by `make test` (pyproject dev extras)'
    token = fuzzed_panel.token
    run = subprocess.run(
        [
            str(SCHEMATHESIS), 'run', f'{fuzzed_panel.url}/api/openapi.json?token={token}',
            '--url', f'{fuzzed_panel.url}/api',
            '-H', f'Authorization: Bearer {token}',
            '--max-examples', '25',
            '--phases', 'examples,coverage,fuzzing',
            '--checks', CHECKS,
            '--workers', '2',
            '--request-timeout', '20',
            '--no-color',
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, f'schemathesis found problems:\n{run.stdout[-12000:]}\n{run.stderr[-2000:]}'
    assert httpx.get(f'{fuzzed_panel.url}/api/health', timeout=5).status_code == 200, 'the panel survived'
