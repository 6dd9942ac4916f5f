"""Instance log files: where they are, rotation between runs, and paged reads.

Readers page with a byte cursor that keeps counting across rotated files and across runs
(``logs/cursor.json``, kept by the runner, says where the current run and the current file
start). So a reader never silently skips text: within a run it continues in the rotated
files, and when its position belongs to an earlier run or to a file rotated away, the
answer says ``reset`` and starts over at the oldest text still there.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ...models import LogChunk
from ..files import write_atomic

LOG_FILE = 'output.log'
CURSOR_FILE = 'cursor.json'
MAX_READ_BYTES = 1024 * 1024
ROTATION_WAIT = 2.0  # seconds


NOTE_MAX = 4000  # below PIPE_BUF (4096): one write, never mixed with another note


def send_note(fifo: Path, line: str) -> bool:
    """Have the runner put ``line`` (one line, the ``\\n`` is added) into the log it writes.
    False when no runner reads ``fifo`` (the run is over, or its runner predates notes) or its
    pipe is full; never blocks."""
    data = line.replace('\n', ' ').encode('utf-8', errors='replace')[:NOTE_MAX] + b'\n'
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:  # ENXIO: no reader; ENOENT: no FIFO
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        return os.write(fd, data) == len(data)
    except OSError:  # EAGAIN: the pipe is full; EPIPE: the runner just ended
        return False
    finally:
        os.close(fd)


def log_path(instance_dir: Path) -> Path:
    return instance_dir / 'logs' / LOG_FILE


def cursor_path(log: Path) -> Path:
    return log.with_name(CURSOR_FILE)


@dataclass(frozen=True)
class Cursor:
    run_base: int = 0  # position of the current run's first byte
    file_base: int = 0  # position of output.log's first byte
    rotating: bool = False  # the runner is renaming the files: they and file_base disagree
    run: int = 0  # the run's number (1 for the first run; 0: not known, a log from before runs were counted)


def read_cursor(log: Path) -> Cursor:
    try:
        data = json.loads(cursor_path(log).read_text())
        rotating, run = bool(data.get('rotating', False)), int(data.get('run', 0))
        return Cursor(int(data['run_base']), int(data['file_base']), rotating, run)
    except (OSError, ValueError, KeyError, TypeError):
        return Cursor()


def write_cursor(log: Path, cursor: Cursor) -> None:
    fields: dict[str, int | bool] = {'run_base': cursor.run_base, 'file_base': cursor.file_base}
    if cursor.run:
        fields['run'] = cursor.run
    if cursor.rotating:
        fields['rotating'] = True
    write_atomic(cursor_path(log), json.dumps(fields) + '\n')


def run_banner(run: int, started: float, after_partial_line: bool = False) -> str:
    """The first line of a run's log: the separator a reader following the log sees between
    two runs (cursor positions run on across runs, so a view just goes on into the next one).
    ``after_partial_line``: the previous run ended mid-line; the separator starts a line of its own."""
    when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))
    return ('\n' if after_partial_line else '') + f'──── run {run} started {when} ────'


def ends_mid_line(path: Path) -> bool:
    """The file's last byte is not a line end (False for a missing or empty file)."""
    try:
        with path.open('rb') as handle:
            handle.seek(-1, 2)
            return handle.read(1) != b'\n'
    except OSError:
        return False


def next_run_base(log: Path) -> int:
    """Where the next run starts counting: right after the current file's last byte."""
    size = log.stat().st_size if log.exists() else 0
    return read_cursor(log).file_base + size


def end_offset(path: Path) -> int:
    """The cursor position just after the last byte written so far."""
    return next_run_base(path)


def read_tail(path: Path, nbytes: int, end: int) -> str:
    """The current run's text before cursor position ``end``: its last ``nbytes`` at most,
    starting at a line start."""
    cursor = read_cursor(path)
    start = max(cursor.run_base, end - nbytes)
    parts: list[str] = []
    offset = start
    while offset < end:
        chunk = read_chunk(path, offset, limit=end - offset)
        if chunk.reset or not chunk.text:
            break
        parts.append(chunk.text)
        offset = chunk.next_offset
    text = ''.join(parts)
    if start > cursor.run_base and '\n' in text:
        text = text[text.index('\n') + 1 :]
    return text


