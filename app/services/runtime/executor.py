"""The executor seam: how an instance's run is started, watched, stopped and taken back.

The supervisor owns the policy (statuses, readiness, restart on failure) and asks an
``Executor`` for the mechanics; nothing else in the panel knows which executor runs an
instance. ``LocalExecutor`` runs ``runner.py`` as the leader of its own session and process
group on this machine (the launch script under it; the runner writes the log and the exit
code itself, so runs outlive the panel), learns of an exit through a pidfd, ends a run by
signalling its whole group, and re-adopts a run by PID + start time. A cluster executor
(Slurm) implements the same protocol with a job id in the handle.

The process mechanics are kept in ``LocalExecutor`` alone so they can move onto the generic
supervised-process unit (``runtime/units.py``) without touching the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from ...config import Settings
from ...models import Instance
from . import launch, logs, processes

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name('runner.py')
GROUP_POLL = 0.05
KILL_WAIT = 5.0


@dataclass(eq=False)
class RunHandle:
    """What an executor knows of one run (for the local one: the runner process)."""

    name: str
    pid: int  # the runner: session leader, so also the process group id
    started_at: float | None
    popen: subprocess.Popen[bytes] | None = None  # None when re-adopted from an earlier panel
    exit_watch: processes.ExitWatch | None = None


class Executor(Protocol):
    def start(self, instance: Instance, prepared: launch.Launch) -> RunHandle:
        """Start the run (blocking: called in a worker thread)."""

    def adopt(self, instance: Instance) -> RunHandle | None:
        """The run an earlier panel recorded for ``instance`` if it still runs (blocking)."""

    def watch(self, handle: RunHandle, on_exit: Callable[[], object]) -> None:
        """Call ``on_exit`` on the event loop once the run has ended."""

    def exit_code(self, handle: RunHandle) -> int | None:
        """How the ended run exited (blocking)."""

    def recorded_exit_code(self, name: str, handle_pid: int | None) -> int | None:
        """The exit code a run left behind while the panel was away (blocking)."""

    async def terminate(self, handle: RunHandle, exited: asyncio.Event) -> None:
        """End the run and everything it started; returns once nothing of it is left."""

    async def clean(self, handle_pid: int) -> None:
        """After the run ended on its own: end what it left behind."""

    def release(self, handle: RunHandle) -> None:
        """Stop watching the run and leave it running (panel exit)."""

    def log_path(self, name: str) -> Path:
        """Where the run's output is written."""


class LocalExecutor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # ------------------------------------------------------------------ start / adopt

    def start(self, instance: Instance, prepared: launch.Launch) -> RunHandle:
        prepared.exit_file.unlink(missing_ok=True)
        popen = self._spawn(prepared)
        return RunHandle(instance.name, popen.pid, processes.start_time(popen.pid), popen)

    def _spawn(self, prepared: launch.Launch) -> subprocess.Popen[bytes]:
        command = [
            sys.executable, '-I', '-S', str(RUNNER),
            '--log', str(prepared.log_path),
            '--max-bytes', str(self.settings.log_max_bytes),
            '--backups', str(self.settings.log_backups),
            '--cursor-file', str(logs.cursor_path(prepared.log_path)),
            '--base', str(prepared.log_run_base),
            '--exit-file', str(prepared.exit_file),
            '--', launch.bash(), str(prepared.script),
        ]  # fmt: skip
        with prepared.log_path.open('ab') as runner_errors:
            return subprocess.Popen(
                command,
                cwd=prepared.instance_dir,
                env=prepared.env,
                stdin=subprocess.DEVNULL,
                stdout=runner_errors,
                stderr=runner_errors,
                start_new_session=True,
                close_fds=True,
            )

    def kill_now(self, handle: RunHandle) -> None:
        """A run nobody will know of (its row could not be written): end it at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle.pid, signal.SIGKILL)

    def adopt(self, instance: Instance) -> RunHandle | None:
        pid = instance.pid
        if pid and processes.is_same_process(pid, instance.pid_started_at):
            return RunHandle(instance.name, pid, instance.pid_started_at)
        return None

    # ------------------------------------------------------------------ exit

    def watch(self, handle: RunHandle, on_exit: Callable[[], object]) -> None:
        handle.exit_watch = processes.ExitWatch(handle.pid, on_exit)

    def release(self, handle: RunHandle) -> None:
        if handle.exit_watch is not None:
            handle.exit_watch.close()

    def exit_code(self, handle: RunHandle) -> int | None:
        status: int | None = None
        if handle.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = handle.popen.wait(timeout=5)
        recorded = self.recorded_exit_code(handle.name, handle.pid)
        if recorded is not None:
            return recorded
        if status is not None and status < 0:
            return 128 - status
        return status

    def recorded_exit_code(self, name: str, handle_pid: int | None) -> int | None:
        return read_exit_file(launch.exit_file(self.settings, name), handle_pid) if handle_pid else None

    def log_path(self, name: str) -> Path:
        return launch.log_path(self.settings, name)

    # ------------------------------------------------------------------ stop

    async def terminate(self, handle: RunHandle, exited: asyncio.Event) -> None:
        """SIGTERM to the group (and to descendants that left it), SIGKILL after the grace period."""
        escaped = [p for p in await asyncio.to_thread(processes.descendants, handle.pid) if _pgid(p.pid) != handle.pid]
        processes.signal_group(handle.pid, signal.SIGTERM, escaped)
        gone = await self._wait_group_gone(handle, exited, escaped, self.settings.stop_grace)
        if not gone:
            log.warning('%s did not stop within %.1f s: killing it', handle.name, self.settings.stop_grace)
            processes.signal_group(handle.pid, signal.SIGKILL, escaped)
            if not await self._wait_group_gone(handle, exited, escaped, KILL_WAIT):
                log.error('Processes of %s survived SIGKILL', handle.name)

    async def _wait_group_gone(
        self, handle: RunHandle, exited: asyncio.Event, escaped: list[psutil.Process], timeout: float
    ) -> bool:
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited.wait(), timeout)
        while True:
            members = await asyncio.to_thread(processes.group_members, handle.pid)
            if exited.is_set() and not members and not processes.still_running(escaped):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(GROUP_POLL)

    async def clean(self, handle_pid: int) -> None:
        if await asyncio.to_thread(processes.group_members, handle_pid):
            await processes.end_group(handle_pid, self.settings.stop_grace, GROUP_POLL)


def read_exit_file(path: Path, runner_pid: int | None) -> int | None:
    """The exit code the runner ``runner_pid`` recorded, if it recorded one."""
    try:
        pid_text, code_text, _when = path.read_text().split()
    except (OSError, ValueError):
        return None
    if runner_pid is not None and int(pid_text) != runner_pid:
        return None
    return int(code_text)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
