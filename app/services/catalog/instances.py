"""Instances: create, update, delete into trash, restore, scripts and logs.

The one place the rules for an instance's configuration are applied; the API and the
pages both call these methods. Every change of one instance holds its lock in
``InstanceRows`` (so a delete, a rename or a script write never lands between a restart's
stop and its start); changes that claim a name or folder also hold the catalog lock (taken
second), so two requests cannot claim the same name or folder.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from ...config import Settings
from ...lifecycle import DELETABLE, RUNNING, STARTABLE
from ...lifecycle import InstanceStatus as S
from ...models import (
    AccessPattern,
    Executor,
    Instance,
    InstanceCreate,
    InstancePublic,
    InstanceUpdate,
    LogChunk,
)
from ..consoles import terminals
from ..consoles.terminals import ShellSpec
from ..errors import Conflict, InvalidInput, NotFound
from ..events import EventBus
from ..monitoring.gpu_source import detected_gpu_count
from ..net.urls import is_ip, split_entry
from ..runtime import launch, logs, slurm
from ..runtime.desktop import folder as desktop_folder
from ..runtime.supervisor import Supervisor
from . import store, trash, validation
from .blueprints import BlueprintStore, write_script_atomic
from .copies import CopyJobs
from .rows import InstanceRows

log = logging.getLogger(__name__)

# Changing these on a running instance takes effect at its next start.
RESTART_FIELDS = ('gpu_ids', 'persistent', 'output_path')
NON_NULLABLE = (
    'name', 'blueprint', 'gpu_ids', 'autostart', 'persistent', 'access_pattern', 'restart_policy', 'executor',
)  # fmt: skip


class InstanceService:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        blueprints: BlueprintStore,
        supervisor: Supervisor,
        rows: InstanceRows,
        gpu_count: Callable[[], int | None] = detected_gpu_count,
        access_patterns: frozenset[AccessPattern] = frozenset(AccessPattern),
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.blueprints = blueprints
        self.supervisor = supervisor
        self.rows = rows
        self.events = rows.events
        self.gpu_count = gpu_count
        self.access_patterns = access_patterns  # path and subdomain need the proxy (AIKORE_NGINX)
        self.removed: EventBus[int] = EventBus('instances-removed')  # ids of deleted instances
        self.catalog_lock = asyncio.Lock()
        self.copies = CopyJobs()  # clones being copied (``families.py`` starts them; a delete cancels)

    # ------------------------------------------------------------------ reading

    async def list_all(self) -> list[InstancePublic]:
        return [self._public(row) for row in await asyncio.to_thread(store.list_all, self.engine)]

    def _public(self, row: Instance) -> InstancePublic:
        """The row as answered: with how far its copy got while it is a clone being copied."""
        public = store.to_public(row)
        if row.status == S.INSTALLING and row.id is not None:
            public.progress = self.copies.progress.get(row.id)
        return public

    async def shell_spec(self, instance_id: int) -> ShellSpec:
        """A bash in the instance's folder with the environment of a run (its current GPUs and port)."""
        instance = await self.get(instance_id)
        if instance.executor == Executor.SLURM:
            raise InvalidInput(f'{instance.name!r} runs on Slurm: its terminal (a shell on its node) is not built yet')
        return await asyncio.to_thread(
            terminals.instance_shell, self.settings, instance, self.blueprints.functions_path
        )

    async def find_by_slug(self, slug: str) -> InstancePublic | None:
        row = await asyncio.to_thread(store.find_by_slug, self.engine, slug)
        return store.to_public(row) if row is not None else None

    async def get(self, instance_id: int) -> InstancePublic:
        return self._public(await asyncio.to_thread(store.get, self.engine, instance_id))

    # ------------------------------------------------------------------ create / update

    async def create(self, data: InstanceCreate) -> InstancePublic:
        async with self.catalog_lock:
            row = await asyncio.to_thread(self._create, data)
        public = self.rows.publish(row)
        log.info('Created instance %s from %s', row.name, row.blueprint)
        return public

    def _create(self, data: InstanceCreate) -> Instance:
        name = validation.instance_name(data.name)
        blueprint = self.blueprints.get(data.blueprint)
        on_slurm = data.executor == Executor.SLURM
        slurm.check_options(self.settings, data.executor, data.model_dump())
        gpu_ids = validation.gpu_ids(data.gpu_ids, None if on_slurm else self.gpu_count())  # Slurm: a count
        port = validation.public_port(data.public_port, self.settings.port_range)
        output = validation.output_path(data.output_path) if data.output_path is not None else name
        folder = self.claim_folder(name)
        instance = Instance(
            name=name,
            slug=name.lower(),
            blueprint=blueprint.name,
            gpu_ids=gpu_ids,
            autostart=data.autostart,
            persistent=data.persistent,
            public_port=port if port is not None or on_slurm else self.suggest_public_port(),
            access_pattern=self.access_pattern(data.access_pattern),
            output_path=output,
            restart_policy=data.restart_policy,
            executor=data.executor,
            slurm_partition=data.slurm_partition,
            slurm_node=data.slurm_node,
            slurm_time_limit=data.slurm_time_limit,
        )
        (folder / 'logs').mkdir(parents=True)
        try:
            shutil.copyfile(blueprint.path, folder / launch.LAUNCH_SCRIPT)
            return store.add(self.engine, instance)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    async def update(
        self, instance_id: int, data: InstanceUpdate, panel_host: str | None = None
    ) -> tuple[InstancePublic, bool]:
        """Apply the fields that were sent; also answers whether a restart is needed to apply them.
        ``panel_host``: the host the request reached the panel on (never a custom host name)."""
        async with self.rows.hold(instance_id), self.catalog_lock:
            current = await asyncio.to_thread(store.get, self.engine, instance_id)
            running = self.supervisor.is_running(instance_id) or current.status in RUNNING
            changes = await asyncio.to_thread(self._validated_changes, current, data, running, panel_host)
            public = await self.rows.update(instance_id, **changes) if changes else store.to_public(current)
        restart_required = running and any(key in changes for key in RESTART_FIELDS)
        return public, restart_required

    def custom_host(self, value: str | None, instance_id: int | None, panel_host: str | None = None) -> str | None:
        """A valid custom host name no other instance has, and no other instance's subdomain
        route (``<its slug>.<anything>``) would answer for."""
        host = validation.custom_hostname(value, self.settings, panel_host)
        if host is None:
            return None
        label = host.split('.')[0]
        for other in store.list_all(self.engine):
            if other.id == instance_id:
                continue
            if other.custom_hostname == host:
                raise Conflict(f'{other.name!r} already has the host name {host!r}')
            if other.slug == label:
                raise Conflict(f'{host!r} is where {other.name!r} answers ({label}.<host>): choose another host name')
        return host

    def _validated_changes(
        self, current: Instance, data: InstanceUpdate, running: bool, panel_host: str | None = None
    ) -> dict[str, Any]:
        sent = data.model_dump(exclude_unset=True)
        for key in NON_NULLABLE:
            if key in sent and sent[key] is None:
                raise InvalidInput(f'{key} cannot be null')
        changes: dict[str, Any] = {}
        executor = sent.get('executor') or current.executor
        if executor != current.executor and running:
            raise Conflict(f'Stop {current.name!r} before changing where it runs')
        if executor == Executor.SLURM and current.parent_id is not None:
            raise Conflict(f"{current.name!r} is a satellite: it runs its parent's code here, not on Slurm")
        merged = {**current.model_dump(), **sent}
        if 'executor' in sent or executor == Executor.SLURM:
            slurm.check_options(self.settings, executor, {**merged, 'public_port': sent.get('public_port')})
        for key in ('executor', 'slurm_partition', 'slurm_node', 'slurm_time_limit'):
            if key in sent:
                changes[key] = sent[key]
        if 'gpu_ids' in sent:
            local = executor != Executor.SLURM
            changes['gpu_ids'] = validation.gpu_ids(sent['gpu_ids'], self.gpu_count() if local else None)
        if 'public_port' in sent:
            changes['public_port'] = validation.public_port(sent['public_port'], self.settings.port_range)
        if 'output_path' in sent:
            changes['output_path'] = validation.output_path(sent['output_path'] or current.name)
        if 'custom_hostname' in sent:
            changes['custom_hostname'] = self.custom_host(sent['custom_hostname'], current.id, panel_host)
        for key in ('autostart', 'persistent', 'access_pattern', 'restart_policy'):
            if key in sent:
                changes[key] = sent[key]
        if 'access_pattern' in changes:
            self.access_pattern(changes['access_pattern'])
        blueprint_change = None
        if 'blueprint' in sent:
            blueprint = self.blueprints.get(sent['blueprint'])
            if blueprint.name != current.blueprint:
                if running:
                    raise Conflict(f'Stop {current.name!r} before changing its blueprint')
                blueprint_change = blueprint.path
                changes['blueprint'] = blueprint.name
        if current.status == S.INSTALLING and ('name' in sent or 'blueprint' in sent):
            raise Conflict(f'{current.name!r} is being copied: wait for it, or delete it to cancel the copy')
        if current.parent_id is not None and sent.get('blueprint', current.blueprint) != current.blueprint:
            raise Conflict(f'{current.name!r} is a satellite: it runs the blueprint of its parent')
        if 'name' in sent and sent['name'] != current.name:
            name = validation.instance_name(sent['name'])
            if running:
                raise Conflict(f'Stop {current.name!r} before renaming it')
            self._refuse_if_being_cloned(current, 'rename')
            self._refuse_if_parent(current, 'rename')
            self.ensure_name_free(name, except_id=current.id)
            self._rename_folder(current.name, name)
            changes.update(name=name, slug=name.lower())
        if changes.get('executor') == Executor.SLURM:
            # A job has no public port (its port number is on its node, not here): unmapped.
            changes.update(public_port=None, active=False)
        changes = {key: value for key, value in changes.items() if getattr(current, key) != value}
        if 'public_port' in changes and current.active:
            changes['active'] = False  # unmapped from the old port; activate again on the new one
        if blueprint_change is not None:
            self._replace_script(changes.get('name', current.name), blueprint_change)
        return changes

    def claim_folder(self, name: str) -> Path:
        """The folder of a new instance named ``name`` (blocking; hold ``catalog_lock``): refused when
        the name is taken or the folder exists."""
        self.ensure_name_free(name)
        folder = launch.instance_dir(self.settings, name)
        if folder.exists():
            raise Conflict(f'Folder {folder} already exists; move it away or choose another name')
        return folder

    def access_pattern(self, pattern: AccessPattern) -> AccessPattern:
        """``pattern`` if this panel serves it, else refused (422)."""
        if pattern not in self.access_patterns:
            raise InvalidInput(
                f'Access pattern {pattern.value!r} needs the NGINX proxy, which is off here (AIKORE_NGINX=off or '
                "nginx not installed): use 'port'"
            )
        return pattern

    def _refuse_if_being_cloned(self, instance: Instance, action: str) -> None:
        """A clone's copy reads the source's folder: it may not move or go meanwhile."""
        if instance.id is not None and self.copies.copying_from(instance.id):
            raise Conflict(f'Cannot {action} {instance.name!r}: it is being cloned; wait or cancel the clone')

    def _refuse_if_parent(self, instance: Instance, action: str) -> None:
        """A parent's satellites run its folder: it may not move or go while they exist."""
        satellites = store.satellites_of(self.engine, instance.id or 0)
        if satellites:
            names = [satellite.name for satellite in satellites]
            raise Conflict(
                f'Cannot {action} {instance.name!r}: its satellites {", ".join(names)} run from its folder; '
                'delete them first',
                satellites=names,
            )

    def _rename_folder(self, old: str, new: str) -> None:
        source, target = launch.instance_dir(self.settings, old), launch.instance_dir(self.settings, new)
        if target.exists() and source.resolve() != target.resolve():
            raise Conflict(f'Folder {target} already exists; cannot rename {old!r} to {new!r}')
        if source.exists():
            source.rename(target)

    def _replace_script(self, name: str, blueprint_path: Path) -> None:
        script = launch.script_path(self.settings, name)
        if script.exists():
            shutil.copyfile(script, script.with_name(f'{launch.LAUNCH_SCRIPT}.bak'))
        shutil.copyfile(blueprint_path, script)

    def ensure_name_free(self, name: str, except_id: int | None = None) -> None:
        if name.lower() in panel_host_labels(self.settings):
            raise InvalidInput(
                f"{name!r} is the first part of the panel's own host name: the instance's origin "
                f"({name.lower()}.<host>) would take the panel's place there; choose another name"
            )
        existing = store.find_by_slug(self.engine, name.lower())
        if existing is not None and existing.id != except_id:
            raise Conflict(f'An instance named {existing.name!r} already exists (names ignore case)')

    async def suggested_public_port(self) -> int:
        return await asyncio.to_thread(self.suggest_public_port)

    def suggest_public_port(self) -> int:
        """The lowest port of the range no instance uses (ports may be shared, so never none)."""
        used = store.public_ports(self.engine)
        low, high = self.settings.port_range
        return next((port for port in range(low, high + 1) if port not in used), low)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, instance_id: int) -> InstancePublic:
        return await self.supervisor.start(instance_id)

    async def stop(self, instance_id: int) -> InstancePublic:
        return await self.supervisor.stop(instance_id)

    async def restart(self, instance_id: int) -> InstancePublic:
        return await self.supervisor.restart(instance_id)

    async def start_autostart(self) -> list[str]:
        """Start every autostart instance that is not running (at panel start). Each start is on
        its own: one that fails is logged with its cause and the others start; the sentences are returned."""
        problems: list[str] = []
        for listed in await asyncio.to_thread(store.list_all, self.engine):
            if not (listed.autostart and listed.id is not None and listed.status in STARTABLE):
                continue
            # The API answers from here on: the row is read again under its lock, so an instance a
            # user (or a script) started meanwhile is not reported as an autostart failure.
            async with self.rows.hold(listed.id):
                try:
                    instance = await asyncio.to_thread(store.get, self.engine, listed.id)
                except NotFound:
                    continue
                if not instance.autostart or instance.status not in STARTABLE or self.supervisor.is_running(listed.id):
                    continue
                try:
                    await self.supervisor.start(listed.id)
                except (Conflict, InvalidInput, NotFound) as exc:
                    log.warning('Autostart of %s failed: %s', instance.name, exc.detail)
                    problems.append(f'Autostart of {instance.name} failed: {exc.detail}')
                except Exception as exc:
                    log.error('Autostart of %s failed: %s', instance.name, exc, exc_info=not isinstance(exc, OSError))
                    problems.append(f'Autostart of {instance.name} failed: {exc}')
        return problems

    # ------------------------------------------------------------------ script and logs

    async def read_script(self, instance_id: int) -> str:
        """The instance's launch script (a satellite's: its parent's, which it runs)."""
        instance = await asyncio.to_thread(store.get, self.engine, instance_id)
        if instance.parent_id is not None:
            instance = await asyncio.to_thread(store.get, self.engine, instance.parent_id)
        script = launch.script_path(self.settings, instance.name)
        try:
            return await asyncio.to_thread(script.read_text, encoding='utf-8', errors='replace')
        except FileNotFoundError:
            raise NotFound(f'{instance.name!r} has no launch script') from None

    async def write_script(self, instance_id: int, body: bytes) -> None:
        text = validation.script_text(body)
        async with self.rows.hold(instance_id):  # a delete or rename never moves the folder under it
            instance = await asyncio.to_thread(store.get, self.engine, instance_id)
            if instance.parent_id is not None:
                raise Conflict(f'{instance.name!r} is a satellite: it runs the launch script of its parent')
            if instance.status == S.INSTALLING:
                raise Conflict(f'{instance.name!r} is being copied: wait for the copy to end')
            await asyncio.to_thread(self._write_script, instance.name, text)

    def _write_script(self, name: str, text: str) -> None:
        folder = launch.instance_dir(self.settings, name)
        folder.mkdir(parents=True, exist_ok=True)
        write_script_atomic(folder / launch.LAUNCH_SCRIPT, text)

    def log_file(self, name: str) -> Path:
        return launch.log_path(self.settings, name)

    async def whole_log(self, name: str) -> AsyncIterator[bytes]:
        """The current run's log from its start, rotated parts included, chunk by chunk."""
        path, offset = self.log_file(name), 0
        while True:
            chunk = await asyncio.to_thread(logs.read_chunk, path, offset)
            if not chunk.text or (chunk.reset and offset):
                return
            yield chunk.text.encode()
            offset = chunk.next_offset

    async def read_log(self, instance_id: int, offset: int) -> LogChunk:
        if offset < 0:
            raise InvalidInput('offset must be 0 or more')
        instance = await asyncio.to_thread(store.get, self.engine, instance_id)
        path = self.log_file(instance.name)
        return await asyncio.to_thread(logs.read_chunk, path, offset)

    # ------------------------------------------------------------------ delete and trash

    async def delete(self, instance_id: int, only_a_copy: bool = False) -> None:
        """Into the trash; a clone still being copied is cancelled and leaves nothing (no row, no folder).
        ``only_a_copy``: cancel a copy, refusing (409) when the instance is not being copied."""
        await self.copies.cancel(instance_id)  # outside the lock: the copy's last step takes it
        async with self.rows.hold(instance_id), self.catalog_lock:
            instance = await asyncio.to_thread(store.get, self.engine, instance_id)
            if only_a_copy and instance.status != S.INSTALLING:
                raise Conflict(f'{instance.name!r} is not being copied (it is {instance.status}): nothing to cancel')
            if instance.status == S.INSTALLING:
                await asyncio.to_thread(self._drop_unfinished, instance)
                self.removed.publish(instance_id)
                log.info('Cancelled the clone %s: its copy and its row are gone', instance.name)
                return
            if self.supervisor.is_running(instance_id) or instance.status not in DELETABLE:
                raise Conflict(f'Stop {instance.name!r} before deleting it (it is {instance.status})')
            self._refuse_if_being_cloned(instance, 'delete')
            await asyncio.to_thread(self._refuse_if_parent, instance, 'delete')
            self.supervisor.forget(instance_id)
            entry = await asyncio.to_thread(trash.move_instance, self.settings, instance)
            await asyncio.to_thread(store.delete, self.engine, instance_id)
            # Its desktop's profile and state (ids are never reused: nothing would ever read them).
            await asyncio.to_thread(shutil.rmtree, desktop_folder(self.settings, instance_id), True)
        self.removed.publish(instance_id)
        log.info('Moved instance %s to the trash as %s', instance.name, entry)

    def _drop_unfinished(self, instance: Instance) -> None:
        shutil.rmtree(launch.instance_dir(self.settings, instance.name), ignore_errors=True)
        store.delete(self.engine, instance.id or 0)


def panel_host_labels(settings: Settings) -> set[str]:
    """Names an instance may not have: ``<name>.<domain>`` is, or may be, the panel's own host
    (its subdomain route would capture the panel's requests there)."""
    labels = {'localhost', socket.gethostname().split('.')[0].lower()}
    if settings.public_host and not is_ip(split_entry(settings.public_host)[0]):
        labels.add(settings.public_host.split('.')[0].lower())
    return labels
