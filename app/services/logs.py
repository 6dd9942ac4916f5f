"""Instance log files: where they are, rotation between runs, and paged reads by offset."""

from __future__ import annotations

import os
from pathlib import Path

from ..models import LogChunk

LOG_FILE = 'output.log'
MAX_READ_BYTES = 1024 * 1024


def log_path(instance_dir: Path) -> Path:
    return instance_dir / 'logs' / LOG_FILE


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
    """Bytes of the current log from ``offset``; ``reset`` when the file is now shorter
    than ``offset`` (rotated or truncated since), and then the text starts over at 0."""
    offset = max(0, offset)
    try:
        with path.open('rb') as handle:
            size = os.fstat(handle.fileno()).st_size
            reset = offset > size
            start = 0 if reset else offset
            handle.seek(start)
            data = handle.read(min(limit, size - start))
    except FileNotFoundError:
        return LogChunk(text='', offset=offset, next_offset=0, reset=offset > 0)
    data = data[: _complete_utf8_length(data)]
    return LogChunk(
        text=data.decode('utf-8', errors='replace'), offset=start, next_offset=start + len(data), reset=reset
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
