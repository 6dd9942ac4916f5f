"""SQLite engine, sessions and schema versioning.

The schema version lives in ``PRAGMA user_version``. Version 0 with no table is a new
database; version 0 with the seed project's ``instances`` table (``base_blueprint``,
``persistent_mode``, ``port``, ``vnc_*`` columns) is upgraded in place, every row kept,
after a backup copy of the file is written next to it; so is the original AiKore's database
(schema 6 in its ``aikore_meta`` table: ``app.db_aikore6``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from . import db_aikore6
from .models import INSTANCE_NAME_RE, OUTPUT_SEGMENT_RE, Instance, utc_now

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3


class SchemaError(RuntimeError):
    """The database file cannot be used by this version of AiKore."""


def make_engine(db_path: Path) -> Engine:
    engine = create_engine(f'sqlite:///{db_path}', connect_args={'check_same_thread': False, 'timeout': 10})
    event.listen(engine, 'connect', _set_pragmas)
    return engine


def _set_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute('PRAGMA journal_mode=WAL')
    cursor.execute('PRAGMA busy_timeout=5000')
    cursor.execute('PRAGMA foreign_keys=ON')
    cursor.execute('PRAGMA synchronous=NORMAL')
    cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A short session that commits on success; objects stay readable after commit."""
    with Session(engine, expire_on_commit=False) as session:
        yield session
        session.commit()


# ---------------------------------------------------------------- migrations


def prepare_database(db_path: Path) -> Engine:
    """Create or upgrade the database file, then return an engine on it."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    version, tables = _inspect(db_path)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f'{db_path} has schema version {version}, newer than this AiKore ({SCHEMA_VERSION}); '
            'upgrade AiKore or restore a backup'
        )
    if version < SCHEMA_VERSION and tables:
        backup = backup_database(db_path, version)
        log.info('Database backup written to %s before upgrading schema %s -> %s', backup, version, SCHEMA_VERSION)
    engine = make_engine(db_path)
    if tables and version == 0 and db_aikore6.is_schema6(tables):
        db_aikore6.migrate(engine, db_path.parent)
        version = 1
    elif tables and version == 0 and 'instances' in tables:
        _migrate_seed_schema(engine)
        version = 1
    if tables:
        for step_version, step in sorted(MIGRATIONS.items()):
            if step_version > version:
                step(engine)
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'PRAGMA user_version={SCHEMA_VERSION}')
    return engine


def _inspect(db_path: Path) -> tuple[int, set[str]]:
    """The schema version and tables of the file, after checking that SQLite can read all of it:
    a damaged file stops the panel with a sentence (and a copy of it kept), never a traceback or
    a panel that serves an empty list."""
    if not db_path.exists():
        return 0, set()
    try:
        with closing(sqlite3.connect(db_path)) as conn:
            version = conn.execute('PRAGMA user_version').fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            problems = [row[0] for row in conn.execute('PRAGMA quick_check(5)')]
    except sqlite3.DatabaseError as exc:
        raise SchemaError(
            f'{db_path} is not a readable SQLite database ({exc}). Move it away and restore a backup '
            f'({db_path.name}.*.bak next to it), or remove it to start with no instances.'
        ) from None
    if problems != ['ok']:
        kept = keep_damaged_copy(db_path)
        found = ' '.join(' '.join(problems[:2]).split())  # SQLite's report, on one line
        raise SchemaError(
            f'{db_path} is damaged ({found}). A copy was kept as {kept.name}. Restore a backup '
            f'({db_path.name}.*.bak), or recover what SQLite can read with: sqlite3 {db_path.name} .recover'
        )
    return int(version), tables


def keep_damaged_copy(db_path: Path) -> Path:
    """Copy the damaged file (and its write-ahead log) aside, byte for byte, before anything touches it."""
    stamp = utc_now().strftime('%Y%m%d-%H%M%S')
    target = db_path.with_name(f'{db_path.name}.damaged-{stamp}')
    shutil.copyfile(db_path, target)
    for suffix in ('-wal', '-shm'):
        companion = db_path.with_name(db_path.name + suffix)
        if companion.exists():
            shutil.copyfile(companion, target.with_name(target.name + suffix))
    return target


def backup_database(db_path: Path, version: int) -> Path:
    """Write a consistent copy of the database (SQLite backup API) and return its path."""
    stamp = utc_now().strftime('%Y%m%d-%H%M%S')
    target = db_path.with_name(f'{db_path.name}.v{version}-{stamp}.bak')
    with closing(sqlite3.connect(db_path)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return target


def _migrate_seed_schema(engine: Engine) -> None:
    """Upgrade the seed project's ``instances`` table to schema 1, keeping every row."""
    with engine.begin() as conn:
        columns = {row[1] for row in conn.exec_driver_sql('PRAGMA table_info(instances)')}
        if 'slug' in columns:  # already ours, written without a user_version
            return
        rows = [dict(row._mapping) for row in conn.exec_driver_sql('SELECT * FROM instances ORDER BY id')]
        conn.exec_driver_sql('ALTER TABLE instances RENAME TO instances_seed')
        # Indexes keep their names across a rename; drop them so create_all can recreate ours.
        for (index_name,) in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='instances_seed' AND sql IS NOT NULL"
        ).fetchall():
            conn.exec_driver_sql(f'DROP INDEX "{index_name}"')
        SQLModel.metadata.create_all(conn, tables=[Instance.__table__])  # type: ignore[attr-defined]
        names = _migrated_names(rows)
        for row in rows:
            values = _seed_row_to_instance(row, names[row['id']])
            conn.execute(Instance.__table__.insert().values(**values))  # type: ignore[attr-defined]
        conn.exec_driver_sql('DROP TABLE instances_seed')
    log.info('Upgraded %d instance rows from the seed schema', len(rows))


