"""Instance families and environments, with real panels and processes: a clone of an instance
with a venv runs with a venv of its own (the source unchanged), a cancelled clone leaves
nothing, a satellite runs from its parent's folder on its own port with its own log, a parent
cannot be deleted or renamed, a rebuild re-creates the venv at the next start, versions reports
the environment's Python and pins reach pip (PIP_CONSTRAINT)."""

from __future__ import annotations

import re
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import Panel, blueprint, wait_for

# A blueprint with a real venv made by functions.sh; it says what it sees, then serves HTTP
# from the venv's interpreter. A run that is not a satellite leaves a marker inside the venv.
VENV_BLUEPRINT = blueprint(
    'set -euo pipefail\n'
    'source "$AIKORE_FUNCTIONS"\n'
    'aikore_venv_create "$INSTANCE_DIR/venv" python3\n'
    'if ! aikore_is_satellite && [[ ! -e "$VIRTUAL_ENV/first-run" ]]; then date +%s%N >"$VIRTUAL_ENV/first-run"; fi\n'
    'echo "VENV=$VIRTUAL_ENV"\n'
    'echo "PIN=${PIP_CONSTRAINT:-none}"\n'
    'echo "SATELLITE=${AIKORE_SATELLITE_DIR:-none} OUTPUT=$INSTANCE_OUTPUT_DIR"\n'
    'exec python -u -m http.server --bind 127.0.0.1 "$WEBUI_PORT"',
    stall_timeout=120,
    name='VenvApp',
)
START_TIMEOUT = 120.0  # a venv is created at the first start (several seconds on a busy machine)


@pytest.fixture(scope='module')
def family_panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    # Offline: pip's self-upgrade in aikore_venv_create fails at once instead of retrying the network.
    panel = Panel(tmp_path_factory.mktemp('families') / 'data', AIKORE_NGINX='off', PIP_NO_INDEX='1').start()
    try:
        panel.put_blueprint('VenvApp', VENV_BLUEPRINT)
        yield panel
    finally:
        panel.stop()


@pytest.fixture(scope='module')
def source(family_panel: Panel) -> dict[str, Any]:
    """A running instance whose venv exists (made at its first start)."""
    instance = family_panel.create('src', 'VenvApp')
    assert instance['parent_id'] is None
    start(family_panel, instance['id'])
    return instance


def start(panel: Panel, instance_id: int) -> dict[str, Any]:
    response = panel.client.post(f'/instances/{instance_id}/start')
    assert response.status_code == 202, response.text
    return panel.wait_status(instance_id, 'started', timeout=START_TIMEOUT)


def stop(panel: Panel, instance_id: int) -> None:
    assert panel.client.post(f'/instances/{instance_id}/stop').status_code == 202
    panel.wait_status(instance_id, 'stopped', timeout=30)


def log_text(panel: Panel, instance_id: int) -> str:
    return str(panel.client.get(f'/instances/{instance_id}/logs').json()['text'])


def said(panel: Panel, instance_id: int, key: str) -> str:
    """The value the blueprint printed as ``KEY=value`` in its current run."""
    found = wait_for(lambda: re.search(rf'^{key}=(\S+)', log_text(panel, instance_id), re.M), 20, what=key)
    return found.group(1)


def folder(panel: Panel, name: str) -> Path:
    return panel.data_dir / 'instances' / name


def test_pins_are_validated_and_reach_pip(family_panel: Panel, source: dict[str, Any]) -> None:
    client = family_panel.client
    pins_url = f'/instances/{source["id"]}/pins'
    assert client.get(pins_url).text == ''
    bad = client.put(pins_url, content=b'torch==2.7.1\nthis is not a requirement!\n')
    assert bad.status_code == 422 and 'Line 2' in bad.json()['detail']
    assert client.put(pins_url, content=b'# keep torch\ntorch==2.7.1\nnumpy<2\n').status_code == 204
    assert 'numpy<2' in client.get(pins_url).text
    pins = folder(family_panel, 'src') / 'pins.txt'
    assert pins.read_text() == '# keep torch\ntorch==2.7.1\nnumpy<2\n'
    stop(family_panel, source['id'])
    start(family_panel, source['id'])
    assert said(family_panel, source['id'], 'PIN') == str(pins)


