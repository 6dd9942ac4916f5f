"""Upgrading the original AiKore's data folder (its ``aikore.db`` at schema 6) in place.

The original panel kept ``/config`` as: ``aikore.db`` (table ``aikore_meta`` with the key
``schema_version``; table ``instances``), ``custom_blueprints/*.sh`` and ``instances/<name>/``
(each with its own ``launch.sh``). Mapped to ours (``app.db`` calls this after its backup):

- every row kept with its id; names made valid the way the seed upgrade does, and an instance
  folder follows its row's new name;
- ``parent_instance_id`` -> ``parent_id`` (a satellite; a parent that is gone leaves it standalone);
- ``hostname`` with ``use_custom_hostname`` -> ``custom_hostname`` (stored and shown; see models);
- ``output_path``: relative, or absolute under ``<data>/outputs``, kept as our relative path; an
  absolute folder elsewhere gets a link ``<data>/outputs/<name>`` -> that folder, so nothing moves;
- ``torch_version`` -> ``<instance>/pins.txt`` (pip constraints: ``torch==X``); Python and CUDA
  versions are not pip packages: they are written there as comments, so they are kept and seen;
- ``custom_blueprints/*.sh`` copied into ``<data>/blueprints`` (ours), unless one of that name exists;
- folders and their ``launch.sh`` are reused as they are; a row whose folder has no script gets
  its blueprint's at its first start (the supervisor).
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from .models import HOSTNAME_RE, OUTPUT_SEGMENT_RE, Instance, utc_now

log = logging.getLogger(__name__)

META_TABLE = 'aikore_meta'
CUSTOM_BLUEPRINTS = 'custom_blueprints'
PINS_FILE = 'pins.txt'  # the instance's pip constraints (functions.sh exports PIP_CONSTRAINT to it)
VERSION_RE = re.compile(r'[0-9]+(\.[0-9A-Za-z]+)*(\+[0-9A-Za-z.]+)?')


def is_schema6(tables: set[str]) -> bool:
    """The original AiKore's database: its meta table beside ``instances``."""
    return META_TABLE in tables and 'instances' in tables


def migrate(engine: Engine, data_dir: Path) -> None:
    """Upgrade the folders beside the database, then the rows (one transaction). Every folder
    step can run again (nothing is overwritten), so a failed one (a file in the way, a full
    disk) leaves the database untouched and the next start resumes from the beginning."""
    from .db import SchemaError, _migrated_names, _seed_gpu_ids  # app.db imports this module

    with engine.connect() as conn:
        old_version = _old_version(conn)
        rows = [dict(row._mapping) for row in conn.exec_driver_sql('SELECT * FROM instances ORDER BY id')]
    names = _migrated_names(rows)
    try:
        for row in rows:
            _upgrade_folder(data_dir, str(row.get('name') or ''), names[row['id']], row)
        import_custom_blueprints(data_dir)
    except OSError as exc:
        raise SchemaError(
            f"Upgrading the original AiKore's folders in {data_dir} failed: {exc}. The database is "
            'unchanged: fix this and start again to finish the upgrade.'
        ) from exc
    with engine.begin() as conn:
        _replace_table(conn)
        ids = {row['id'] for row in rows}
        for row in rows:
            values = _row_values(row, names[row['id']], data_dir, _seed_gpu_ids(row.get('gpu_ids')))
            conn.execute(Instance.__table__.insert().values(**values))  # type: ignore[attr-defined]
        for row in rows:  # parents after every row exists (foreign key)
            parent = row.get('parent_instance_id')
            if parent is not None and parent in ids and parent != row['id']:
                conn.exec_driver_sql('UPDATE instances SET parent_id = ? WHERE id = ?', (parent, row['id']))
            elif parent is not None:
                log.warning('Instance %s was a satellite of %s, which is gone: now standalone', row['name'], parent)
        conn.exec_driver_sql(f'DROP TABLE {META_TABLE}')
    log.info('Upgraded %d instance rows from the original AiKore (schema %s)', len(rows), old_version)


def _old_version(conn: Connection) -> str:
    found = conn.exec_driver_sql("SELECT value FROM aikore_meta WHERE key = 'schema_version'").fetchone()
    version = str(found[0]) if found else '?'
    if version != '6':
        log.warning('The original AiKore database has schema %s (6 expected): upgrading what it has', version)
    return version


def _replace_table(conn: Connection) -> None:
    """The old table (its rows are read; the backup holds it as it was) gives way to ours."""
    conn.exec_driver_sql('DROP TABLE instances')  # its indexes go with it
    SQLModel.metadata.create_all(conn, tables=[Instance.__table__])  # type: ignore[attr-defined]


