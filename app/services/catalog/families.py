"""Instance families: clones and satellites.

A clone is a new instance made from another's folder (``copies.py`` says what is copied and
why the environment is not): its row is created ``installing``, the copy runs off the event
loop with progress lines in the clone's log, then the row goes ``stopped`` (``error`` when the
copy failed). Deleting it while it is copied cancels the copy and leaves nothing behind.

A satellite is a row whose ``parent_id`` is set: it runs the parent's launch script, code and
environment with its own GPUs, ports, logs, outputs and writable state (``launch.prepare``
lays that out at each start, so a row that only carries ``parent_id`` works). The panel never
writes into the parent's folder for it. A satellite cannot have satellites; cloning one is
refused (clone its parent, or make another satellite of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from pathlib import Path

from ...config import Settings
from ...lifecycle import InstanceStatus as S
from ...models import CloneRequest, Executor, Instance, InstancePublic, SatelliteCreate
from ..errors import Conflict, NotFound
from ..runtime import launch
from . import store, validation
from .copies import CopyCancelled, CopyStats, append_line, copy_folder, rewrite_paths
from .instances import InstanceService
from .rows import TransitionRefused

log = logging.getLogger(__name__)


class FamilyService:
    def __init__(self, instances: InstanceService) -> None:
        self.instances = instances
        self.settings: Settings = instances.settings
        self.engine = instances.engine
        self.rows = instances.rows

    # ------------------------------------------------------------------ clone

    async def clone(self, source_id: int, data: CloneRequest) -> InstancePublic:
        """A new instance (``installing``) whose folder is copied from ``source_id``'s in the background."""
        async with self.instances.catalog_lock:  # held until the copy is known: no delete or rename between
            source, row = await asyncio.to_thread(self._clone_row, source_id, data)
            clone_id = row.id or 0
            source_dir = launch.instance_dir(self.settings, source.name)
            target_dir = launch.instance_dir(self.settings, row.name)
            self.instances.copies.start(
                clone_id, source_id, lambda stop: self._copy(clone_id, source_dir, target_dir, stop)
            )
        public = self.rows.publish(row)
        log.info('Cloning %s into %s', source.name, row.name)
        return public

    def _clone_row(self, source_id: int, data: CloneRequest) -> tuple[Instance, Instance]:
        source = store.get(self.engine, source_id)
        if source.parent_id is not None:
            raise Conflict(
                f'{source.name!r} is a satellite (it has no code or environment of its own): clone its parent, '
                'or make another satellite of it'
            )
        if source.status == S.INSTALLING:
            raise Conflict(f'{source.name!r} is still being copied: clone it once it is ready')
        name = validation.instance_name(data.name)
        sent = data.model_dump(exclude_unset=True)
        gpus = data.gpu_ids if data.gpu_ids is not None else source.gpu_ids
        port = validation.public_port(data.public_port, self.settings.port_range)
        folder = self.instances.claim_folder(name)
        instance = Instance(
            name=name,
            slug=name.lower(),
            blueprint=source.blueprint,
            gpu_ids=validation.gpu_ids(gpus, self.instances.gpu_count()),
            autostart=bool(sent.get('autostart') or False),
            persistent=source.persistent,
            public_port=port if port is not None else self.instances.suggest_public_port(),
            access_pattern=self.instances.access_pattern(data.access_pattern or source.access_pattern),
            output_path=validation.output_path(data.output_path) if data.output_path else name,
            restart_policy=data.restart_policy or source.restart_policy,
            status=S.INSTALLING,
        )
        folder.mkdir(parents=True)
        try:
            append_line(folder, f'Cloning {source.name} into {name}')
            return source, store.add(self.engine, instance)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    async def _copy(self, clone_id: int, source: Path, target: Path, stop: threading.Event) -> None:
        """The background copy; its end is the row's next status."""

        loop = asyncio.get_running_loop()

        def say(line: str) -> None:
            append_line(target, line)

        def progress(stats: CopyStats) -> None:  # in the copy's thread
            with contextlib.suppress(NotFound):
                row = store.get(self.engine, clone_id)
                loop.call_soon_threadsafe(self._show_progress, row, stats.text)

        try:
            stats = await asyncio.to_thread(copy_folder, source, target, stop, say, progress)
            rewritten = await asyncio.to_thread(rewrite_paths, target / launch.LAUNCH_SCRIPT, source, target)
        except CopyCancelled:
            return  # the delete that cancelled it removes the row and the folder
        except Exception as exc:  # never left `installing`: the row says it failed, the log says why
            if isinstance(exc, OSError):
                log.warning('Copying %s into %s failed: %s', source.name, target.name, exc)
            else:
                log.error('Copying %s into %s failed', source.name, target.name, exc_info=exc)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(say, f'The copy failed: {exc}. Delete this clone and try again.')
            await self._end(clone_id, S.ERROR)
            return
        summary = f'Copied {stats.text}'
        if rewritten:
            summary += f'; {rewritten} path(s) to {source} in launch.sh now point to {target}'
        await asyncio.to_thread(say, summary)
        await asyncio.to_thread(
            say,
            'The environment was not copied (a venv hard-codes its own path): the blueprint builds a fresh one '
            'at the first start',
        )
        await self._end(clone_id, S.STOPPED)

    def _show_progress(self, row: Instance, text: str) -> None:
        if row.id is None or not self.instances.copies.running(row.id):
            return  # ended meanwhile: its last status is what the row shows
        self.instances.copies.progress[row.id] = text
        self.rows.events.publish(store.to_public(row).model_copy(update={'progress': text}))

    async def _end(self, clone_id: int, status: S) -> None:
        with contextlib.suppress(NotFound, TransitionRefused):  # deleted (cancelled) meanwhile
            await self.rows.set_status(clone_id, status)

    async def recover(self) -> list[str]:
        """At panel start: a clone whose copy was cut short by a panel exit is marked ``error``."""
        problems = []
        for row in await asyncio.to_thread(store.list_in_states, self.engine, {S.INSTALLING}):
            if row.id is None or self.instances.copies.running(row.id):
                continue
            folder = launch.instance_dir(self.settings, row.name)
            await asyncio.to_thread(append_line, folder, 'The copy was cut short when the panel stopped')
            await self._end(row.id, S.ERROR)
            log.warning(
                'The copy of clone %s was cut short when the panel stopped; delete it and clone again', row.name
            )
            problems.append(f'The copy of clone {row.name} was cut short: delete it and clone again')
        return problems

    # ------------------------------------------------------------------ satellites

    async def create_satellite(self, parent_id: int, data: SatelliteCreate) -> InstancePublic:
        async with self.instances.catalog_lock:
            row = await asyncio.to_thread(self._satellite_row, parent_id, data)
        log.info('Created satellite %s of instance %s', row.name, parent_id)
        return self.rows.publish(row)

    def _satellite_row(self, parent_id: int, data: SatelliteCreate) -> Instance:
        parent = store.get(self.engine, parent_id)
        if parent.parent_id is not None:
            raise Conflict(f'{parent.name!r} is itself a satellite: a satellite cannot have satellites')
        if parent.status == S.INSTALLING:
            raise Conflict(f'{parent.name!r} is still being copied')
        if parent.executor == Executor.SLURM:
            raise Conflict(f"{parent.name!r} runs on Slurm: a satellite runs its parent's code on this machine")
        name = validation.instance_name(data.name)
        port = validation.public_port(data.public_port, self.settings.port_range)
        folder = self.instances.claim_folder(name)
        instance = Instance(
            name=name,
            slug=name.lower(),
            blueprint=parent.blueprint,
            gpu_ids=validation.gpu_ids(data.gpu_ids, self.instances.gpu_count()),
            autostart=data.autostart,
            public_port=port if port is not None else self.instances.suggest_public_port(),
            access_pattern=self.instances.access_pattern(data.access_pattern),
            output_path=validation.output_path(data.output_path) if data.output_path else name,
            restart_policy=data.restart_policy,
            parent_id=parent.id,
        )
        (folder / 'logs').mkdir(parents=True)
        try:
            return store.add(self.engine, instance)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    async def satellites(self, instance_id: int) -> list[InstancePublic]:
        rows = await asyncio.to_thread(store.satellites_of, self.engine, instance_id)
        return [store.to_public(row) for row in rows]
