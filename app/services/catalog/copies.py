"""Copying an instance's folder for a clone: what is copied, the copy itself (cancellable, with
progress lines for the clone's log), and the one keeper of the copies in progress.

What is left out, and why:
- environments (any folder holding ``pyvenv.cfg`` or ``conda-meta``): a venv hard-codes its own
  absolute path (``bin/activate``, every script's ``#!`` line, ``pyvenv.cfg``), so a copied venv
  would run the source's interpreter and packages, and break when the source is deleted. The
  clone's blueprint builds a fresh one at its first start, as for any new instance (pip's cache
  makes that quick); ``conda create --clone`` would relocate a conda env, but one way for both
  kinds is simpler and is what a broken environment needs anyway;
- caches (``__pycache__``, ``.cache``) and the install stamps that belong to an environment;
- the source's run state: ``logs/``, ``run/``, ``tmp/`` and a pending ``.rebuild`` marker.
Symbolic links are copied as links (model folders linked to the shared ``MODELS_DIR`` stay
shared; outputs live outside instance folders). Absolute paths to the source's folder in the
copied ``launch.sh`` are rewritten to the clone's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime import logs
from ..tasks import BackgroundTasks

log = logging.getLogger(__name__)

SKIPPED_ANYWHERE = frozenset({'__pycache__', '.cache', '.aikore-stamps'})
SKIPPED_AT_TOP = frozenset({'logs', 'run', 'tmp', '.rebuild'})
PROGRESS_EVERY = 1.0  # seconds between progress lines
CHUNK = 1024 * 1024  # a file is copied chunk by chunk: a cancel never waits for a whole (multi-GB) file
ZEROS = bytes(CHUNK)


class CopyCancelled(Exception):
    """The copy was asked to stop."""


@dataclass
class CopyStats:
    files: int = 0
    bytes: int = 0
    environments: int = 0  # environment folders left out

    @property
    def text(self) -> str:
        return f'{self.files} files, {self.bytes / 1024**2:.1f} MB'


def is_environment(folder: Path) -> bool:
    """A venv or a conda env (by the files their tools write)."""
    return (folder / 'pyvenv.cfg').is_file() or (folder / 'conda-meta').is_dir()


def copy_folder(
    source: Path,
    target: Path,
    stop: threading.Event,
    say: Callable[[str], None],
    progress: Callable[[CopyStats], None] = lambda _stats: None,
) -> CopyStats:
    """Copy ``source`` into ``target`` (which exists) but what the module docstring lists
    (blocking). Files and folders that vanish mid-copy (a running source) are skipped; any other
    error (an unreadable folder) fails the copy: a clone is never silently partial. Special files
    (FIFOs, sockets, devices) are left out. ``say`` gets log lines, ``progress`` the counts,
    about once a second."""
    stats = CopyStats()
    last = time.monotonic()
    for root, dirs, files in os.walk(source, onerror=_unless_vanished):
        here = Path(root)
        into = target / here.relative_to(source)
        kept = []
        for name in dirs:
            path = here / name
            if path.is_symlink():
                files.append(name)  # a link to a folder is copied as the link
            elif name in SKIPPED_ANYWHERE or (here == source and name in SKIPPED_AT_TOP):
                continue
            elif is_environment(path):
                stats.environments += 1
                say(f'Left out the environment {path.relative_to(source)}/ (rebuilt at the first start)')
            else:
                kept.append(name)
                (into / name).mkdir(exist_ok=True)
        dirs[:] = kept
        for name in files:
            if stop.is_set():
                raise CopyCancelled
            if here == source and name in SKIPPED_AT_TOP:
                continue
            stats.bytes += _copy_entry(here / name, into / name, stop)
            stats.files += 1
            if time.monotonic() - last >= PROGRESS_EVERY:
                last = time.monotonic()
                say(f'Copied {stats.text} ...')
                progress(stats)
    return stats


def _unless_vanished(error: OSError) -> None:
    """``os.walk``'s error handler: a folder removed meanwhile is skipped, any other error raised."""
    if not isinstance(error, FileNotFoundError):
        raise error


def _copy_entry(source: Path, target: Path, stop: threading.Event) -> int:
    """Copy one file or link; answers the bytes copied (0 for a link, a special or vanished file)."""
    try:
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
            return 0
        if not stat.S_ISREG(source.stat().st_mode):
            return 0  # a FIFO would block the copy, a socket or device means nothing in a copy
        size = _copy_file(source, target, stop)
        shutil.copystat(source, target, follow_symlinks=False)
        return size
    except FileNotFoundError:
        return 0  # removed by the running source meanwhile


def _copy_file(source: Path, target: Path, stop: threading.Event) -> int:
    """Copy a regular file chunk by chunk, checking ``stop`` between chunks; chunks of zeros
    become holes (a sparse file stays sparse). Answers the bytes copied."""
    size = 0
    with source.open('rb') as reader, target.open('wb') as writer:
        while chunk := reader.read(CHUNK):
            if stop.is_set():
                raise CopyCancelled
            if chunk == ZEROS:
                writer.seek(len(chunk), os.SEEK_CUR)
            else:
                writer.write(chunk)
            size += len(chunk)
        writer.truncate(size)
    return size


def rewrite_paths(script: Path, old: Path, new: Path) -> int:
    """Replace absolute paths to ``old`` (whole path segments only) in ``script``; answers how many."""
    if not script.is_file():
        return 0
    text = script.read_text(encoding='utf-8', errors='surrogateescape')
    pattern = re.compile(re.escape(str(old)) + r'(?![A-Za-z0-9_.-])')
    rewritten, count = pattern.subn(str(new).replace('\\', '\\\\'), text)
    if count:
        script.write_text(rewritten, encoding='utf-8', errors='surrogateescape')
    return count


def append_line(folder: Path, line: str) -> None:
    """One line of progress at the end of the instance's log (the Logs view shows it)."""
    path = logs.log_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('a', encoding='utf-8') as handle:
        handle.write(f'[aikore] {line}\n')


class CopyJobs:
    """The copies in progress, by instance id: each runs until done or cancelled."""

    def __init__(self) -> None:
        self._jobs: dict[int, tuple[asyncio.Task[Any], threading.Event]] = {}
        self._sources: dict[int, int] = {}  # clone id -> the id of the instance it is copied from
        self._tasks = BackgroundTasks('Clone copies')
        self.progress: dict[int, str] = {}  # how far each copy got, shown with its row

    def start(
        self, instance_id: int, source_id: int, job: Callable[[threading.Event], Coroutine[Any, Any, None]]
    ) -> None:
        stop = threading.Event()
        task = self._tasks.spawn(job(stop))
        self._jobs[instance_id] = (task, stop)
        self._sources[instance_id] = source_id
        task.add_done_callback(lambda _task: self._forget(instance_id))

    def _forget(self, instance_id: int) -> None:
        self._jobs.pop(instance_id, None)
        self._sources.pop(instance_id, None)
        self.progress.pop(instance_id, None)

    def running(self, instance_id: int) -> bool:
        return instance_id in self._jobs

    def copying_from(self, source_id: int) -> bool:
        """Whether a clone of ``source_id`` is being copied (its folder must stay where it is)."""
        return source_id in list(self._sources.values())

    async def cancel(self, instance_id: int) -> bool:
        """Stop the copy of this instance and wait for it to end; False when none was running."""
        job = self._jobs.get(instance_id)
        if job is None:
            return False
        task, stop = job
        stop.set()
        await asyncio.wait({task})
        return True

    async def cancel_all(self) -> None:
        for instance_id in list(self._jobs):
            await self.cancel(instance_id)
