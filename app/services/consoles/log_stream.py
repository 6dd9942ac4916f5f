"""Live log views: a replay of the recent tail, then new text as the instance writes it.

One follower per instance, shared by every open view and running only while someone
watches (the field_friend pattern: a service-side stream replayed into a view, then live
events). It reads through the log cursor, so rotations never lose or repeat text.

A view never falls behind without saying so: each poll sends it at most ``LIVE_BYTES`` of
new text; when the log grew by more than ``SKIP_BEYOND`` since the last poll, the text in
between is skipped (read, counted, never held) and the view gets a marker "… N lines skipped …",
so a flood costs neither the panel's memory nor its latency (the full log stays downloadable).

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
LIVE_BYTES = 128 * 1024  # per poll and view: about 1.3 MB/s, as much as a browser terminal shows
SKIP_BEYOND = 1024 * 1024  # further behind than this: skip to the last KEEP_BYTES
KEEP_BYTES = 64 * 1024
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


def _log_failure(task: asyncio.Task[None]) -> None:
    """A follower that died says so (its views stop getting text)."""
    if not task.cancelled() and task.exception() is not None:
        log.error('A log follower failed', exc_info=task.exception())


def skipped_marker(lines: int) -> str:
    """The line a view shows where text was skipped (yellow, on a line of its own)."""
    noun = 'line' if lines == 1 else 'lines'
    why = 'the log grew faster than a view shows; the download has it all'
    return f'\r\n\x1b[33m… {lines} {noun} skipped ({why}) …\x1b[0m\r\n'


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
    skipped_lines: int = 0  # passed over since the last marker
    mid_line: bool = False  # the offset is inside a line (after a skip)


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
        follower.task.add_done_callback(_log_failure)

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
            await asyncio.to_thread(self._skip_if_far_behind, follower)
            if follower.skipped_lines:
                lines, follower.skipped_lines = follower.skipped_lines, 0
                self._publish(follower, LogText(skipped_marker(lines)))
            budget = LIVE_BYTES
            while budget > 0:
                chunk = await asyncio.to_thread(logs.read_chunk, follower.path, follower.offset, budget)
                if not chunk.text and not chunk.reset:
                    break
                follower.offset = chunk.next_offset
                budget -= chunk.next_offset - chunk.offset
                text = chunk.text
                if chunk.reset:
                    follower.guard = HistoryGuard()
                    follower.mid_line = False
                if follower.mid_line:  # the rest of a line cut by a skip: counted with the skipped ones
                    _cut, newline, text = text.partition('\n')
                    follower.mid_line = not newline
                self._publish(follower, LogText(follower.guard.feed(text), chunk.reset))

    @staticmethod
    def _skip_if_far_behind(follower: _Follower) -> None:
        """When the log grew by more than SKIP_BEYOND since the last read, move to its last
        KEEP_BYTES, counting the lines passed (blocking: in a thread)."""
        try:
            cursor = logs.read_cursor(follower.path)
            end = logs.end_offset(follower.path)
        except OSError:
            return  # the runner is renaming its files this instant: look again at the next poll
        if cursor.rotating or follower.offset < cursor.run_base or end - follower.offset <= SKIP_BEYOND:
            return  # a new run (the next read says reset), or close enough to the end
        reached, lines = logs.skip(follower.path, follower.offset, end - KEEP_BYTES)
        if reached > follower.offset:
            follower.offset = reached
            follower.skipped_lines += lines + 1  # and the line the skip cuts
            follower.mid_line = True

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
