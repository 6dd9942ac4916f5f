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
import contextlib
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import Engine

from ...config import Settings
from ...lifecycle import ACTIVATABLE, SERVING
from ...models import Instance, InstancePublic
from ..catalog import store as store
from ..catalog.rows import InstanceRows
from ..errors import Conflict, NotFound
from ..events import EventBus
from ..runtime import processes
from ..runtime.launch import port_in_use

log = logging.getLogger(__name__)

BUFFER = 262144
LISTEN_TIMEOUT = 3.0
STOP_TIMEOUT = 2.0
POLL = 0.005
HEALTHY_LIFE = 60.0
MAX_BACKOFF = 30.0


@dataclass(eq=False)
class Forwarder:
    instance_id: int
    public_port: int
    internal_port: int
    pid: int
    started_at: float | None
    popen: subprocess.Popen[bytes] | None = None  # None when adopted from an earlier panel
    exit_watch: processes.ExitWatch | None = None
    stopping: bool = False
    born: float = 0.0


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
        self._failures: dict[int, int] = {}
        self._unsubscribe: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ start / exit

    async def startup(self, removed: EventBus[int]) -> None:
        """Re-adopt the forwarders an earlier panel left, then bring every instance to its wanted state."""
        await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        async with self._lock:
            for forwarder in await asyncio.to_thread(self._adoptable):
                self._forwarders[forwarder.instance_id] = forwarder
                self._watch(forwarder)
                log.info('Re-adopted the forwarder of port %s (pid %s)', forwarder.public_port, forwarder.pid)
        instances = await asyncio.to_thread(store.list_all, self.engine)
        wanted = {row.id for row in instances if row.active and row.id is not None} | set(self._forwarders)
        for instance_id in sorted(wanted):
            await self.reconcile(instance_id)
        self._unsubscribe = [self.events.subscribe(self._on_instance), removed.subscribe(self._on_removed)]

    async def shutdown(self) -> None:
        """Forwarders keep serving without the panel, unless AIKORE_STOP_ON_EXIT stopped the instances too."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        async with self._lock:
            for forwarder in list(self._forwarders.values()):
                if self.settings.stop_on_exit:
                    await self._stop(forwarder)
                else:
                    self._unwatch(forwarder)
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
                log.error('Deactivating %s: its public port cannot be mapped: %s', instance.name, exc.detail)
                await self._set_active(instance_id, False)

    # ------------------------------------------------------------------ forwarder processes

    async def _start(self, instance_id: int, public_port: int, internal_port: int) -> None:
        assert self.socat is not None
        popen = await asyncio.to_thread(self._spawn, public_port, internal_port)
        forwarder = Forwarder(instance_id, public_port, internal_port, popen.pid,
                              processes.start_time(popen.pid), popen, born=time.monotonic())  # fmt: skip
        try:
            await self._wait_listening(forwarder)
        except Conflict:
            await self._stop(forwarder)
            raise
        await asyncio.to_thread(self._record, forwarder)
        self._forwarders[instance_id] = forwarder
        self._watch(forwarder)
        log.info('Public port %s -> internal port %s (socat pid %s)', public_port, internal_port, popen.pid)

    def _spawn(self, public_port: int, internal_port: int) -> subprocess.Popen[bytes]:
        assert self.socat is not None
        command = [
            self.socat, '-b', str(BUFFER),
            f'TCP-LISTEN:{public_port},bind={self.settings.host},fork,reuseaddr,nodelay',
            f'TCP:127.0.0.1:{internal_port},nodelay',
        ]  # fmt: skip
        with self._log_path(public_port).open('ab') as errors:
            return subprocess.Popen(command, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                                    start_new_session=True, close_fds=True)  # fmt: skip

    async def _wait_listening(self, forwarder: Forwarder) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not await asyncio.to_thread(_listens, forwarder.pid, forwarder.public_port):
            assert forwarder.popen is not None
            if forwarder.popen.poll() is not None or time.monotonic() > deadline:
                detail = self._log_tail(forwarder.public_port)
                raise Conflict(f'Could not listen on public port {forwarder.public_port}: {detail}')
            await asyncio.sleep(POLL)

    async def _stop(self, forwarder: Forwarder) -> None:
        """Kill the forwarder's whole group: the listener and every live connection."""
        forwarder.stopping = True
        self._unwatch(forwarder)
        if forwarder.popen is not None or processes.is_same_process(forwarder.pid, forwarder.started_at):
            await processes.end_group(forwarder.pid, STOP_TIMEOUT, POLL)
        if forwarder.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(forwarder.popen.wait, 2)
        self._state_path(forwarder.public_port).unlink(missing_ok=True)
        log.info('Public port %s unmapped (socat pid %s ended)', forwarder.public_port, forwarder.pid)

    def _watch(self, forwarder: Forwarder) -> None:
        forwarder.exit_watch = processes.ExitWatch(forwarder.pid, lambda: self._on_exit(forwarder))

    def _unwatch(self, forwarder: Forwarder) -> None:
        if forwarder.exit_watch is not None:
            forwarder.exit_watch.close()

    def _on_exit(self, forwarder: Forwarder) -> None:
        if forwarder.popen is not None:
            forwarder.popen.poll()  # reap it
        if not forwarder.stopping:
            self._spawn_task(self._died(forwarder))

    async def _died(self, forwarder: Forwarder) -> None:
        """A forwarder ended on its own (killed from outside): map the port again, backing off."""
        if self._forwarders.get(forwarder.instance_id) is not forwarder:
            return
        healthy = time.monotonic() - forwarder.born >= HEALTHY_LIFE
        failures = 0 if healthy else self._failures.get(forwarder.instance_id, 0) + 1
        self._failures[forwarder.instance_id] = failures
        delay = min(MAX_BACKOFF, 0.25 * 2**failures) if failures else 0.0
        log.warning('The forwarder of public port %s ended on its own; mapping it again in %.2f s',
                    forwarder.public_port, delay)  # fmt: skip
        await asyncio.sleep(delay)
        async with self.rows.hold(forwarder.instance_id), self._lock:
            if self._forwarders.get(forwarder.instance_id) is forwarder:
                del self._forwarders[forwarder.instance_id]
                self._state_path(forwarder.public_port).unlink(missing_ok=True)
        await self.reconcile(forwarder.instance_id)

    def _spawn_task(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    def _record(self, forwarder: Forwarder) -> None:
        data = {
            'instance_id': forwarder.instance_id,
            'public_port': forwarder.public_port,
            'internal_port': forwarder.internal_port,
            'pid': forwarder.pid,
            'started_at': forwarder.started_at,
        }
        path = self._state_path(forwarder.public_port)
        temp = path.with_suffix('.tmp')
        temp.write_text(json.dumps(data))
        temp.replace(path)

    def _adoptable(self) -> list[Forwarder]:
        """Forwarders recorded by an earlier panel that still run (same pid and start time, our command)."""
        found = []
        for path in sorted(self.folder.glob('*.json')):
            try:
                data = json.loads(path.read_text())
                forwarder = Forwarder(int(data['instance_id']), int(data['public_port']), int(data['internal_port']),
                                      int(data['pid']), data.get('started_at'))  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if _is_our_forwarder(forwarder):
                forwarder.born = time.monotonic()
                found.append(forwarder)
            else:
                path.unlink(missing_ok=True)
        return found


def _wanted(instance: Instance | None) -> tuple[int, int] | None:
    """(public, internal) port the instance's forwarder should map now, or None for no forwarder."""
    if instance is None or not instance.active or instance.public_port is None:
        return None
    if instance.status not in SERVING or not instance.internal_port:
        return None
    return instance.public_port, instance.internal_port


def _is_our_forwarder(forwarder: Forwarder) -> bool:
    if not processes.is_same_process(forwarder.pid, forwarder.started_at):
        return False
    try:
        command = ' '.join(psutil.Process(forwarder.pid).cmdline())
    except psutil.Error:
        return False
    return 'socat' in command and f'TCP-LISTEN:{forwarder.public_port},' in command


def _listens(pid: int, port: int) -> bool:
    try:
        connections = psutil.Process(pid).net_connections(kind='tcp')
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections)
