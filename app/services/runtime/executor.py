"""The executor seam: how an instance's run is started, watched, stopped and taken back.

The supervisor owns the policy (statuses, readiness, restart on failure) and asks an
``Executor`` for the mechanics; nothing else in the panel knows which executor runs an
instance. ``LocalExecutor`` runs ``runner.py`` as the leader of its own session and process
group on this machine (the launch script under it; the runner writes the log and the exit
code itself, so runs outlive the panel), learns of an exit through a pidfd, ends a run by
signalling its whole group, and re-adopts a run by PID + start time. A cluster executor
(Slurm) implements the same protocol with a job id in the handle.

The process mechanics are ``LocalExecutor``'s alone: each run is a one-process supervised unit
(``runtime/units.py``), so the supervisor never touches a process itself.

How a run sits on the supervised-process unit (``units.py``): a run is a unit of one
process, the ``runner.py`` session leader, with ``RestartPolicy(RestartMode.NEVER)``. The
executor spawns it with :func:`units.spawn` in the worker-thread trip that also records the run in
the database, then hands it to the unit with :meth:`units.Unit.attach`. The
instance's own ``on-failure`` policy stays with the supervisor, counted in the database
(``restart_count``, ``AIKORE_RESTART_MAX``, the restart marker resumed after a panel restart),
because a restart re-prepares the launch (port, env, script) and moves the instance through its
lifecycle, which a unit knows nothing of. The unit has no state file of its own: the instance
row's ``pid`` and ``pid_started_at`` are the record: at panel start the executor checks them
(same PID + start time = same run) and attaches the process to a new unit. The exit code comes from the
runner's exit file through the ``exit_code`` hook (``read_exit_file(path, pid)``, falling back
to the wait status); ``on_exit`` is where the supervisor records the end and applies the
instance's restart rules; ``on_running`` is not used (readiness is the supervisor's probe,
which moves ``starting`` to ``started``); stop is ``unit.stop()`` with ``stop_grace`` =
``AIKORE_STOP_GRACE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ...config import Settings
from ...models import Instance
from . import launch, logs, processes, units

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name('runner.py')
GROUP_POLL = 0.05


@dataclass(eq=False)
class RunHandle:
    """What an executor knows of one run (for the local one: the runner process and its unit)."""

    name: str
    pid: int  # the runner: session leader, so also the process group id
    started_at: float | None
    popen: subprocess.Popen[bytes] | None = None  # None when re-adopted from an earlier panel
    spec: units.ProcessSpec | None = None  # None when re-adopted
    unit: units.Unit | None = None  # once watched
    job_id: str | None = None  # a cluster job (``slurm.py``): pid is 0, nothing of it runs here


class Executor(Protocol):
    def start(self, instance: Instance, prepared: launch.Launch) -> RunHandle:
        """Start the run (blocking: called in a worker thread)."""

    def adopt(self, instance: Instance) -> RunHandle | None:
        """The run an earlier panel recorded for ``instance`` if it still runs (blocking)."""

    def watch(self, handle: RunHandle, on_exit: Callable[[], object]) -> None:
        """Call ``on_exit`` on the event loop once the run has ended on its own."""

    def exit_code(self, handle: RunHandle) -> int | None:
        """How the ended run exited (blocking)."""

    def recorded_exit_code(self, name: str, handle_pid: int | None) -> int | None:
        """The exit code a run left behind while the panel was away (blocking)."""

    def exit_file_unreadable(self, name: str) -> bool:
        """What the run left to say how it ended is there but damaged (blocking)."""

    async def terminate(self, handle: RunHandle) -> None:
        """End the run and everything it started; returns once nothing of it is left."""

    async def clean(self, handle_pid: int) -> None:
        """After the run ended on its own: end what it left behind."""

    def release(self, handle: RunHandle) -> None:
        """Stop watching the run and leave it running (panel exit)."""

    def log_path(self, name: str) -> Path:
        """Where the run's output is written."""


