"""Low-level process facts and signals: process groups, start times, descendants."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

import psutil

START_TIME_TOLERANCE = 0.1


class ExitWatch:
    """Calls ``on_exit`` once, on the event loop, when process ``pid`` ends: a pidfd, no polling.
    A process already gone calls it at the next turn of the loop. ``close()`` stops watching."""

    def __init__(self, pid: int, on_exit: Callable[[], object]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_exit = on_exit
        self._fd: int | None = None
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._loop.call_soon(on_exit)
            return
        self._loop.add_reader(self._fd, self._fired)

    def _fired(self) -> None:
        self.close()
        self._on_exit()

    def close(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


def start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_same_process(pid: int, started_at: float | None) -> bool:
    """True when ``pid`` is alive (not a zombie) and is the process that started at ``started_at``."""
    if started_at is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - started_at) < START_TIME_TOLERANCE
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[int]:
    """PIDs of live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in os.scandir('/proc'):
        if not entry.name.isdigit():
            continue
        try:
            with open(f'/proc/{entry.name}/stat', 'rb') as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b')') + 2 :].split()
        if len(fields) > 2 and fields[0] != b'Z' and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def signal_group(pgid: int, sig: signal.Signals, extra: list[psutil.Process] | None = None) -> None:
    """Signal a process group and each extra process (descendants that left the group with
    setsid); psutil refuses to signal an extra whose PID was reused meanwhile."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for process in extra or []:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)


async def end_group(pgid: int, grace: float, poll: float) -> None:
    """SIGTERM to a process group, SIGKILL to what is left of it after ``grace`` seconds."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while await asyncio.to_thread(group_members, pgid):
        if time.monotonic() >= deadline:
            signal_group(pgid, signal.SIGKILL)
            return
        await asyncio.sleep(poll)


def still_running(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found
