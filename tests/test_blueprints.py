"""Blueprints: the metadata parser, discovery of stock and custom scripts, custom CRUD
through the API, and shellcheck on every stock script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from app.config import STOCK_BLUEPRINTS_DIR
from app.services.catalog.blueprints import BlueprintError, BlueprintStore, parse_metadata
from tests.helpers import Panel, blueprint

FULL = """#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = ComfyUI
# aikore.category = Image Generation
# aikore.description = Node-based Stable Diffusion UI
# aikore.venv_type = conda
# aikore.venv_path = ./env
# aikore.ready = log:To see the GUI go to: http
# aikore.stall_timeout = 600
# aikore.custom_key = kept
### AIKORE-METADATA-END ###
echo hi
"""


def test_parser_reads_every_key() -> None:
    meta = parse_metadata(FULL, 'fallback')
    assert meta.name == 'ComfyUI'
    assert meta.category == 'Image Generation'
    assert meta.description == 'Node-based Stable Diffusion UI'
    assert (meta.venv_type, meta.venv_path) == ('conda', './env')
    assert meta.ready.kind == 'log' and meta.ready.pattern is not None
    assert meta.ready.pattern.search('To see the GUI go to: http://127.0.0.1:8188')
    assert meta.stall_timeout == 600
    assert meta.extra == {'custom_key': 'kept'}


def test_parser_defaults_without_a_block() -> None:
    meta = parse_metadata('#!/bin/bash\necho plain\n', 'Plain')
    assert (meta.name, meta.category, meta.ready.kind, meta.stall_timeout) == ('Plain', '', 'http', 180)


@pytest.mark.parametrize(('ready', 'kind'), [('http', 'http'), ('TCP', 'tcp'), ('none', 'none'), ('log:^ok$', 'log')])
def test_parser_ready_kinds(ready: str, kind: str) -> None:
    assert parse_metadata(blueprint('true', ready=ready), 'x').ready.kind == kind


@pytest.mark.parametrize(
    'script',
    [
        blueprint('true', ready='carrier-pigeon'),
        blueprint('true', ready='log:('),
        blueprint('true', ready='log:'),
        blueprint('true').replace('stall_timeout = 30', 'stall_timeout = soon'),
        blueprint('true').replace('stall_timeout = 30', 'stall_timeout = -5'),
        '### AIKORE-METADATA-START ###\n# aikore.name = x\n',
    ],
)
def test_parser_rejects_bad_metadata(script: str) -> None:
    with pytest.raises(BlueprintError):
        parse_metadata(script, 'x')


def test_stock_discovery() -> None:
    store = BlueprintStore(STOCK_BLUEPRINTS_DIR, Path('/nonexistent'))
    names = {bp.name: bp for bp in store.all()}
    assert {'Demo', 'ComfyUI', 'FluxGym'} <= set(names)
    assert 'functions' not in names
    assert all(bp.source == 'stock' for bp in names.values())
    assert names['Demo'].meta.ready.kind == 'http'
    assert store.get('demo').name == 'Demo'  # a unique case-insensitive match


def test_stock_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which('shellcheck')
    assert shellcheck, 'shellcheck is installed by `make setup`'
    scripts = sorted(str(p) for p in STOCK_BLUEPRINTS_DIR.glob('*.sh'))
    assert len(scripts) >= 4
    result = subprocess.run([shellcheck, '-x', *scripts], capture_output=True, text=True, cwd=STOCK_BLUEPRINTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_custom_blueprint_crud(panel: Panel) -> None:
    listed = {bp['name']: bp for bp in panel.client.get('/blueprints').json()}
    assert listed['Demo']['source'] == 'stock' and listed['Demo']['category'] == 'Demo'

    script = blueprint('echo mine', name='My Tool')
    assert panel.client.put('/blueprints/my-tool', content=script.encode()).status_code == 201
    assert (panel.data_dir / 'blueprints' / 'my-tool.sh').read_text() == script
    assert panel.client.get('/blueprints/my-tool').text == script
    mine = {bp['name']: bp for bp in panel.client.get('/blueprints').json()}['my-tool']
    assert mine == {**mine, 'source': 'custom', 'category': 'Test', 'display_name': 'My Tool'}

    replaced = script.replace('echo mine', 'echo changed')
    assert panel.client.put('/blueprints/my-tool', content=replaced.encode()).status_code == 204
    assert 'echo changed' in panel.client.get('/blueprints/my-tool').text

    conflict = panel.client.put('/blueprints/MY-TOOL', content=script.encode())
    assert conflict.status_code == 409 and 'my-tool' in conflict.json()['detail']
    stock = panel.client.put('/blueprints/demo', content=script.encode())
    assert stock.status_code == 409 and 'stock' in stock.json()['detail']
    invalid = panel.client.put('/blueprints/broken', content=blueprint('x', ready='maybe').encode())
    assert invalid.status_code == 422 and 'aikore.ready' in invalid.json()['detail']

    assert panel.client.get('/blueprints/Demo').text.startswith('#!/usr/bin/env bash')
    assert panel.client.delete('/blueprints/Demo').status_code == 403
    assert panel.client.delete('/blueprints/my-tool').status_code == 204
    assert panel.client.get('/blueprints/my-tool').status_code == 404
    assert panel.client.delete('/blueprints/my-tool').status_code == 404


LIBRARY = ('ComfyUI', 'FluxGym', 'JupyterLab', 'kohya_ss', 'InvokeAI', 'Forge', 'AIToolkit', 'OneTrainer')


@pytest.mark.parametrize('name', LIBRARY)
def test_library_blueprints_declare_what_they_need(name: str) -> None:
    """Each stock app of the library: a venv, a readiness check with a stall timeout fit for a
    first install, a path mode, what it needs (GPU, disk), and the port it is given."""
    text = (STOCK_BLUEPRINTS_DIR / f'{name}.sh').read_text()
    meta = parse_metadata(text, name)
    assert (meta.venv_type, meta.venv_path) == ('venv', './env')
    assert meta.ready.kind == 'http' and meta.stall_timeout >= 600
    assert meta.path_mode in {'keep', 'strip', 'none'}
    assert meta.extra['gpu'] in {'required', 'optional', 'none'}
    assert meta.extra['disk'].endswith('GB')
    assert '127.0.0.1' in text and 'WEBUI_PORT' in text and 'MODELS_DIR' in text
    assert 'source "${AIKORE_FUNCTIONS}"' in text