class LocalExecutor:
    """Runs on this machine: each run is a one-process supervised unit (``units.py``) whose
    restart policy is ``never`` (the instance's ``on-failure`` policy is the supervisor's)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # ------------------------------------------------------------------ start / adopt

    def start(self, instance: Instance, prepared: launch.Launch) -> RunHandle:
        prepared.exit_file.unlink(missing_ok=True)
        notes = launch.notes_fifo(self.settings, instance.name)  # the instance's: a satellite's is its own
        notes.parent.mkdir(parents=True, exist_ok=True)
        spec = self._spec(prepared, notes)
        popen = units.spawn(spec)  # the runner's own start-up errors land in the instance's log
        return RunHandle(instance.name, popen.pid, processes.start_time(popen.pid), popen, spec)

    def _spec(self, prepared: launch.Launch, notes: Path) -> units.ProcessSpec:
        command = runner_command(self.settings, prepared, notes)
        return units.ProcessSpec(
            'runner', command, cwd=prepared.instance_dir, env=prepared.env, output=prepared.log_path
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
        spec = handle.spec or units.ProcessSpec('runner', [RUNNER.name])  # adopted: never spawned again
        unit = units.Unit(
            f'run of {handle.name}',
            [spec],
            policy=units.RestartPolicy(units.RestartMode.NEVER),
            stop_grace=self.settings.stop_grace,
            poll=GROUP_POLL,
            exit_code=lambda _member, pid, status: self._code(handle.name, pid, status),
            on_exit=lambda _unit, _ended: on_exit(),
        )
        unit.attach(handle.pid, handle.started_at, handle.popen)
        handle.unit = unit

    def release(self, handle: RunHandle) -> None:
        if handle.unit is not None:
            handle.unit.release()

    def exit_code(self, handle: RunHandle) -> int | None:
        """The code the unit collected when the run ended (read from the runner's exit file)."""
        if handle.unit is not None and 'runner' in handle.unit.exit_codes:
            return handle.unit.exit_codes['runner']
        return self.recorded_exit_code(handle.name, handle.pid)

    def _code(self, name: str, pid: int, status: int | None) -> int | None:
        recorded = self.recorded_exit_code(name, pid)
        return recorded if recorded is not None else status

    def recorded_exit_code(self, name: str, handle_pid: int | None) -> int | None:
        return read_exit_file(launch.exit_file(self.settings, name), handle_pid) if handle_pid else None

    def exit_file_unreadable(self, name: str) -> bool:
        """The run's exit file is there but damaged (blocking)."""
        path = launch.exit_file(self.settings, name)
        return path.exists() and read_exit_file(path, None) is None

    def log_path(self, name: str) -> Path:
        return launch.log_path(self.settings, name)

    # ------------------------------------------------------------------ stop

    async def terminate(self, handle: RunHandle) -> None:
        """The unit's stop: SIGTERM to the group and to descendants that left it, SIGKILL after
        the grace period, until nothing of the run remains."""
        if handle.unit is not None:
            await handle.unit.stop()

    async def clean(self, handle_pid: int) -> None:
        if await asyncio.to_thread(processes.group_members, handle_pid):
            await processes.end_group(handle_pid, self.settings.stop_grace, GROUP_POLL)


def runner_command(settings: Settings, prepared: launch.Launch, notes: Path | None = None) -> list[str]:
    """``runner.py`` around the launch script (also what a Slurm job runs under its gate);
    ``notes``: the FIFO through which the panel adds its own lines (``[desktop] …``) to the log."""
    extra = ['--notes', str(notes)] if notes is not None else []
    return [
        sys.executable, '-I', '-S', str(RUNNER),
        '--log', str(prepared.log_path),
        '--max-bytes', str(settings.log_max_bytes),
        '--backups', str(settings.log_backups),
        '--cursor-file', str(logs.cursor_path(prepared.log_path)),
        '--base', str(prepared.log_run_base),
        '--exit-file', str(prepared.exit_file),
        *(['--run', str(prepared.log_run), '--banner', prepared.log_banner] if prepared.log_banner else []),
        *extra,
        '--', launch.bash(), str(prepared.script),
    ]  # fmt: skip


def read_exit_file(path: Path, runner_pid: int | None) -> int | None:
    """The exit code the runner ``runner_pid`` recorded, if it recorded one."""
    try:
        pid_text, code_text, _when = path.read_text().split()
        pid, code = int(pid_text), int(code_text)
    except (OSError, ValueError):
        return None  # none, or unreadable: the wait status (if any) is used instead
    return None if runner_pid is not None and pid != runner_pid else code
