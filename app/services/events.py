"""In-process publish/subscribe: services announce changes, pages and tasks listen.

Callbacks run in the publisher's event loop; a coroutine callback becomes a task. A failing
subscriber is logged and never breaks the publisher or the other subscribers.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar('T')


class EventBus(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._subscribers: list[Callable[[T], Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def subscribe(self, callback: Callable[[T], Any]) -> Callable[[], None]:
        """Register ``callback``; the returned function unsubscribes it."""
        self._subscribers.append(callback)
        return lambda: self.unsubscribe(callback)

    def unsubscribe(self, callback: Callable[[T], Any]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def publish(self, item: T) -> None:
        for callback in list(self._subscribers):
            try:
                result = callback(item)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(functools.partial(self._task_done, callback=callback))
            except Exception:
                log.exception('Subscriber %r of %s failed', callback, self.name)

    def _task_done(self, task: asyncio.Task[Any], callback: Callable[[T], Any]) -> None:
        """A coroutine subscriber's failure is logged (else it would vanish with its task)."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error('Subscriber %r of %s failed', callback, self.name, exc_info=exc)
