"""Writing files so that a reader never sees half of one and a failed write leaves no debris.

The one atomic-write helper of the panel (``runner.py`` has its own copy of the idea: it runs
isolated with the standard library only, outside the package).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
from pathlib import Path

PRIVATE = 0o600  # secrets, rendered configs that hold the API token
SCRIPT = 0o755
PLAIN = 0o644


def write_atomic(path: Path, data: str | bytes, mode: int = PLAIN) -> None:
    """Replace ``path`` with ``data`` in one rename, created with ``mode`` from the start (a
    secret is never readable by others, not even for an instant). On any failure (disk full,
    say) the old file stays as it was and the temporary file is removed."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data.encode('utf-8') if isinstance(data, str) else data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def disk_full(exc: BaseException) -> bool:
    """``exc`` says the disk (or the user's quota) is full: a file write or SQLite's own."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    original = getattr(exc, 'orig', None)  # SQLAlchemy wraps sqlite3's error
    return getattr(original, 'sqlite_errorcode', None) == sqlite3.SQLITE_FULL
