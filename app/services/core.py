"""The long-lived services of one panel, built once at start and shared by API and pages."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from ..config import Settings
from ..db import prepare_database
from ..models import InstancePublic
from .access import auth
from .access.sessions import Sessions
from .catalog.blueprints import BlueprintStore
from .catalog.instances import InstanceService
from .consoles.log_stream import LogStreams
from .consoles.terminals import Terminals
from .events import EventBus
from .monitoring.gpu_source import GpuSource
from .monitoring.gpus import default_source
from .monitoring.monitor import Monitor
from .net.network import Network
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
    api_token: str
    sessions: Sessions
    monitor: Monitor
    network: Network
    log_streams: LogStreams = field(default_factory=LogStreams)
    terminals: Terminals = field(default_factory=Terminals)  # interactive shells (Terminal tab)
    ready: bool = False  # earlier runs re-adopted: requests may act on instances now

    @classmethod
    def open(cls, settings: Settings, gpu_source: GpuSource | None = None) -> Core:
        """Lay out the data directory, open/upgrade the database, load credentials (blocking).
        ``gpu_source`` replaces NVML (tests hand in a fake one)."""
        settings.ensure_layout()
        engine = prepare_database(settings.db_path)
        token, generated = auth.api_token(settings.secrets_path, settings.api_token)
        if generated:
            log.warning('API token generated and stored in %s: %s', settings.secrets_path, token)
        events: EventBus[InstancePublic] = EventBus('instances')
        blueprints = BlueprintStore(settings.stock_blueprints_dir, settings.custom_blueprints_dir)
        supervisor = Supervisor(settings, engine, blueprints, events)
        gpus = gpu_source or default_source()
        network = Network.open(settings, engine, events, token)
        patterns = network.access_patterns
        instances = InstanceService(
            settings, engine, blueprints, supervisor, events, gpu_count=gpus.count, access_patterns=patterns
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
            api_token=token,
            sessions=sessions,
            monitor=monitor,
            network=network,
        )

    async def startup(self) -> None:
        """Re-adopt what an earlier panel left running, then start autostart instances."""
        await self.supervisor.adopt_all()
        await self.network.startup(self.events, self.instances.removed)
        self.ready = True
        await self.instances.start_autostart()
        await self.monitor.start()

    async def rotate_api_token(self) -> str:
        """A new API token (answered once); the old one stops working at once, in the panel and
        in nginx's config. 409 when AIKORE_API_TOKEN sets it."""
        token = await asyncio.to_thread(auth.rotate_api_token, self.settings.secrets_path, self.settings.api_token)
        self.api_token = token
        await self.network.api_token_changed(token)
        return token

    async def shutdown(self) -> None:
        await self.monitor.stop()
        self.log_streams.shutdown()
        await self.terminals.close_all()
        await self.supervisor.shutdown()
        await self.network.shutdown()
        await asyncio.to_thread(self.engine.dispose)


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