def _row_values(row: dict[str, Any], name: str, data_dir: Path, gpu_ids: list[int]) -> dict[str, Any]:
    return {
        'id': row['id'],
        'name': name,
        'slug': name.lower(),
        'blueprint': str(row.get('base_blueprint') or '').removesuffix('.sh') or 'Demo',
        'gpu_ids': gpu_ids,
        'autostart': bool(row.get('autostart')),
        'persistent': bool(row.get('persistent_mode')),
        'public_port': row.get('port'),
        'access_pattern': 'port',
        'output_path': output_path(row.get('output_path'), name, data_dir),
        'restart_policy': 'never',
        'status': 'stopped',  # the old panel's processes are not ours to adopt
        'pid': None,
        'pid_started_at': None,
        'exit_code': None,
        'internal_port': None,
        'active': False,
        'persistent_port': row.get('persistent_port'),
        'persistent_display': row.get('persistent_display'),
        'parent_id': None,
        'restart_count': 0,
        'created_at': utc_now(),
        'custom_hostname': custom_hostname(row),
    }


def custom_hostname(row: dict[str, Any]) -> str | None:
    """The host the old panel served this instance on, when it used one of its own."""
    host = str(row.get('hostname') or '').strip().lower().rstrip('.')
    if not host:
        return None
    if not row.get('use_custom_hostname'):
        log.info('Instance %s had a host name %r it did not use: left out', row.get('name'), host)
        return None
    if not HOSTNAME_RE.fullmatch(host) or len(host) > 253:
        log.warning('Instance %s: host name %r is not a valid host name: left out', row.get('name'), host)
        return None
    return host


def output_path(raw: object, name: str, data_dir: Path) -> str:
    """Our relative output path for the old one (see the module's docstring)."""
    text = str(raw or '').strip()
    if not text:
        return name
    outputs = data_dir / 'outputs'
    path = Path(text)
    if path.is_absolute():
        for base in (outputs, Path('/config/outputs')):  # the old panel's own folder, here or as it was
            if path.is_relative_to(base) and path != base:
                return _segments_or(path.relative_to(base).as_posix(), name)
        link = outputs / name
        if path.is_dir() and not link.exists() and not link.is_symlink():
            outputs.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path, target_is_directory=True)
            log.info('Outputs of %s stay in %s (linked from %s)', name, path, link)
            return name
        log.warning('Outputs of %s were in %s, which is not a folder here: they now go to %s', name, path, link)
        return name
    return _segments_or(text.strip('/'), name)


def _segments_or(text: str, name: str) -> str:
    segments = text.split('/')
    if all(OUTPUT_SEGMENT_RE.fullmatch(s) and s != '..' for s in segments):
        return text
    log.warning('Output path %r of %s is not a usable folder name: %s is used', text, name, name)
    return name


def pins_text(row: dict[str, Any]) -> str | None:
    """The constraints file for the versions the old panel recorded, or None when it recorded none."""
    lines = []
    torch = _version(row.get('torch_version'))
    if torch:
        lines.append(f'torch=={torch}')
    for key, label in (('python_version', 'Python'), ('cuda_version', 'CUDA')):
        value = _version(row.get(key))
        if value:
            lines.append(f'# {label} {value} (recorded by the original AiKore; not a pip package)')
    if not lines:
        return None
    return '# Package pins (pip constraints), upgraded from the original AiKore\n' + '\n'.join(lines) + '\n'


def _version(raw: object) -> str | None:
    text = str(raw or '').strip().removeprefix('v')
    return text if VERSION_RE.fullmatch(text) else None


def _upgrade_folder(data_dir: Path, old_name: str, name: str, row: dict[str, Any]) -> None:
    instances = data_dir / 'instances'
    folder = instances / name
    old = instances / old_name if old_name else None
    if old is not None and old_name != name and old.is_dir() and not folder.exists():
        old.rename(folder)
        log.info('Instance folder %s renamed to %s with its instance', old, folder)
    pins = pins_text(row)
    if pins is None:
        return
    target = folder / PINS_FILE
    if target.exists():
        log.info('%s exists: the versions of the old database are not written over it', target)
        return
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(pins, encoding='utf-8')
    log.info('Versions of %s kept as pins in %s', name, target)


def import_custom_blueprints(data_dir: Path) -> list[str]:
    """Copy the old panel's custom blueprints into ours; the names copied (the old folder stays)."""
    source, target = data_dir / CUSTOM_BLUEPRINTS, data_dir / 'blueprints'
    if not source.is_dir():
        return []
    target.mkdir(parents=True, exist_ok=True)
    taken = {path.name.lower() for path in target.glob('*.sh')}
    copied = []
    for path in sorted(source.glob('*.sh')):
        if path.name.lower() in taken:
            log.info('Custom blueprint %s exists already: %s is not copied', path.name, path)
            continue
        shutil.copy2(path, target / path.name)
        copied.append(path.stem)
    if copied:
        log.info('Imported custom blueprints from %s: %s', source, ', '.join(copied))
    return copied
