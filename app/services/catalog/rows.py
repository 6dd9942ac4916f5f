"""The one writer of instance rows, and the one lock per instance.

Every write to an instance (status, pid, ports, active, configuration, restart count) goes
through ``InstanceRows``: a status change is checked against the lifecycle's table by the
same UPDATE statement that writes it (``WHERE status IN (allowed previous states)``), an
illegal one is refused and logged and never written, and exactly one event is published
after the commit, carrying the committed row.

``hold(id, ...)`` is the per-instance lock that start, stop, restart, delete, rename,
activate, restore and script writes serialise on. It is re-entrant within one task (a
``start`` holding it may call ``set_status``), and several are taken in id order, so two
holders never wait for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.engine import Engine

from ... import lifecycle
from ...models import Instance, InstancePublic, InstanceStatus
from ..errors import Conflict
from ..events import EventBus
from . import store

log = logging.getLogger(__name__)


class TransitionRefused(Conflict):
    """A status change the lifecycle does not allow from the row's current status."""


class _TaskLock:
    """An asyncio lock that the task holding it may take again."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    async def acquire(self) -> None:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            self._depth += 1
            return
        await self._lock.acquire()
        self._owner, self._depth = task, 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()

    def held_by_me(self) -> bool:
        return self._owner is not None and self._owner is asyncio.current_task()


class InstanceRows:
    def __init__(self, engine: Engine, events: EventBus[InstancePublic]) -> None:
        self.engine = engine
        self.events = events
        self._locks: dict[int, _TaskLock] = {}

    # ------------------------------------------------------------------ the lock

    @contextlib.asynccontextmanager
    async def hold(self, *instance_ids: int) -> AsyncIterator[None]:
        """Serialise on these instances (taken in id order; re-entrant in one task)."""
        taken: list[_TaskLock] = []
        try:
            for instance_id in sorted(set(instance_ids)):
                lock = self._locks.setdefault(instance_id, _TaskLock())
                await lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()

    def held(self, instance_id: int) -> bool:
        lock = self._locks.get(instance_id)
        return lock is not None and lock.held_by_me()

    # ------------------------------------------------------------------ writes

    async def set_status(self, instance_id: int, status: InstanceStatus, **fields: object) -> InstancePublic:
        """Change the status (checked against the lifecycle) and other fields; publish the committed row."""
        async with self.hold(instance_id):
            row = await asyncio.to_thread(self.write_status, instance_id, status, **fields)
            return self.publish(row)

    async def update(self, instance_id: int, **fields: object) -> InstancePublic:
        """Write fields other than the status; publish the committed row."""
        if 'status' in fields:
            raise ValueError('status changes go through set_status')
        async with self.hold(instance_id):
            return self.publish(await asyncio.to_thread(self._write, instance_id, fields))

    def _write(self, instance_id: int, fields: dict[str, Any]) -> Instance:
        row = store.update(self.engine, instance_id, **fields)
        assert row is not None  # no status condition: a missing row raised NotFound
        return row

    def write_status(self, instance_id: int, status: InstanceStatus, **fields: object) -> Instance:
        """Blocking part of ``set_status``, for a caller already in a worker thread that holds the
        instance's lock (and then calls ``publish`` on the event loop). One statement when allowed."""
        row = store.update(self.engine, instance_id, only_from=lifecycle.sources(status), status=status, **fields)
        if row is None:
            current = store.get(self.engine, instance_id)  # NotFound when the row is gone
            log.warning('Refused status change of %s: %s -> %s', current.name, current.status, status)
            raise TransitionRefused(
                f'{current.name!r} cannot go from {current.status} to {status}', status=str(current.status)
            )
        return row

    def publish(self, row: Instance) -> InstancePublic:
        public = store.to_public(row)
        self.events.publish(public)
        return public
