"""Live log views: a replay of the recent tail, then new text as the instance writes it.

One follower per instance, shared by every open view and running only while someone
watches (the field_friend pattern: a service-side stream replayed into a view, then live
events). It reads through the log cursor, so rotations never lose or repeat text.

An app's output never erases what the user scrolled: the sequences that wipe a terminal's
history (RIS ``ESC c``, ``ESC[3J``, a switch to the alternate screen, which has none) are taken
out of the text sent to views; colours, cursor moves and ``\r`` progress bars stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..runtime import logs

log = logging.getLogger(__name__)

REPLAY_BYTES = 256 * 1024
POLL_SECONDS = 0.1
CSI = r'(?:\x1b\[|\x9b)'
# RIS, ED 3 (erase scrollback), private modes 47/1047/1049 (alternate screen) among others.
HISTORY_ERASERS = re.compile(rf'\x1bc|{CSI}(?:[0-9;]*;)?3J|{CSI}\?(?:[0-9;]*;)?(?:47|1047|1048|1049)(?:;[0-9;]*)?[hl]')
# A sequence cut by a chunk's end: held back until the next chunk completes it.
UNFINISHED = re.compile(r'(?:\x1b(?:\[[0-9;?]*)?|\x9b[0-9;?]*)\Z')


class HistoryGuard:
    """Removes history-erasing sequences from a stream of terminal text, also across chunks."""

    def __init__(self) -> None:
        self._held = ''

    def feed(self, text: str) -> str:
        text = self._held + text
        unfinished = UNFINISHED.search(text)
        self._held = unfinished.group() if unfinished else ''
        if unfinished:
            text = text[: unfinished.start()]
        return HISTORY_ERASERS.sub('', text)


def without_history_erasers(text: str) -> str:
    """``text`` (a whole piece, e.g. a replay) without the sequences that would wipe a view's history."""
    return HISTORY_ERASERS.sub('', text)


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
    guard: HistoryGuard = field(default_factory=HistoryGuard)


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
        return without_history_erasers(replay), lambda: self._unfollow(follower, listener)

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
                if chunk.reset:
                    follower.guard = HistoryGuard()
                self._publish(follower, LogText(follower.guard.feed(chunk.text), chunk.reset))
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
