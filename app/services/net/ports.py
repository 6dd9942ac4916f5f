"""Public ports: a socat forwarder from an instance's public port to its internal port.

Activate maps the public port (``socat -b 262144 TCP-LISTEN:P,bind=<AIKORE_HOST>,fork,
reuseaddr TCP:127.0.0.1:Q``, its own session and process group); Deactivate kills that
group, which cuts live connections too. ``active`` (in the database) means "mapped whenever
the instance runs": the forwarder is up while the instance is ``started`` or ``stalled``,
down (connections refused) while it is stopped or starting, and follows the new internal
port at each start. Forwarders outlive the panel: each one is recorded in
``<data>/ports/<P>.json`` (pid + start time) and re-adopted, or re-created, at the next start.

Rules: activation needs a running instance (``starting`` counts: it maps once ready);
only one instance is active on a port — another one's activation answers 409 naming the
holder unless forced, which deactivates the holder first; a port held by any other program
answers 409 and is never taken over.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import Engine

from ...config import Settings
from ...lifecycle import ACTIVATABLE, SERVING
from ...models import Executor, Instance, InstancePublic
from ..catalog import store
from ..catalog.rows import InstanceRows
from ..errors import Conflict, InvalidInput, NotFound
from ..events import EventBus
from ..runtime import units
from ..runtime.launch import port_in_use
from ..tasks import BackgroundTasks

log = logging.getLogger(__name__)

BUFFER = 262144
LISTEN_TIMEOUT = 3.0
STOP_TIMEOUT = 2.0
POLL = 0.005
# Mapped again after it ends on its own (the unit's back-off); one failed try hands the
# instance to reconcile, which maps it afresh or deactivates it (e.g. another program took the port).
FORWARDER_POLICY = units.RestartPolicy(units.RestartMode.ALWAYS, start_retries=0)


@dataclass(eq=False)
class Forwarder:
    """One public port mapped for one instance: a supervised unit of one socat process."""

    instance_id: int
    public_port: int
    internal_port: int
    unit: units.Unit

    @property
    def pid(self) -> int | None:
        return self.unit.pid


class Ports:
    def __init__(self, settings: Settings, engine: Engine, rows: InstanceRows) -> None:
        self.settings = settings
        self.engine = engine
        self.rows = rows  # the one writer of instance rows, and the per-instance lock (taken before ``_lock``)
        self.events = rows.events
        self.folder = settings.data_dir / 'ports'
        self.socat = shutil.which('socat')
        self._forwarders: dict[int, Forwarder] = {}
        self._lock = asyncio.Lock()
        self._unsubscribe: list[Any] = []
        self._background = BackgroundTasks('Public ports')

    # ------------------------------------------------------------------ start / exit

    async def startup(self, removed: EventBus[int]) -> None:
        """Re-adopt the forwarders an earlier panel left, then bring every instance to its wanted state."""
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        async with self._lock:
            for forwarder in await self._adopt_all():
                await self._take_back(forwarder)
        # Followed from here: a change while the instances are brought in line below is not missed.
        self._unsubscribe = [self.events.subscribe(self._on_instance), removed.subscribe(self._on_removed)]
        instances = await asyncio.to_thread(store.list_all, self.engine)
        wanted = {row.id for row in instances if row.active and row.id is not None} | set(self._forwarders)
        for instance_id in sorted(wanted):
            await self.reconcile(instance_id)

    async def _take_back(self, forwarder: Forwarder) -> None:
        """An earlier panel's forwarder, still running. The pages answer while the panel starts: an
        Activate pressed before this point may have mapped the instance already, and that forwarder
        stays. Its own process (recorded in the same file) is not watched a second time; another
        one of the instance (an older port) is ended. Two units of one instance, one forgotten,
        kept a port serving after Deactivate (the forgotten one mapped it again)."""
        current = self._forwarders.get(forwarder.instance_id)
        if current is None:
            self._forwarders[forwarder.instance_id] = forwarder
            log.info('Re-adopted the forwarder of port %s (pid %s)', forwarder.public_port, forwarder.pid)
        elif current.pid == forwarder.pid:
            forwarder.unit.release()
        else:
            log.info('Ending the old forwarder of port %s (pid %s): its instance is mapped on port %s now',
                     forwarder.public_port, forwarder.pid, current.public_port)  # fmt: skip
            await self._stop(forwarder)

    async def shutdown(self) -> None:
        """Forwarders keep serving without the panel, unless AIKORE_STOP_ON_EXIT stopped the instances too."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._background.cancel_all()
        async with self._lock:
            for forwarder in list(self._forwarders.values()):
                if self.settings.stop_on_exit:
                    await self._stop(forwarder)
                else:
                    forwarder.unit.release()
            self._forwarders.clear()

    # ------------------------------------------------------------------ activate / deactivate

    async def activate(self, instance_id: int, force: bool = False) -> InstancePublic:
        while True:  # the holder of the port is locked too; if it changed meanwhile, look again
            peeked = await asyncio.to_thread(self._holder_of, instance_id)
            async with self.rows.hold(instance_id, *([peeked] if peeked is not None else [])):
                instance = await asyncio.to_thread(store.get, self.engine, instance_id)
                holder = await asyncio.to_thread(self._holder, instance.public_port, instance_id)
                if (holder.id if holder is not None else None) == peeked:
                    async with self._lock:
                        return await self._activate(instance, holder, force)

    def _holder_of(self, instance_id: int) -> int | None:
        instance = store.get(self.engine, instance_id)
        holder = self._holder(instance.public_port, instance_id)
        return holder.id if holder is not None else None

    async def _activate(self, instance: Instance, holder: Instance | None, force: bool) -> InstancePublic:
        assert instance.id is not None
        instance_id = instance.id
        port = instance.public_port
        if instance.executor == 'slurm':
            raise InvalidInput(f'{instance.name!r} runs on Slurm: it is reached through the proxy, not a public port')
        if port is None:
            raise Conflict(f'{instance.name!r} has no public port: set public_port first')
        current = self._forwarders.get(instance_id)
        if instance.active and (current is not None or instance.status not in SERVING):
            return store.to_public(instance)
        if instance.status not in ACTIVATABLE:
            raise Conflict(f'Start {instance.name!r} before activating its public port {port} '
                           f'(it is {instance.status})')  # fmt: skip
        if holder is not None and not force:
            raise Conflict(
                f'Public port {port} is held by instance {holder.name!r}; activate with force=true to take it '
                'over (that instance is deactivated and its connections are cut)',
                holder={'id': holder.id, 'name': holder.name},
            )
        self._require_socat()
        await self._refuse_foreign(port)
        if holder is not None and holder.id is not None:
            await self._release(holder.id)
            log.info('%s takes public port %s over from %s', instance.name, port, holder.name)
        if instance.status in SERVING and instance.internal_port:
            await self._start(instance_id, port, instance.internal_port)
        return await self._set_active(instance_id, True)

    async def deactivate(self, instance_id: int) -> InstancePublic:
        async with self.rows.hold(instance_id), self._lock:
            instance = await asyncio.to_thread(store.get, self.engine, instance_id)
            forwarder = self._forwarders.pop(instance_id, None)
            if forwarder is not None:
                await self._stop(forwarder)
            if not instance.active:
                return store.to_public(instance)
            return await self._set_active(instance_id, False)

    async def _release(self, instance_id: int) -> None:
        forwarder = self._forwarders.pop(instance_id, None)
        if forwarder is not None:
            await self._stop(forwarder)
        await self._set_active(instance_id, False)

    def _holder(self, port: int | None, instance_id: int) -> Instance | None:
        if port is None:
            return None
        for row in store.list_all(self.engine):
            if row.active and row.public_port == port and row.id != instance_id:
                return row
        return None

    def _require_socat(self) -> None:
        if self.socat is None:
            raise Conflict('socat is not installed, so public ports cannot be mapped: install it '
                           '(apt-get install socat, or make setup) and restart the panel')  # fmt: skip

    async def _refuse_foreign(self, port: int) -> None:
        ours = any(f.public_port == port for f in self._forwarders.values())
        if not ours and await asyncio.to_thread(port_in_use, self.settings.host, port):
            raise Conflict(f'Public port {port} is in use by another program on this machine (not an AiKore '
                           'instance): stop that program or choose another public port')  # fmt: skip

    async def _set_active(self, instance_id: int, active: bool) -> InstancePublic:
        return await self.rows.update(instance_id, active=active)

    # ------------------------------------------------------------------ following instances

    def _on_instance(self, public: InstancePublic) -> Awaitable[None] | None:
        if public.active or public.id in self._forwarders:
            return self.reconcile(public.id)
        return None

    def _on_removed(self, instance_id: int) -> Awaitable[None] | None:
        return self.reconcile(instance_id) if instance_id in self._forwarders else None

    async def reconcile(self, instance_id: int) -> None:
        """Bring the instance's forwarder to what its row wants (up on the right ports, or down)."""
        async with self.rows.hold(instance_id), self._lock:
            try:
                instance: Instance | None = await asyncio.to_thread(store.get, self.engine, instance_id)
            except NotFound:
                instance = None
            current = self._forwarders.get(instance_id)
            want = _wanted(instance)
            if current is not None and want == (current.public_port, current.internal_port):
                return
            if current is not None:
                del self._forwarders[instance_id]
                await self._stop(current)
            if want is None or instance is None:
                return
            try:
                await self._refuse_foreign(want[0])
                self._require_socat()
                await self._start(instance_id, *want)
            except Conflict as exc:
                log.warning('Deactivating %s: its public port cannot be mapped: %s', instance.name, exc.detail)
                await self._set_active(instance_id, False)

    # ------------------------------------------------------------------ forwarder processes

    async def _start(self, instance_id: int, public_port: int, internal_port: int) -> None:
        forwarder = self._forwarder(instance_id, public_port, internal_port)
        try:
            await forwarder.unit.start()
        except units.StartFailed as exc:
            raise Conflict(f'Could not listen on public port {public_port}: {self._log_tail(public_port)}') from exc
        self._forwarders[instance_id] = forwarder
        log.info('Public port %s -> internal port %s (socat pid %s)', public_port, internal_port, forwarder.pid)

    def _forwarder(self, instance_id: int, public_port: int, internal_port: int) -> Forwarder:
        """The unit of one socat in its own session: ending its group cuts live connections too.
        It outlives the panel, recorded in ``<data>/ports/<P>.json``; if it ends on its own, it is
        mapped again (back-off); if that fails, the instance's wanted state is reconciled."""
        assert self.socat is not None
        command = [
            self.socat, '-b', str(BUFFER),
            f'TCP-LISTEN:{public_port},bind={self.settings.host},fork,reuseaddr,nodelay',
            f'TCP:127.0.0.1:{internal_port},nodelay',
        ]  # fmt: skip
        spec = units.ProcessSpec('socat', command, cwd=self.folder, output=self._log_path(public_port))
        extra = {'instance_id': instance_id, 'public_port': public_port, 'internal_port': internal_port}
        unit = units.Unit(
            f'forwarder of public port {public_port}',
            [spec],
            policy=FORWARDER_POLICY,
            state_file=self._state_path(public_port),
            extra=extra,
            ready=lambda pids: _listens(pids[0], public_port),
            start_timeout=LISTEN_TIMEOUT,
            stop_grace=STOP_TIMEOUT,
            poll=POLL,
            identify=lambda _name, pid: _is_socat_of(pid, public_port),
            on_fatal=lambda unit, _exc: self._spawn_task(self._gave_up(instance_id, unit)),
        )
        return Forwarder(instance_id, public_port, internal_port, unit)

    async def _stop(self, forwarder: Forwarder) -> None:
        """Kill the forwarder's whole group: the listener and every live connection."""
        pid = forwarder.unit.pid
        await forwarder.unit.stop()
        log.info('Public port %s unmapped (socat pid %s ended)', forwarder.public_port, pid)

    async def _gave_up(self, instance_id: int, unit: units.Unit) -> None:
        """It ended on its own and could not be mapped again: bring the instance to its wanted state."""
        async with self.rows.hold(instance_id), self._lock:
            forwarder = self._forwarders.get(instance_id)
            if forwarder is None or forwarder.unit is not unit:
                return
            del self._forwarders[instance_id]
        await self.reconcile(instance_id)

    def _spawn_task(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._background.spawn(coroutine)

    # ------------------------------------------------------------------ state files

    def _state_path(self, public_port: int) -> Path:
        return self.folder / f'{public_port}.json'

    def _log_path(self, public_port: int) -> Path:
        return self.folder / f'{public_port}.log'

    def _log_tail(self, public_port: int) -> str:
        try:
            lines = self._log_path(public_port).read_text(errors='replace').strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else 'socat did not start listening'

    async def _adopt_all(self) -> list[Forwarder]:
        """Forwarders recorded by an earlier panel that still run (same pid and start time, our
        command); the files of the others are removed."""
        found = []
        for path in sorted(await asyncio.to_thread(lambda: list(self.folder.glob('*.json')))):
            record = await asyncio.to_thread(units.read_state, path)
            ports = _recorded_ports(record) if record is not None else None
            if record is not None and ports is not None and path == self._state_path(ports[1]) and self.socat:
                forwarder = self._forwarder(*ports)
                if await forwarder.unit.adopt(record):  # (removes the file if they are gone)
                    found.append(forwarder)
                continue
            await asyncio.to_thread(path.unlink, missing_ok=True)
        return found


def _wanted(instance: Instance | None) -> tuple[int, int] | None:
    """(public, internal) port the instance's forwarder should map now, or None for no forwarder."""
    if instance is None or not instance.active or instance.public_port is None:
        return None
    if instance.executor == Executor.SLURM:  # its internal port is on its node, not here
        return None
    if instance.status not in SERVING or not instance.internal_port:
        return None
    return instance.public_port, instance.internal_port


def _recorded_ports(record: units.UnitRecord) -> tuple[int, int, int] | None:
    """(instance id, public port, internal port) of a forwarder's state file."""
    try:
        extra = record.extra
        return int(extra['instance_id']), int(extra['public_port']), int(extra['internal_port'])
    except (KeyError, TypeError, ValueError):
        return None


def _is_socat_of(pid: int, public_port: int) -> bool:
    try:
        command = ' '.join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return 'socat' in command and f'TCP-LISTEN:{public_port},' in command


def _listens(pid: int, port: int) -> bool:
    try:
        connections = psutil.Process(pid).net_connections(kind='tcp')
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)