def skip(path: Path, offset: int, stop: int) -> tuple[int, int]:
    """Read the text from ``offset`` up to ``stop`` without keeping it: (where the reading
    stopped, how many line ends it passed). Stops early at a change of run or the end."""
    lines = 0
    while offset < stop:
        chunk = read_chunk(path, offset, limit=min(MAX_READ_BYTES, stop - offset))
        if chunk.reset or not chunk.text:
            break
        lines += chunk.text.count('\n')
        offset = chunk.next_offset
    return offset, lines


def begin_run(path: Path, backups: int) -> Cursor:
    """Set the log up for a new run: the previous run's file rotated away, an empty one in its
    place, and the new run's cursor (its number one more). Readers wait while the files move
    (``rotating``, as during the runner's rotations), so one that was at the end of the last
    run just goes on into the new one: no reset, nothing cleared."""
    previous = read_cursor(path)
    run_base = next_run_base(path)
    write_cursor(path, replace(previous, rotating=True))
    try:
        rotate_for_new_run(path, backups)
        path.touch()
    except OSError:
        with contextlib.suppress(OSError):  # readers must not wait on a rotation that will not end
            write_cursor(path, previous)
        raise
    cursor = Cursor(run_base, run_base, run=previous.run + 1)
    write_cursor(path, cursor)
    return cursor


def rotate_for_new_run(path: Path, backups: int) -> None:
    """Keep the previous run's log as ``output.log.1`` so each run starts a fresh file."""
    if not path.exists() or path.stat().st_size == 0:
        return
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f'{path.name}.{index}')
        if older.exists():
            older.replace(path.with_name(f'{path.name}.{index + 1}'))
    path.replace(path.with_name(f'{path.name}.1'))


def read_chunk(path: Path, offset: int, limit: int = MAX_READ_BYTES) -> LogChunk:
    """Text of the current run from cursor position ``offset`` (0: the run's start).

    The runner marks the cursor ``rotating`` before it renames the files and rewrites it after,
    so a read counts only when the cursor was the same, and not rotating, before and after it.
    When no such moment comes within ``ROTATION_WAIT`` (a runner descheduled mid-rotation, or
    one that died there) the answer is "nothing new yet", never text from a half-renamed set
    of files (blocking: run in a thread)."""
    deadline = time.monotonic() + ROTATION_WAIT
    while True:
        cursor = read_cursor(path)
        if not cursor.rotating:
            with contextlib.suppress(FileNotFoundError):  # a file renamed between its stat and its open
                chunk = _read_at(path, cursor, offset, limit)
                if read_cursor(path) == cursor:
                    return chunk
        if time.monotonic() > deadline:
            return LogChunk(text='', offset=offset, next_offset=offset, reset=False)
        time.sleep(0.001)  # a rotation takes a few renames


def _segments(path: Path, cursor: Cursor) -> list[tuple[int, Path, int]]:
    """(base, file, size) of the current run's files, newest first."""
    segments = []
    base = cursor.file_base
    index = 0
    candidate = path
    while True:
        try:
            size = candidate.stat().st_size
        except FileNotFoundError:
            break
        if index:
            base -= size
        if base < cursor.run_base:
            break
        segments.append((base, candidate, size))
        index += 1
        candidate = path.with_name(f'{path.name}.{index}')
    return segments


def _read_at(path: Path, cursor: Cursor, offset: int, limit: int) -> LogChunk:
    segments = _segments(path, cursor)
    if not segments:
        return LogChunk(text='', offset=cursor.run_base, next_offset=cursor.run_base, reset=offset > 0)
    oldest = segments[-1][0]
    end = segments[0][0] + segments[0][2]
    reset = False
    if offset == 0:
        offset = oldest
    elif offset < oldest or offset > end:
        offset, reset = oldest, True
    base, file, size = next(seg for seg in segments if seg[0] <= offset)
    with file.open('rb') as handle:
        handle.seek(offset - base)
        data = handle.read(min(limit, size - (offset - base)))
    data = data[: _complete_utf8_length(data)]
    return LogChunk(
        text=data.decode('utf-8', errors='replace'), offset=offset, next_offset=offset + len(data), reset=reset
    )


def _complete_utf8_length(data: bytes) -> int:
    """Length of ``data`` without a multi-byte character cut at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # lead byte: is its sequence complete?
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= needed else len(data) - back
    return len(data)