def test_versions_report_the_environments_python(family_panel: Panel, source: dict[str, Any]) -> None:
    venv = folder(family_panel, 'src') / 'venv'
    expected = subprocess.run(
        [str(venv / 'bin' / 'python'), '-c', 'import platform; print(platform.python_version())'],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    response = family_panel.client.get(f'/instances/{source["id"]}/versions', timeout=90)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report['environment'] == str(venv.resolve())
    assert report['python'] == expected
    assert report['torch'] is None and report['xformers'] is None and report['cuda'] is None
    assert report['pip_check'] == []


def test_clone_of_a_running_instance_gets_its_own_venv(family_panel: Panel, source: dict[str, Any]) -> None:
    client = family_panel.client
    src_dir = folder(family_panel, 'src')
    # An absolute path to the source's folder in its script is rewritten in the clone's.
    script = client.get(f'/instances/{source["id"]}/script').text
    script = script.replace('set -euo pipefail\n', f'set -euo pipefail\n# data lives in {src_dir}/data\n', 1)
    assert client.put(f'/instances/{source["id"]}/script', content=script.encode()).status_code == 204
    src_marker = (src_dir / 'venv' / 'first-run').read_text()
    (src_dir / 'data').mkdir()
    (src_dir / 'data' / 'notes.txt').write_text('kept')

    response = client.post(f'/instances/{source["id"]}/clone', json={'name': 'copy'})
    assert response.status_code == 201, response.text
    clone = response.json()
    assert clone['status'] == 'installing' and clone['blueprint'] == 'VenvApp'
    family_panel.wait_status(clone['id'], 'stopped', timeout=60)

    clone_dir = folder(family_panel, 'copy')
    assert (clone_dir / 'data' / 'notes.txt').read_text() == 'kept'
    assert (clone_dir / 'pins.txt').is_file()
    assert not (clone_dir / 'venv').exists(), 'the environment is rebuilt, never copied'
    assert f'# data lives in {clone_dir}/data' in (clone_dir / 'launch.sh').read_text()
    assert 'Copied ' in log_text(family_panel, clone['id'])

    start(family_panel, clone['id'])
    assert said(family_panel, clone['id'], 'VENV') == str(clone_dir / 'venv')
    assert said(family_panel, clone['id'], 'PIN') == str(clone_dir / 'pins.txt')
    # The source is as it was, and still running.
    assert (src_dir / 'venv' / 'first-run').read_text() == src_marker
    assert f'{src_dir}/data' in (src_dir / 'launch.sh').read_text()
    assert family_panel.instance(source['id'])['status'] == 'started'
    stop(family_panel, clone['id'])


def test_cancelled_clone_leaves_nothing(family_panel: Panel, source: dict[str, Any]) -> None:
    bulk = folder(family_panel, 'src') / 'bulk'
    bulk.mkdir(exist_ok=True)
    for index in range(20000):  # enough files that the copy is still running when it is cancelled
        (bulk / f'{index}.txt').write_text('x' * 64)
    client = family_panel.client
    response = client.post(f'/instances/{source["id"]}/clone', json={'name': 'doomed'})
    assert response.status_code == 201, response.text
    clone = response.json()
    assert client.post(f'/instances/{clone["id"]}/cancel').status_code == 204
    assert client.get(f'/instances/{clone["id"]}').status_code == 404
    assert not folder(family_panel, 'doomed').exists()
    assert not (family_panel.data_dir / 'trash' / 'doomed').exists()
    assert 'doomed' not in [entry['name'] for entry in client.get('/trash').json()]


def test_satellite_runs_the_parents_folder_on_its_own_port(family_panel: Panel, source: dict[str, Any]) -> None:
    client = family_panel.client
    parent_id = source['id']
    src_dir = folder(family_panel, 'src')
    before = sorted(path.name for path in src_dir.iterdir())
    response = client.post(f'/instances/{parent_id}/satellites', json={'name': 'sat'})
    assert response.status_code == 201, response.text
    sat = response.json()
    assert sat['parent_id'] == parent_id and sat['blueprint'] == 'VenvApp'
    running = start(family_panel, sat['id'])
    parent = family_panel.instance(parent_id)
    assert parent['status'] == 'started' and running['internal_port'] != parent['internal_port']

    sat_dir = folder(family_panel, 'sat')
    assert said(family_panel, sat['id'], 'VENV') == str(src_dir / 'venv')
    assert said(family_panel, sat['id'], 'SATELLITE') == str(sat_dir)
    assert 'VENV=' in (sat_dir / 'logs' / 'output.log').read_text()
    server = psutil.Process(running['pid']).children(recursive=True)[-1]
    assert server.cwd() == str(src_dir)
    assert sorted(path.name for path in src_dir.iterdir()) == before, 'nothing written into the parent'
    assert [item['name'] for item in client.get(f'/instances/{parent_id}/satellites').json()] == ['sat']

    # Each run has its own notes FIFO, and the parent's outlives the satellite's run.
    notes = family_panel.data_dir / 'notes'
    wait_for(lambda: (notes / 'sat.fifo').is_fifo() and (notes / 'src.fifo').is_fifo(), 20, what='both FIFOs')
    stop(family_panel, sat['id'])
    wait_for(lambda: not (notes / 'sat.fifo').exists(), 20, what="the satellite's FIFO removed")
    assert (notes / 'src.fifo').is_fifo(), "the parent's FIFO is its own"
    start(family_panel, sat['id'])

    # A parent with satellites is neither deleted nor renamed; no satellite of a satellite.
    stop(family_panel, parent_id)
    refused = client.delete(f'/instances/{parent_id}')
    assert refused.status_code == 409 and refused.json()['satellites'] == ['sat']
    assert client.patch(f'/instances/{parent_id}', json={'name': 'moved'}).status_code == 409
    assert client.post(f'/instances/{sat["id"]}/satellites', json={'name': 'moon'}).status_code == 409
    assert client.post(f'/instances/{sat["id"]}/clone', json={'name': 'twin'}).status_code == 409
    assert src_dir.is_dir()

    # Rebuilding the parent's environment stops its running satellites, once confirmed.
    rebuild = client.post(f'/instances/{parent_id}/rebuild-env')
    assert rebuild.status_code == 409 and rebuild.json()['satellites'] == ['sat']
    assert family_panel.instance(sat['id'])['status'] == 'started'
    confirmed = client.post(f'/instances/{parent_id}/rebuild-env', params={'stop_satellites': 'true'})
    assert confirmed.status_code == 200 and confirmed.json()['stopped_satellites'] == ['sat']
    assert family_panel.instance(sat['id'])['status'] == 'stopped'
    assert (src_dir / '.rebuild').is_file()

    # While the rebuild is pending, no satellite starts on the environment it will delete...
    refused = client.post(f'/instances/{sat["id"]}/start')
    assert refused.status_code == 409 and "start 'src' first" in refused.json()['detail']
    assert family_panel.instance(sat['id'])['status'] == 'stopped'
    # ...and the parent does not rebuild under a running satellite (one started before the request).
    (src_dir / '.rebuild').rename(src_dir / 'rebuild.held')
    start(family_panel, sat['id'])
    (src_dir / 'rebuild.held').rename(src_dir / '.rebuild')
    refused = client.post(f'/instances/{parent_id}/start')
    assert refused.status_code == 409 and refused.json()['satellites'] == ['sat']
    assert family_panel.instance(parent_id)['status'] == 'stopped'
    stop(family_panel, sat['id'])


def test_rebuild_recreates_the_venv_at_the_next_start(family_panel: Panel, source: dict[str, Any]) -> None:
    src_dir = folder(family_panel, 'src')
    venv = src_dir / 'venv'
    if not (src_dir / '.rebuild').exists():  # when run alone
        assert family_panel.instance(source['id'])['status'] == 'started'
        stop(family_panel, source['id'])
        assert family_panel.client.post(f'/instances/{source["id"]}/rebuild-env').status_code == 200
    marker = (venv / 'first-run').read_text()
    assert family_panel.instance(source['id'])['status'] == 'stopped'
    start(family_panel, source['id'])
    assert 'rebuild requested' in log_text(family_panel, source['id'])
    assert not (src_dir / '.rebuild').exists()
    assert (venv / 'first-run').read_text() != marker
    stop(family_panel, source['id'])


def test_a_copy_cut_short_by_the_panel_is_an_error_after_restart(family_panel: Panel, source: dict[str, Any]) -> None:
    client = family_panel.client
    assert client.post(f'/instances/{source["id"]}/cancel').status_code == 409, 'not being copied'
    bulk = folder(family_panel, 'src') / 'bulk'
    bulk.mkdir(exist_ok=True)
    for index in range(20000):
        (bulk / f'{index}.txt').write_text('x' * 64)
    response = client.post(f'/instances/{source["id"]}/clone', json={'name': 'cut'})
    assert response.status_code == 201, response.text
    family_panel.kill()
    family_panel.start()
    clone = family_panel.instance(response.json()['id'])
    assert clone['status'] == 'error'
    assert 'cut short' in log_text(family_panel, clone['id'])
    assert client.delete(f'/instances/{clone["id"]}').status_code == 204


def test_versions_check_runs_without_the_panels_secrets(family_panel: Panel) -> None:
    """The environment's interpreter is instance code: it sees neither the API token nor the password."""
    instance = family_panel.create('envspy', 'VenvApp')
    venv = folder(family_panel, 'envspy') / 'venv'
    (venv / 'bin').mkdir(parents=True)
    (venv / 'pyvenv.cfg').write_text('home = /usr/bin\n')
    seen = venv / 'seen.env'
    python = venv / 'bin' / 'python'
    python.write_text(f'#!/bin/sh\nenv >>{seen}\necho \'{{"python": "3.0.0", "pip": "1.0"}}\'\n')
    python.chmod(0o755)
    response = family_panel.client.get(f'/instances/{instance["id"]}/versions', timeout=90)
    assert response.status_code == 200, response.text
    assert response.json()['python'] == '3.0.0'
    variables = seen.read_text()
    assert variables.count('PIP_NO_INPUT=1') == 1, 'both the probe and pip check ran'
    assert family_panel.token not in variables
    assert 'AIKORE_API_TOKEN' not in variables and 'AIKORE_PASSWORD' not in variables
    assert family_panel.client.delete(f'/instances/{instance["id"]}').status_code == 204


def test_restore_keeps_the_parent_and_the_host_name_while_they_are_still_valid(family_panel: Panel) -> None:
    client = family_panel.client
    parent = family_panel.create('home', 'VenvApp')
    made = client.post(f'/instances/{parent["id"]}/satellites', json={'name': 'orbit'})
    assert made.status_code == 201, made.text
    moon = made.json()
    patched = client.patch(f'/instances/{moon["id"]}', json={'custom_hostname': 'orbit.example.lan'})
    assert patched.status_code == 200, patched.text

    assert client.delete(f'/instances/{moon["id"]}').status_code == 204
    restored = client.post('/trash/orbit/restore')
    assert restored.status_code == 201, restored.text
    assert restored.json()['parent_id'] == parent['id']
    assert restored.json()['custom_hostname'] == 'orbit.example.lan'

    # Its parent gone and its host name taken meanwhile: it comes back on its own, without the name.
    assert client.delete(f'/instances/{restored.json()["id"]}').status_code == 204
    assert client.delete(f'/instances/{parent["id"]}').status_code == 204
    other = family_panel.create('squatter', 'VenvApp')
    assert client.patch(f'/instances/{other["id"]}', json={'custom_hostname': 'orbit.example.lan'}).status_code == 200
    alone = client.post('/trash/orbit/restore')
    assert alone.status_code == 201, alone.text
    assert alone.json()['parent_id'] is None and alone.json()['custom_hostname'] is None
    for instance_id in (alone.json()['id'], other['id']):
        assert client.delete(f'/instances/{instance_id}').status_code == 204


def test_a_source_being_cloned_is_neither_deleted_nor_renamed_and_a_cancel_is_prompt(family_panel: Panel) -> None:
    client = family_panel.client
    source = family_panel.create('bigsrc', 'VenvApp')
    with (folder(family_panel, 'bigsrc') / 'huge.bin').open('wb') as handle:
        handle.truncate(2**40)  # 1 TiB of holes: the copy reads it for hours, writing nothing
    # Should the copy write the holes, the panel's writes fail at 1 GiB instead of filling the disk.
    assert family_panel.process is not None
    pid = family_panel.process.pid
    limits = resource.prlimit(pid, resource.RLIMIT_FSIZE, (2**30, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        response = client.post(f'/instances/{source["id"]}/clone', json={'name': 'bigcopy'})
        assert response.status_code == 201, response.text
        clone = response.json()
        wait_for(lambda: (folder(family_panel, 'bigcopy') / 'huge.bin').exists(), 30, what='the copy under way')
        _refused_while_cloned(family_panel, source['id'], clone['id'])
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)
    assert client.patch(f'/instances/{source["id"]}', json={'name': 'moved'}).status_code == 200
    (folder(family_panel, 'moved') / 'huge.bin').unlink()
    assert client.delete(f'/instances/{source["id"]}').status_code == 204


def _refused_while_cloned(family_panel: Panel, source_id: int, clone_id: int) -> None:
    """Delete and rename of the source are refused while its clone is copied; a cancel is prompt."""
    client = family_panel.client

    deleted = client.delete(f'/instances/{source_id}')
    assert deleted.status_code == 409 and 'being cloned' in deleted.json()['detail']
    renamed = client.patch(f'/instances/{source_id}', json={'name': 'moved'})
    assert renamed.status_code == 409 and 'being cloned' in renamed.json()['detail']
    assert folder(family_panel, 'bigsrc').is_dir()
    asked = time.monotonic()
    assert client.post(f'/instances/{clone_id}/cancel', timeout=30).status_code == 204
    assert time.monotonic() - asked < 10, 'the cancel waited for the whole file'
    assert not folder(family_panel, 'bigcopy').exists()
