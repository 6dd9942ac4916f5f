"""The trash: deleted instances' folders with a record of their configuration, listed,
restored (the rules of create apply again) or deleted for good."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config import Settings
from ...models import (
    NAME_MAX,
    AccessPattern,
    Executor,
    Instance,
    InstancePublic,
    RestartPolicy,
    TrashEntry,
    iso_utc,
    utc_now,
)
from ..errors import Conflict, InvalidInput, NotFound
from ..monitoring.disk import tree_size
from ..runtime import launch
from . import store, validation

if TYPE_CHECKING:
    from .instances import InstanceService

log = logging.getLogger(__name__)

RECORD = '.aikore-trash.json'


def free_name(settings: Settings, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... : the first not in the trash yet."""
    candidate, counter = name, 2
    while (settings.trash_dir / candidate).exists():
        suffix = f'-{counter}'
        candidate, counter = name[: NAME_MAX - len(suffix)] + suffix, counter + 1
    return candidate


def move_in(settings: Settings, folder: Path, name: str, record: dict[str, Any]) -> str:
    """Move ``folder`` (made empty if it is gone) into the trash with ``record``; its entry's name."""
    entry = free_name(settings, name)
    target = settings.trash_dir / entry
    settings.trash_dir.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        folder.rename(target)
    else:
        target.mkdir()
    record = {**record, 'deleted_at': iso_utc(utc_now()), 'original_name': name}
    (target / RECORD).write_text(json.dumps(record, indent=2))
    return entry


def move_instance(settings: Settings, instance: Instance) -> str:
    """A deleted instance's folder into the trash, with its configuration to restore it from."""
    record = instance.model_dump(mode='json', exclude={'id', 'status', 'pid', 'pid_started_at'})
    return move_in(settings, launch.instance_dir(settings, instance.name), instance.name, record)


def read_record(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Trash:
    """Listing, restoring and purging trash entries; a restore goes through the instance
    service's rules (names, GPUs, ports, host names) under its catalog lock."""

    def __init__(self, instances: InstanceService) -> None:
        self.instances = instances
        self.settings = instances.settings
        self.engine = instances.engine

    async def entries(self) -> list[TrashEntry]:
        return await asyncio.to_thread(self._entries)

    def _entries(self) -> list[TrashEntry]:
        entries = []
        for folder in sorted(self.settings.trash_dir.iterdir()) if self.settings.trash_dir.is_dir() else []:
            record = read_record(folder)
            if record is not None:
                entries.append(
                    TrashEntry(
                        name=folder.name,
                        deleted_at=str(record.get('deleted_at', '')),
                        original_name=str(record.get('original_name', folder.name)),
                        blueprint=str(record.get('blueprint', '')),
                    )
                )
        return entries

    async def restore(self, entry: str) -> InstancePublic:
        async with self.instances.catalog_lock:
            row = await asyncio.to_thread(self._restore, entry)
        return self.instances.rows.publish(row)

    def _restore(self, entry: str) -> Instance:
        folder, record = self._trash_entry(entry)
        self.instances.ensure_name_free(entry)
        target = launch.instance_dir(self.settings, entry)
        if target.exists():
            raise Conflict(f'Folder {target} already exists; cannot restore {entry!r}')
        # The rules of create apply: the GPUs and the public port must exist here and now.
        try:
            gpus = [int(g) for g in record.get('gpu_ids') or []]
            public_port = int(record['public_port']) if record.get('public_port') is not None else None
            pattern = AccessPattern(record.get('access_pattern') or 'port')
            executor = Executor(record.get('executor') or Executor.LOCAL)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f'Trash entry {entry!r} has an unreadable record: {exc}') from None
        # A Slurm instance stays one: its GPUs are a count on the cluster, not this machine's.
        on_slurm = executor == Executor.SLURM
        instance = Instance(
            name=entry,
            slug=entry.lower(),
            blueprint=str(record.get('blueprint') or 'Demo'),
            gpu_ids=validation.gpu_ids(gpus, None if on_slurm else self.instances.gpu_count()),
            autostart=bool(record.get('autostart')),
            persistent=bool(record.get('persistent')),
            public_port=None if on_slurm else validation.public_port(public_port, self.settings.port_range),
            executor=executor,
            slurm_partition=record.get('slurm_partition'),
            slurm_node=record.get('slurm_node'),
            slurm_time_limit=record.get('slurm_time_limit'),
            access_pattern=self.instances.access_pattern(pattern),
            output_path=record.get('output_path') or entry,
            restart_policy=RestartPolicy(record.get('restart_policy') or 'never'),
            parent_id=self._restored_parent(entry, record.get('parent_id')),
            custom_hostname=self._restored_host(entry, record.get('custom_hostname')),
        )
        folder.rename(target)
        try:
            row = store.add(self.engine, instance)
        except BaseException:
            target.rename(folder)
            raise
        (target / RECORD).unlink(missing_ok=True)
        return row

    def _restored_parent(self, entry: str, parent_id: object) -> int | None:
        """A restored satellite stays one while its parent exists; else it becomes an instance of its own."""
        if parent_id is None:
            return None
        try:
            parent: Instance | None = store.get(self.engine, int(str(parent_id)))
        except (NotFound, ValueError):
            parent = None
        if parent is None or parent.parent_id is not None:
            log.warning('%s was a satellite of an instance that is gone: restored as an instance of its own', entry)
            return None
        return parent.id

    def _restored_host(self, entry: str, host: object) -> str | None:
        """The custom host name it had, while it is still valid here and no other instance has it."""
        if host is None:
            return None
        try:
            checked = self.instances.custom_host(str(host), None)
        except (InvalidInput, Conflict) as exc:
            log.warning('%s is restored without its host name %r: %s', entry, host, exc)
            return None
        return checked

    async def purge(self, entry: str) -> int:
        """Delete a trash entry for good; answers the bytes it freed (as ``du -sb`` counts them)."""
        folder, _ = await asyncio.to_thread(self._trash_entry, entry)
        freed = await asyncio.to_thread(tree_size, folder)
        await asyncio.to_thread(shutil.rmtree, folder)
        log.info('Deleted trash entry %s for good (%d bytes freed)', entry, freed)
        return freed

    async def empty(self) -> tuple[list[str], int]:
        """Delete every trash entry for good: their names and the bytes freed."""
        names, freed = [], 0
        for entry in await self.entries():
            try:
                freed += await self.purge(entry.name)
            except NotFound:  # deleted meanwhile by another request
                continue
            names.append(entry.name)
        return names, freed

    def _trash_entry(self, entry: str) -> tuple[Path, dict[str, Any]]:
        validation.instance_name(entry)
        folder = self.settings.trash_dir / entry
        record = read_record(folder)
        if record is None:
            raise NotFound(f'No trash entry named {entry!r}')
        return folder, record
