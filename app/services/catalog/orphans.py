"""Instance folders that no database row knows of: after a lost, emptied or replaced database
the folders (apps, environments, outputs) are still there. They are found at start and
shown; the user adopts each one (a row is made again from the folder: its name, and the
blueprint its ``launch.sh`` metadata names) or moves it to the trash. Never silently ignored.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ...models import INSTANCE_NAME_RE, Instance, InstancePublic, OrphanFolder
from ..errors import Conflict, NotFound
from ..runtime import launch
from . import store, trash
from .blueprints import parse_metadata
from .instances import InstanceService

log = logging.getLogger(__name__)


class OrphanFolders:
    def __init__(self, instances: InstanceService) -> None:
        self.instances = instances
        self.settings = instances.settings

    async def find(self) -> list[OrphanFolder]:
        return await asyncio.to_thread(self._find)

    def _find(self) -> list[OrphanFolder]:
        folder = self.settings.instances_dir
        if not folder.is_dir():
            return []
        known = {row.name.lower() for row in store.list_all(self.instances.engine)}
        found = []
        for path in sorted(folder.iterdir()):
            if path.is_dir() and not path.name.startswith('.') and path.name.lower() not in known:
                valid = INSTANCE_NAME_RE.fullmatch(path.name) is not None
                found.append(OrphanFolder(name=path.name, blueprint=_blueprint_of(path), adoptable=valid))
        return found

    async def adopt(self, name: str) -> InstancePublic:
        """A row for the folder ``name`` (stopped, the defaults of a new instance)."""
        async with self.instances.catalog_lock:
            row = await asyncio.to_thread(self._adopt, name)
        log.info('Adopted the folder %s as an instance (blueprint %s)', row.name, row.blueprint or '?')
        return self.instances.rows.publish(row)

    def _adopt(self, name: str) -> Instance:
        orphan = self._orphan(name)
        if not orphan.adoptable:
            raise Conflict(f'{name!r} is not a valid instance name (or is taken): move it to the trash instead')
        instance = Instance(
            name=orphan.name,
            slug=orphan.name.lower(),
            blueprint=orphan.blueprint or 'Demo',
            public_port=self.instances.suggest_public_port(),
            output_path=orphan.name,
        )
        (launch.instance_dir(self.settings, orphan.name) / 'logs').mkdir(exist_ok=True)
        return store.add(self.instances.engine, instance)

    async def trash(self, name: str) -> str:
        """Move the folder to the trash (restorable from there like a deleted instance)."""
        async with self.instances.catalog_lock:
            entry = await asyncio.to_thread(self._trash, name)
        log.info('Moved the orphan folder %s to the trash as %s', name, entry)
        return entry

    def _trash(self, name: str) -> str:
        orphan = self._orphan(name)
        folder = launch.instance_dir(self.settings, orphan.name)
        return trash.move_in(self.settings, folder, orphan.name, {'blueprint': orphan.blueprint})

    def _orphan(self, name: str) -> OrphanFolder:
        for orphan in self._find():
            if orphan.name == name:
                return orphan
        raise NotFound(f'No instance folder {name!r} without an instance')


def _blueprint_of(folder: Path) -> str:
    """The blueprint named in the folder's launch.sh metadata ('' if none or unreadable)."""
    script = folder / launch.LAUNCH_SCRIPT
    try:
        text = script.read_text(encoding='utf-8', errors='replace')
    except OSError:
        return ''
    return parse_metadata(text, '').name


ORPHANS_PREFIX = 'Instance folders without an instance: '


def orphans_problem(orphans: list[OrphanFolder]) -> str | None:
    """The sentence /api/health and the dashboard show while orphan folders exist."""
    if not orphans:
        return None
    names = ', '.join(orphan.name for orphan in orphans[:5]) + (' …' if len(orphans) > 5 else '')
    return (
        f'{ORPHANS_PREFIX}{len(orphans)} folder(s) in instances/ have no entry in the database ({names}): '
        'adopt them or move them to the trash (Trash tab, or /api/orphans)'
    )
