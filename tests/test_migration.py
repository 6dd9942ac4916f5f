"""Upgrading the seed project's database (seed document, "Data Model") to AiKore's schema.

``app.db.prepare_database`` must keep every row (same ids), write a backup first, map the
seed's columns to ours (DESIGN "Concepts": persistent <- persistent_mode, public_port <- port,
persistent_port/display <- vnc_*), mark every instance stopped (the old panel's processes are
not ours), and be a no-op when run again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from app.db import SCHEMA_VERSION, SchemaError, prepare_database
from app.models import Instance
from app.services.catalog.validation import INSTANCE_NAME_RE
from tests.helpers import Panel

# The seed's table, column for column as the seed document's "Data Model" lists it. The two
# indexes are the ones the seed's SQLAlchemy model (``index=True``, ``unique=True``) created.
SEED_SCHEMA = """
CREATE TABLE instances (
    id INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    base_blueprint TEXT NOT NULL,
    gpu_ids TEXT,
    autostart BOOLEAN NOT NULL,
    persistent_mode BOOLEAN NOT NULL,
    is_comfyui_active_slot BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    port INTEGER,
    vnc_port INTEGER,
    vnc_display INTEGER,
    access_pattern TEXT NOT NULL
);
CREATE INDEX ix_instances_id ON instances (id);
CREATE UNIQUE INDEX ix_instances_name ON instances (name);
"""
COLUMNS = (
    'id',
    'name',
    'base_blueprint',
    'gpu_ids',
    'autostart',
    'persistent_mode',
    'is_comfyui_active_slot',
    'status',
    'pid',
    'port',
    'vnc_port',
    'vnc_display',
    'access_pattern',
)
SEED_ROWS: list[tuple[Any, ...]] = [
    (1, 'comfy-gpu0', 'comfyui.sh', '0,1', 1, 0, 1, 'started', 424242, 50001, None, None, 'port'),
    (2, 'FluxGym', 'FluxGym.sh', '1', 0, 1, 0, 'stopped', None, 50002, 19001, 2, 'subdomain'),
    (4, 'My Instance!', 'Demo.sh', '0, 2', 0, 0, 0, 'error', None, None, None, None, 'port'),
    (7, 'no-gpu', 'Demo.sh', None, 0, 0, 0, 'stalled', 31337, 50003, None, None, 'port'),
]


def write_seed_db(path: Path, rows: list[tuple[Any, ...]] = SEED_ROWS, user_version: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript(SEED_SCHEMA)
        conn.executemany(f'INSERT INTO instances ({", ".join(COLUMNS)}) VALUES ({", ".join("?" * len(COLUMNS))})', rows)
        conn.execute(f'PRAGMA user_version = {user_version}')
    conn.close()


def raw_rows(path: Path, table: str = 'instances') -> list[dict[str, Any]]:
    conn = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(f'SELECT * FROM {table} ORDER BY id')]
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
    try:
        return int(conn.execute('PRAGMA user_version').fetchone()[0])
    finally:
        conn.close()


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f'{path.name}.v0-*.bak'))


def migrate(path: Path) -> dict[int, Instance]:
    """``prepare_database`` on ``path``; the rows read back through the model, by id."""
    engine = prepare_database(path)
    try:
        with Session(engine) as session:
            return {row.id: row for row in session.exec(select(Instance)) if row.id is not None}
    finally:
        engine.dispose()


def test_seed_rows_are_upgraded(tmp_path: Path) -> None:
    db = tmp_path / 'aikore.db'
    write_seed_db(db)
    original = raw_rows(db)

    rows = migrate(db)

    # every row kept, same ids
    assert sorted(rows) == [1, 2, 4, 7]
    # a backup with the original rows, next to the database
    [backup] = backups(db)
    assert raw_rows(backup) == original, 'the backup holds the seed rows as they were'
    assert user_version(backup) == 0
    assert user_version(db) == SCHEMA_VERSION

    comfy = rows[1]
    assert (comfy.name, comfy.slug, comfy.blueprint) == ('comfy-gpu0', 'comfy-gpu0', 'comfyui')
    assert comfy.gpu_ids == [0, 1]
    assert comfy.autostart is True and comfy.persistent is False
    assert comfy.public_port == 50001
    assert comfy.access_pattern == 'port'
    assert comfy.status == 'stopped', 'a process of the old panel is not adopted'
    assert comfy.pid is None and comfy.pid_started_at is None and comfy.exit_code is None
    assert comfy.active is False and comfy.internal_port is None
    assert comfy.persistent_port is None and comfy.persistent_display is None

    flux = rows[2]
    assert (flux.name, flux.slug, flux.blueprint) == ('FluxGym', 'fluxgym', 'FluxGym')
    assert flux.gpu_ids == [1]
    assert flux.autostart is False and flux.persistent is True
    assert (flux.public_port, flux.persistent_port, flux.persistent_display) == (50002, 19001, 2)
    assert flux.access_pattern == 'subdomain'
    assert flux.status == 'stopped'

    renamed = rows[4]
    assert INSTANCE_NAME_RE.fullmatch(renamed.name), f'{renamed.name!r} is not a valid instance name'
    assert renamed.slug == renamed.name.lower()
    assert renamed.gpu_ids == [0, 2]
    assert renamed.blueprint == 'Demo'
    assert renamed.status == 'stopped'

    no_gpu = rows[7]
    assert no_gpu.gpu_ids == []
    assert no_gpu.status == 'stopped' and no_gpu.pid is None
    assert no_gpu.public_port == 50003

    for row in rows.values():
        assert INSTANCE_NAME_RE.fullmatch(row.name), row.name
        assert row.slug == row.name.lower()
        assert row.output_path and row.restart_policy == 'never'
        assert row.created_at is not None
    assert len({row.slug for row in rows.values()}) == len(rows), 'slugs are unique'
    conn = sqlite3.connect(f'file:{db}?mode=ro', uri=True)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert 'instances' in tables and 'instances_seed' not in tables, tables


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / 'aikore.db'
    write_seed_db(db)
    migrate(db)
    after_first = raw_rows(db)
    first_backups = backups(db)
    assert len(first_backups) == 1

    migrate(db)

    assert raw_rows(db) == after_first, 'a second prepare_database rewrote rows'
    assert backups(db) == first_backups, 'a second prepare_database wrote another backup'
    assert sorted(p.name for p in tmp_path.glob('*.bak')) == [first_backups[0].name]
    assert user_version(db) == SCHEMA_VERSION


def test_valid_names_survive_renaming_of_invalid_ones(tmp_path: Path) -> None:
    """An invalid seed name is made valid without taking a name another row already has."""
    db = tmp_path / 'aikore.db'
    rows = [
        (1, 'My Instance!', 'Demo.sh', None, 0, 0, 0, 'stopped', None, None, None, None, 'port'),
        (2, 'my-instance', 'Demo.sh', None, 0, 0, 0, 'stopped', None, None, None, None, 'port'),
        (3, 'a b', 'Demo.sh', None, 0, 0, 0, 'stopped', None, None, None, None, 'port'),
        (4, 'A-B', 'Demo.sh', None, 0, 0, 0, 'stopped', None, None, None, None, 'port'),
    ]
    write_seed_db(db, rows)

    migrated = migrate(db)

    assert sorted(migrated) == [1, 2, 3, 4]
    assert len({row.slug for row in migrated.values()}) == 4
    assert all(INSTANCE_NAME_RE.fullmatch(row.name) for row in migrated.values())
    kept = {row_id: migrated[row_id].name for row_id in (2, 4)}
    assert kept == {2: 'my-instance', 4: 'A-B'}, (
        f'APP BUG (app/db.py _migrate_seed_schema/_usable_name): seed rows whose names were already valid '
        f'were renamed {kept} because an invalid name earlier in id order took their name first; their '
        f'instance folders <data>/instances/<name> no longer match'
    )


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / 'aikore.db'
    write_seed_db(db, user_version=SCHEMA_VERSION + 1)
    before = db.read_bytes()

    with pytest.raises(SchemaError, match='newer'):
        prepare_database(db)

    assert db.read_bytes() == before, 'a refused database is left as it was'
    assert list(tmp_path.glob('*.bak')) == []


def test_new_database_gets_current_version(tmp_path: Path) -> None:
    db = tmp_path / 'sub' / 'aikore.db'
    assert migrate(db) == {}
    assert user_version(db) == SCHEMA_VERSION
    assert list(db.parent.glob('*.bak')) == [], 'a new database needs no backup'


def test_panel_serves_migrated_instances(tmp_path: Path) -> None:
    data_dir = tmp_path / 'data'
    # No autostart here: an autostart row would launch the real ComfyUI blueprint.
    rows = [(*row[:4], 0, *row[5:]) for row in SEED_ROWS]
    write_seed_db(data_dir / 'aikore.db', rows)

    panel = Panel(data_dir, AIKORE_STOP_ON_EXIT='1')
    try:
        panel.start()
        response = panel.client.get('/instances')
        assert response.status_code == 200, response.text
        listed = {item['id']: item for item in response.json()}
        assert sorted(listed) == [1, 2, 4, 7]

        comfy = listed[1]
        assert comfy['name'] == comfy['slug'] == 'comfy-gpu0'
        assert comfy['blueprint'] == 'comfyui'
        assert comfy['gpu_ids'] == [0, 1]
        assert comfy['public_port'] == 50001
        assert comfy['status'] == 'stopped' and comfy['pid'] is None
        assert comfy['active'] is False
        assert comfy['urls'] == {'open': None, 'view': None}

        flux = listed[2]
        assert (flux['name'], flux['slug'], flux['blueprint']) == ('FluxGym', 'fluxgym', 'FluxGym')
        assert flux['persistent'] is True and flux['autostart'] is False
        assert flux['access_pattern'] == 'subdomain'
        assert flux['public_port'] == 50002

        assert INSTANCE_NAME_RE.fullmatch(listed[4]['name'])
        assert listed[7]['gpu_ids'] == []
        for item in listed.values():
            assert item['status'] == 'stopped'
            assert item['restart_policy'] == 'never'
            assert item['created_at'].endswith('Z')
            assert set(item) >= {'id', 'name', 'slug', 'blueprint', 'gpu_ids', 'autostart', 'persistent'}
            assert panel.client.get(f'/instances/{item["id"]}').json()['name'] == item['name']
        assert len(backups(data_dir / 'aikore.db')) == 1
    finally:
        panel.stop()
