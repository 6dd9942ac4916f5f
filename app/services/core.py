"""The long-lived services of one panel, built once at start and shared by API and pages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from ..config import Settings
from ..db import prepare_database
from ..models import InstancePublic
from .access import auth
from .access.sessions import Sessions
from .catalog.blueprints import BlueprintStore
from .catalog.environments import EnvironmentService
from .catalog.families import FamilyService
from .catalog.instances import InstanceService
from .catalog.orphans import ORPHANS_PREFIX, OrphanFolders, orphans_problem
from .catalog.rows import InstanceRows
from .catalog.trash import Trash
from .consoles.log_stream import LogStreams
from .consoles.terminals import Terminals
from .errors import ServiceError
from .events import EventBus
from .monitoring.disk import LOW_DISK_PREFIX, DiskUsage, VolumeDisk, low_disk_problem
from .monitoring.gpu_source import GpuSource, default_source
from .monitoring.monitor import Monitor
from .net.network import Network
from .net.nginx import NginxError
from .runtime.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class Core:
    settings: Settings
    engine: Engine
    events: EventBus[InstancePublic]
    blueprints: BlueprintStore
    supervisor: Supervisor
    instances: InstanceService
    trash: Trash  # deleted instances: list, restore, purge
    orphans: OrphanFolders
    api_token: str
    sessions: Sessions
    monitor: Monitor
    network: Network
    disk: DiskUsage
    families: FamilyService  # clones and satellites
    environments: EnvironmentService  # rebuild, versions, pins
    log_streams: LogStreams = field(default_factory=LogStreams)
    terminals: Terminals = field(default_factory=Terminals)  # interactive shells (Terminal tab)
    ready: bool = False  # earlier runs re-adopted: requests may act on instances now
    started: bool = False  # every start step done (autostart, monitor, disk counts): the panel is settled
    # What went wrong at start (one sentence each): /api/health says "degraded", the dashboard shows them.
    problems: list[str] = field(default_factory=list)
    problems_changed: EventBus[list[str]] = field(default_factory=lambda: EventBus('problems'))

    @classmethod
    def open(cls, settings: Settings, gpu_source: GpuSource | None = None) -> Core:
        """Lay out the data directory, open/upgrade the database, load credentials (blocking).
        ``gpu_source`` replaces NVML (tests hand in a fake one)."""
        settings.ensure_layout()
        engine = prepare_database(settings.db_path)
        token, generated = auth.api_token(settings.secrets_path, settings.api_token)
        if generated:  # never the token itself in a log: say where it is
            log.warning('API token generated and stored in %s (print it with: aikore token)', settings.secrets_path)
        events: EventBus[InstancePublic] = EventBus('instances')
        blueprints = BlueprintStore(settings.stock_blueprints_dir, settings.custom_blueprints_dir)
        rows = InstanceRows(engine, events)
        supervisor = Supervisor(settings, engine, blueprints, rows)
        gpus = gpu_source or default_source()
        network = Network.open(settings, engine, rows, token)
        patterns = network.access_patterns
        instances = InstanceService(
            settings, engine, blueprints, supervisor, rows, gpu_count=gpus.count, access_patterns=patterns
        )
        monitor = Monitor(supervisor, gpus, settings.data_dir, settings.monitor_interval)
        sessions = Sessions(settings.secrets_path, settings.data_dir / 'sessions.json', settings.password)
        if sessions.generated_password:
            log.warning('Login password generated (shown once, stored hashed): %s', sessions.generated_password)
        return cls(
            settings=settings,
            engine=engine,
            events=events,
            blueprints=blueprints,
            supervisor=supervisor,
            instances=instances,
            trash=Trash(instances),
            orphans=OrphanFolders(instances),
            api_token=token,
            sessions=sessions,
            monitor=monitor,
            network=network,
            disk=DiskUsage(settings, engine),
            families=FamilyService(instances),
            environments=EnvironmentService(settings, engine, supervisor),
        )

    async def startup(self) -> None:
        """Re-adopt what an earlier panel left running, start the proxy, start autostart instances,
        then the monitor. Each step is isolated: a failure is logged with its cause, kept in
        ``problems`` and the next step runs. Only a proxy that cannot serve the panel at all
        (``NginxError``) stops the start: the panel could not be reached."""
        await self._step('Re-adopting running instances', self._adopt)
        await self._step('Clones cut short', self._recover_clones)
        await self._step('Looking for instance folders without an instance', self.check_orphans)
        await self._start_network()
        self.ready = True
        await self._step('Autostart', self._autostart)
        await self._step('Monitor', self.monitor.start)
        self.disk.volume_checked = self.volume_checked
        self.disk.start()
        self.started = True

    async def _adopt(self) -> None:
        for problem in await self.supervisor.adopt_all():
            self.add_problem(problem)

    async def _recover_clones(self) -> None:
        for problem in await self.families.recover():
            self.add_problem(problem)

    async def _autostart(self) -> None:
        for problem in await self.instances.start_autostart():
            self.add_problem(problem)

    async def _start_network(self) -> None:
        try:
            await self.network.startup(self.events, self.instances.removed)
        except NginxError:
            raise
        except Exception as exc:
            proxy = self.network.proxy
            if self.network.mode == 'managed' and proxy is not None and not proxy.status().running:
                raise NginxError(describe(exc)) from exc  # nobody can reach the panel
            self._failed('Networking', exc)

    async def _step(self, what: str, step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except Exception as exc:
            self._failed(what, exc)

    def _failed(self, what: str, exc: Exception) -> None:
        known = isinstance(exc, OSError | ServiceError)  # a cause the sentence says all about
        log.error('%s failed at start: %s', what, describe(exc), exc_info=None if known else exc)
        self.add_problem(f'{what} failed: {describe(exc)}')

    async def check_orphans(self) -> None:
        """Say (health, dashboard) while instance folders have no row; quiet once none are left."""
        problem = orphans_problem(await self.orphans.find())
        kept = [known for known in self.problems if not known.startswith(ORPHANS_PREFIX)]
        if problem is not None:
            log.warning('%s', problem)
            kept.append(problem)
        if kept != self.problems:
            self.problems[:] = kept
            self.problems_changed.publish(list(self.problems))

    def volume_checked(self, volume: VolumeDisk) -> None:
        """Say (health, dashboard) while the data volume is nearly full; quiet once it is not."""
        problem = low_disk_problem(volume)
        kept = [known for known in self.problems if not known.startswith(LOW_DISK_PREFIX)]
        if problem is not None:
            kept.append(problem)
            if not any(known.startswith(LOW_DISK_PREFIX) for known in self.problems):
                log.warning('%s', problem)  # once, when it begins
        if kept != self.problems:
            self.problems[:] = kept
            self.problems_changed.publish(list(self.problems))

    async def adopt_orphan(self, name: str) -> InstancePublic:
        public = await self.orphans.adopt(name)
        await self.check_orphans()
        return public

    async def trash_orphan(self, name: str) -> str:
        entry = await self.orphans.trash(name)
        await self.check_orphans()
        return entry

    def add_problem(self, problem: str) -> None:
        """Record something that went wrong (already logged by whoever found it)."""
        self.problems.append(problem)
        self.problems_changed.publish(list(self.problems))

    async def rotate_api_token(self) -> str:
        """A new API token (answered once); the old one stops working at once, in the panel and
        in nginx's config. 409 when AIKORE_API_TOKEN sets it."""
        token = await asyncio.to_thread(auth.rotate_api_token, self.settings.secrets_path, self.settings.api_token)
        self.api_token = token
        await self.network.api_token_changed(token)
        return token

    async def shutdown(self) -> None:
        self.disk.stop()
        await self.monitor.stop()
        self.log_streams.shutdown()
        await self.terminals.close_all()
        await self.instances.copies.cancel_all()
        await self.supervisor.shutdown()
        await self.network.shutdown()
        await asyncio.to_thread(self.engine.dispose)


def describe(exc: BaseException) -> str:
    """One sentence for an exception: its detail, else its message, else its type."""
    if isinstance(exc, ServiceError):
        return exc.detail
    return str(exc) or type(exc).__name__


_current: Core | None = None


def set_current(core: Core | None) -> None:
    global _current
    _current = core


def current() -> Core:
    if _current is None:
        raise RuntimeError('AiKore services are not started yet')
    return _current


def started() -> bool:
    return _current is not None


def ready() -> bool:
    return _current is not None and _current.ready
