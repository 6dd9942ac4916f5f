"""Live log views: a replay of the recent tail, then new text as the instance writes it.

One follower per instance, shared by every open view and running only while someone
watches (the field_friend pattern: a service-side stream replayed into a view, then live
events). It reads through the log cursor, so rotations never lose or repeat text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime import logs

log = logging.getLogger(__name__)

REPLAY_BYTES = 256 * 1024
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class LogText:
    text: str
    reset: bool = False  # the run changed: views clear before writing ``text``


Listener = Callable[[LogText], None]


@dataclass
class _Follower:
    path: Path
    offset: int = 0
    listeners: list[Listener] = field(default_factory=list)
    joining: int = 0  # follow() calls still reading their replay: keep the follower for them
    opened: asyncio.Task[None] | None = None  # reads the end offset, then starts the poller
    task: asyncio.Task[None] | None = None


class LogStreams:
    def __init__(self) -> None:
        self._followers: dict[Path, _Follower] = {}

    async def follow(self, path: Path, listener: Listener) -> tuple[str, Callable[[], None]]:
        """The recent tail of the log now, and a function that stops ``listener`` from getting more."""
        follower = self._followers.get(path)
        if follower is None:  # registered before any await: a second follow() joins this one
            follower = _Follower(path)
            self._followers[path] = follower
            follower.opened = asyncio.create_task(self._open(follower))
        follower.joining += 1
        try:
            assert follower.opened is not None
            await asyncio.shield(follower.opened)
            replay = await asyncio.to_thread(logs.read_tail, path, REPLAY_BYTES, follower.offset)
            follower.listeners.append(listener)
        finally:
            follower.joining -= 1
            self._drop_if_idle(follower)
        return replay, lambda: self._unfollow(follower, listener)

    async def _open(self, follower: _Follower) -> None:
        follower.offset = await asyncio.to_thread(logs.end_offset, follower.path)
        follower.task = asyncio.create_task(self._run(follower))

    def _unfollow(self, follower: _Follower, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            follower.listeners.remove(listener)
        self._drop_if_idle(follower)

    def _drop_if_idle(self, follower: _Follower) -> None:
        if follower.listeners or follower.joining:
            return
        if follower.task is not None:
            follower.task.cancel()
        if self._followers.get(follower.path) is follower:  # never another follower's entry
            del self._followers[follower.path]

    async def _run(self, follower: _Follower) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            chunk = await asyncio.to_thread(logs.read_chunk, follower.path, follower.offset)
            while chunk.text or chunk.reset:
                follower.offset = chunk.next_offset
                self._publish(follower, LogText(chunk.text, chunk.reset))
                if not chunk.text:
                    break
                chunk = await asyncio.to_thread(logs.read_chunk, follower.path, follower.offset)

    @staticmethod
    def _publish(follower: _Follower, item: LogText) -> None:
        for listener in list(follower.listeners):
            try:
                listener(item)
            except Exception:
                log.exception('A log view failed')

    def shutdown(self) -> None:
        for follower in self._followers.values():
            if follower.task is not None:
                follower.task.cancel()
        self._followers.clear()