def _migrated_names(rows: list[dict[str, Any]]) -> dict[int, str]:
    """A valid, unique name per row id: names that are valid already keep priority, so only
    the invalid or duplicate ones change."""
    taken: set[str] = set()
    names: dict[int, str] = {}
    for row in rows:
        raw = str(row.get('name') or '')
        if INSTANCE_NAME_RE.fullmatch(raw) and raw.lower() not in taken:
            names[row['id']] = raw
            taken.add(raw.lower())
    for row in rows:
        if row['id'] not in names:
            raw = str(row.get('name') or f'instance-{row["id"]}')
            names[row['id']] = _usable_name(raw, taken)
            log.warning('Seed instance %r renamed to %r (names are now [A-Za-z0-9_-])', raw, names[row['id']])
    return names


def _seed_row_to_instance(row: dict[str, Any], name: str) -> dict[str, Any]:
    blueprint = str(row.get('base_blueprint') or '').removesuffix('.sh') or 'Demo'
    access = row.get('access_pattern') or 'port'
    return {
        'id': row['id'],
        'name': name,
        'slug': name.lower(),
        'blueprint': blueprint,
        'gpu_ids': _seed_gpu_ids(row.get('gpu_ids')),
        'autostart': bool(row.get('autostart')),
        'persistent': bool(row.get('persistent_mode', row.get('persistent'))),
        'public_port': row.get('port'),
        'access_pattern': access if access in {'port', 'subdomain', 'path'} else 'port',
        'output_path': _seed_output_path(row.get('output_path'), name),
        'restart_policy': 'never',
        # Processes of the old panel are not ours to adopt: they start stopped.
        'status': 'stopped',
        'pid': None,
        'pid_started_at': None,
        'exit_code': None,
        'internal_port': None,
        'active': False,
        # Later releases of the original panel renamed vnc_* to persistent_*.
        'persistent_port': row.get('persistent_port', row.get('vnc_port')),
        'persistent_display': row.get('persistent_display', row.get('vnc_display')),
        'parent_id': None,
        'restart_count': 0,
        'created_at': utc_now(),
    }


def _seed_output_path(raw: object, name: str) -> str:
    text = str(raw or '').strip().strip('/')
    segments = text.split('/') if text else []
    if segments and all(OUTPUT_SEGMENT_RE.fullmatch(s) and s != '..' for s in segments):
        return text
    return name


def _seed_gpu_ids(raw: object) -> list[int]:
    if raw is None:
        return []
    text = str(raw).strip()
    if text.startswith('['):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = []
        return [int(x) for x in parsed if isinstance(x, int) and x >= 0]
    return [int(part) for part in text.replace(' ', '').split(',') if part.isdigit()]


def _usable_name(raw: str, taken: set[str]) -> str:
    base = re.sub(r'[^A-Za-z0-9_-]+', '-', raw.strip()).strip('-_')[:40] or 'instance'  # starts with [A-Za-z0-9]
    name, counter = base, 2
    while name.lower() in taken:
        name, counter = f'{base}-{counter}', counter + 1
    taken.add(name.lower())
    return name


def _add_custom_hostname(engine: Engine) -> None:
    """Schema 2: ``instances.custom_hostname`` (the original AiKore's per-instance host name)."""
    with engine.begin() as conn:
        columns = {row[1] for row in conn.exec_driver_sql('PRAGMA table_info(instances)')}
        if 'custom_hostname' not in columns:  # a table made by this version's models has it already
            conn.exec_driver_sql('ALTER TABLE instances ADD COLUMN custom_hostname VARCHAR')


SLURM_COLUMNS = (
    "executor VARCHAR(5) NOT NULL DEFAULT 'LOCAL'",  # SQLAlchemy stores an enum's member name
    'slurm_partition VARCHAR',
    'slurm_node VARCHAR',
    'slurm_time_limit VARCHAR',
    'slurm_job_id VARCHAR',
    'node VARCHAR',
    'node_addr VARCHAR',
    'status_detail VARCHAR',
    'cluster_unreachable_since DATETIME',
)


def _add_slurm_columns(engine: Engine) -> None:
    """Schema 3: the Slurm executor's columns (issue 14); every existing instance stays local."""
    with engine.begin() as conn:
        columns = {row[1] for row in conn.exec_driver_sql('PRAGMA table_info(instances)')}
        for definition in SLURM_COLUMNS:
            if definition.split()[0] not in columns:
                conn.exec_driver_sql(f'ALTER TABLE instances ADD COLUMN {definition}')


# Schema steps after version 1 go here: {2: add_foo_column, ...}; each runs once, in order.
MIGRATIONS: dict[int, Callable[[Engine], None]] = {2: _add_custom_hostname, 3: _add_slurm_columns}
