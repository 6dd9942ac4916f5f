"""Upgrading the original AiKore's ``/config`` (``aikore.db`` at schema 6 and its folders) in place.

Built here as the original panel left it: rows with a satellite, a custom host name, recorded
versions and a custom blueprint, folders with their own ``launch.sh`` (one without). After the
upgrade nothing is lost (backup, every row and id, folders and scripts reused, versions as pins,
the custom blueprint imported) and every instance starts; a seed-schema row starts too.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from app.db import SCHEMA_VERSION, SchemaError, prepare_database
from tests.helpers import REPO, Panel
from tests.test_migration import raw_rows, user_version, write_seed_db

SCHEMA6 = """
CREATE TABLE aikore_meta (key VARCHAR NOT NULL PRIMARY KEY, value VARCHAR NOT NULL);
CREATE INDEX ix_aikore_meta_key ON aikore_meta (key);
CREATE TABLE instances (
    id INTEGER NOT NULL PRIMARY KEY,
    parent_instance_id INTEGER,
    name VARCHAR NOT NULL,
    base_blueprint VARCHAR NOT NULL,
    gpu_ids VARCHAR,
    autostart BOOLEAN NOT NULL,
    persistent_mode BOOLEAN NOT NULL,
    hostname VARCHAR,
    use_custom_hostname BOOLEAN NOT NULL DEFAULT 0,
    output_path VARCHAR,
    python_version VARCHAR,
    cuda_version VARCHAR,
    torch_version VARCHAR,
    status VARCHAR NOT NULL,
    pid INTEGER,
    port INTEGER,
    persistent_port INTEGER,
    persistent_display INTEGER
);
CREATE INDEX ix_instances_id ON instances (id);
CREATE UNIQUE INDEX ix_instances_name ON instances (name);
"""
COLUMNS = (
    *('id', 'parent_instance_id', 'name', 'base_blueprint', 'gpu_ids', 'autostart', 'persistent_mode'),
    *('hostname', 'use_custom_hostname', 'output_path', 'python_version', 'cuda_version', 'torch_version'),
    *('status', 'pid', 'port', 'persistent_port', 'persistent_display'),
)
MARKER = '# launch.sh of the original AiKore, edited by its user'


def schema6_rows(elsewhere: Path) -> list[tuple[Any, ...]]:
    return [
        # a parent with a custom host name, versions and an output path in the old /config/outputs
        (1, None, 'comfy-main', 'Demo.sh', '0', 1, 0, 'Comfy.Example.LAN', 1, '/config/outputs/main-images',
         '3.11', '12.1', '2.3.1+cu121', 'started', 424242, 50001, None, None),
        # its satellite, with no launch.sh in its folder
        (2, 1, 'comfy-gpu1', 'Demo.sh', '1', 0, 0, None, 0, None, None, None, None, 'stopped', None, 50002, None, None),
        # an invalid name, a custom blueprint, a host name it did not use, outputs elsewhere on disk
        (3, None, 'My Trainer!', 'MyDemo.sh', None, 0, 1, 'trainer.lan', 0, str(elsewhere), None, 'n/a', '', 'error',
         None, 50003, 19001, 3),
    ]  # fmt: skip


def write_schema6(config: Path, elsewhere: Path) -> None:
    """``/config`` as the original AiKore (schema 6) leaves it."""
    demo = (REPO / 'blueprints' / 'Demo.sh').read_text()
    (config / 'custom_blueprints').mkdir(parents=True)
    (config / 'custom_blueprints' / 'MyDemo.sh').write_text(demo.replace('aikore.name = Demo', 'aikore.name = MyDemo'))
    for name in ('comfy-main', 'My Trainer!'):
        folder = config / 'instances' / name
        folder.mkdir(parents=True)
        (folder / 'launch.sh').write_text(demo.replace('set -euo pipefail', f'{MARKER}\nset -euo pipefail', 1))
    (config / 'instances' / 'comfy-gpu1').mkdir()
    elsewhere.mkdir(parents=True)
    (elsewhere / 'old-image.png').write_bytes(b'png')
    with sqlite3.connect(config / 'aikore.db') as conn:
        conn.executescript(SCHEMA6)
        conn.execute("INSERT INTO aikore_meta (key, value) VALUES ('schema_version', '6')")
        marks = ', '.join('?' * len(COLUMNS))
        conn.executemany(f'INSERT INTO instances ({", ".join(COLUMNS)}) VALUES ({marks})', schema6_rows(elsewhere))
    conn.close()


def test_schema6_rows_and_folders_are_upgraded(tmp_path: Path) -> None:
    config, elsewhere = tmp_path / 'config', tmp_path / 'elsewhere' / 'trainer-out'
    write_schema6(config, elsewhere)
    db = config / 'aikore.db'
    original = raw_rows(db)

    prepare_database(db).dispose()

    [backup] = sorted(config.glob('aikore.db.v0-*.bak'))
    assert raw_rows(backup) == original, 'the backup holds the rows as the original panel left them'
    assert user_version(db) == SCHEMA_VERSION
    rows = {row['id']: row for row in raw_rows(db)}
    assert sorted(rows) == [1, 2, 3], 'every row kept, same ids'

    main, satellite, trainer = rows[1], rows[2], rows[3]
    assert (main['name'], main['blueprint'], main['parent_id']) == ('comfy-main', 'Demo', None)
    assert main['custom_hostname'] == 'comfy.example.lan'
    assert main['output_path'] == 'main-images'
    assert (main['public_port'], main['status'].lower(), main['pid'], main['autostart']) == (50001, 'stopped', None, 1)
    assert satellite['parent_id'] == 1, 'parent_instance_id becomes the satellite link'
    assert satellite['gpu_ids'] == '[1]' and satellite['output_path'] == 'comfy-gpu1'
    assert trainer['name'] == 'My-Trainer' and trainer['blueprint'] == 'MyDemo'
    assert trainer['custom_hostname'] is None, 'a host name the old panel did not use is not made public'
    assert (trainer['persistent'], trainer['persistent_port'], trainer['persistent_display']) == (1, 19001, 3)

    # folders and scripts reused; the renamed instance's folder follows its name
    assert MARKER in (config / 'instances' / 'comfy-main' / 'launch.sh').read_text()
    assert not (config / 'instances' / 'My Trainer!').exists()
    assert MARKER in (config / 'instances' / 'My-Trainer' / 'launch.sh').read_text()
    # outputs elsewhere stay there, reached through our outputs folder
    assert (config / 'outputs' / 'My-Trainer' / 'old-image.png').read_bytes() == b'png'
    # versions as pins (pip constraints); Python and CUDA kept as comments
    pins = (config / 'instances' / 'comfy-main' / 'pins.txt').read_text().splitlines()
    assert 'torch==2.3.1+cu121' in pins
    assert any('Python 3.11' in line for line in pins) and any('CUDA 12.1' in line for line in pins)
    assert all(line.startswith('#') or '==' in line for line in pins if line)
    assert not (config / 'instances' / 'My-Trainer' / 'pins.txt').exists(), "'n/a' and '' are no versions"
    # the custom blueprint imported
    assert (config / 'blueprints' / 'MyDemo.sh').read_text() == (config / 'custom_blueprints' / 'MyDemo.sh').read_text()

    prepare_database(db).dispose()
    assert {row['id']: row for row in raw_rows(db)} == rows, 'a second start changes nothing'
    assert len(list(config.glob('*.bak'))) == 1


def test_a_failed_folder_step_changes_nothing_and_the_next_start_finishes(tmp_path: Path) -> None:
    """A file where the blueprints folder goes: the upgrade stops with a clear sentence before
    the database changes; once it is moved away, the next start upgrades everything."""
    config, elsewhere = tmp_path / 'config', tmp_path / 'elsewhere' / 'trainer-out'
    write_schema6(config, elsewhere)
    db = config / 'aikore.db'
    original = raw_rows(db)
    (config / 'blueprints').write_text('in the way')
    with pytest.raises(SchemaError, match='The database is unchanged'):
        prepare_database(db).dispose()
    assert raw_rows(db) == original and user_version(db) == 0
    (config / 'blueprints').unlink()
    prepare_database(db).dispose()
    assert user_version(db) == SCHEMA_VERSION
    assert sorted(row['id'] for row in raw_rows(db)) == [1, 2, 3]
    assert (config / 'blueprints' / 'MyDemo.sh').is_file()
    assert 'torch==2.3.1+cu121' in (config / 'instances' / 'comfy-main' / 'pins.txt').read_text()


def test_upgraded_instances_start(tmp_path: Path) -> None:
    """The panel on the upgraded folder: the autostart parent runs from its own launch.sh, the
    satellite (no launch.sh of its own) runs its parent's, the custom-blueprint instance starts."""
    config = tmp_path / 'config'
    write_schema6(config, tmp_path / 'elsewhere' / 'trainer-out')
    panel = Panel(config, AIKORE_STOP_ON_EXIT='1', AIKORE_NGINX='off')
    try:
        panel.start()
        listed = {item['id']: item for item in panel.client.get('/instances').json()}
        assert sorted(listed) == [1, 2, 3]
        assert listed[1]['custom_hostname'] == 'comfy.example.lan'
        panel.wait_status(1, 'started')  # autostart, from its own (edited) launch.sh
        assert MARKER in panel.client.get('/instances/1/script').text
        for instance_id in (2, 3):
            response = panel.client.post(f'/instances/{instance_id}/start')
            assert response.status_code == 202, response.text
            panel.wait_status(instance_id, 'started')
        assert listed[2]['parent_id'] == 1
        assert not (config / 'instances' / 'comfy-gpu1' / 'launch.sh').exists(), "a satellite runs its parent's script"
        assert 'had no launch.sh' not in panel.log_text()
        assert panel.client.get('/blueprints/MyDemo').status_code == 200
    finally:
        panel.stop()


def test_seed_row_without_script_starts(tmp_path: Path) -> None:
    """A row upgraded from the seed schema has no launch.sh: its start copies the blueprint's."""
    data = tmp_path / 'data'
    row = (5, 'seeded', 'Demo.sh', None, 0, 0, 0, 'stopped', None, None, None, None, 'port')
    lost = (6, 'lost', 'Gone.sh', None, 0, 0, 0, 'stopped', None, None, None, None, 'port')
    write_seed_db(data / 'aikore.db', [row, lost])
    panel = Panel(data, AIKORE_STOP_ON_EXIT='1', AIKORE_NGINX='off')
    try:
        panel.start()
        response = panel.client.post('/instances/5/start')
        assert response.status_code == 202, response.text
        panel.wait_status(5, 'started')
        assert (data / 'instances' / 'seeded' / 'launch.sh').is_file()
        refused = panel.client.post('/instances/6/start')  # no script, and no blueprint to copy it from
        assert refused.status_code == 409 and 'save a launch script' in refused.json()['detail'], refused.text
    finally:
        panel.stop()
