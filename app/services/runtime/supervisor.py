"""The supervisor: starts, watches, stops and re-adopts instance processes.

Each run is a ``runner.py`` process leading its own session and process group; the launch
script runs under it and the runner writes the log and the exit code itself, so instances
outlive the panel. The panel learns of an exit at once through a pidfd on the runner
(works for processes it did not start, i.e. after re-adoption), probes readiness, applies
the restart policy, and stops a run with SIGTERM to the group, then SIGKILL after the
grace period, until no process of the group remains.

This class is the executor interface (start / stop / restart / running state) that a
second executor (Kubernetes, Slurm) would implement later.
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
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import Engine

from ...config import Settings
from ...models import RUNNING_STATES, Instance, InstancePublic, InstanceStatus, RestartPolicy
from ..catalog import store as store
from ..catalog.blueprints import BlueprintStore, ReadyCheck
from ..errors import Conflict, ServiceError
from ..events import EventBus
from . import launch, logs, processes
from .readiness import ReadinessProbe, probe_interval

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name('runner.py')
HEALTHY_UPTIME = 60.0  # a crash after this long running is not a crash loop: the count starts over
MAX_BACKOFF = 60.0
GROUP_POLL = 0.05
KILL_WAIT = 5.0


@dataclass(eq=False)
class Run:
    """One live process tree of an instance."""

    instance_id: int
    name: str
    pid: int  # the runner: session leader, so also the process group id
    started_at: float | None
    port: int | None
    popen: subprocess.Popen[bytes] | None = None  # None when re-adopted from an earlier panel
    exit_watch: processes.ExitWatch | None = None
    stopping: bool = False
    exit_code: int | None = None
    ready_at: float | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    ready_task: asyncio.Task[None] | None = None
    stop_task: asyncio.Task[None] | None = None


class Supervisor:
    def __init__(
        self, settings: Settings, engine: Engine, blueprints: BlueprintStore, events: EventBus[InstancePublic]
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.blueprints = blueprints
        self.events = events
        self._runs: dict[int, Run] = {}
        self._locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._pending_restarts: dict[int, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._reserved_ports: set[int] = set()

    # ------------------------------------------------------------------ queries

    def is_running(self, instance_id: int) -> bool:
        return instance_id in self._runs

    def running_pids(self) -> dict[int, int]:
        """{instance id: runner PID} of the runs held now; the runner leads the instance's process tree."""
        return {instance_id: run.pid for instance_id, run in self._runs.items()}

    def running_names(self) -> dict[int, str]:
        return {instance_id: run.name for instance_id, run in self._runs.items()}

    # ------------------------------------------------------------------ start

    async def start(self, instance_id: int, *, automatic: bool = False) -> InstancePublic:
        """Launch the instance; answers as soon as the process exists (status ``starting``)."""
        if not automatic:
            self._cancel_pending_restart(instance_id)
        async with self._locks[instance_id]:
            instance, routed = await asyncio.to_thread(self._load, instance_id)
            if instance_id in self._runs or instance.status.is_running:
                raise Conflict(f'Instance {instance.name!r} is already running ({instance.status})')
            taken = self._ports_in_use() | {port for other, port in routed.items() if other != instance_id}
            # Chosen on the event loop (quick syscalls) so concurrent starts never pick the same port;
            # the last run's port again when it is free, so nginx's route for it stays valid.
            port = launch.free_port(taken, preferred=instance.internal_port)
            self._reserved_ports.add(port)
            try:
                prepared, run, row = await asyncio.to_thread(self._launch, instance, port, automatic)
            finally:
                self._reserved_ports.discard(port)
            self._runs[instance_id] = run
            self._watch_exit(run)
            public = store.to_public(row)
            self.events.publish(public)
            run.ready_task = self._spawn_task(
                self._await_ready(run, prepared.meta.ready, prepared.meta.stall_timeout, prepared.log_path, 0.0)
            )
        log.info('Started %s (pid %s, port %s)', instance.name, run.pid, prepared.port)
        return public

    def _ports_in_use(self) -> set[int]:
        low, high = self.settings.port_range
        ours = {run.port for run in self._runs.values() if run.port}
        return ours | self._reserved_ports | set(range(low, high + 1)) | {self.settings.port}

    def _load(self, instance_id: int) -> tuple[Instance, dict[int, int]]:
        """The instance, and the internal ports every instance runs on or last ran on."""
        return store.get(self.engine, instance_id), store.route_ports(self.engine)

    def _launch(self, instance: Instance, port: int, automatic: bool) -> tuple[launch.Launch, Run, Instance]:
        """Prepare, spawn and record the run in one trip to a worker thread: when 20 instances
        start at once, every trip waits for a CPU, and the start call for every trip."""
        launch.restart_marker(self.settings, instance.name).unlink(missing_ok=True)
        prepared = launch.prepare(self.settings, instance, self.blueprints.functions_path, port)
        run = self._spawn(instance, prepared)
        fields: dict[str, object] = {
            'status': InstanceStatus.STARTING,
            'pid': run.pid,
            'pid_started_at': run.started_at,
            'exit_code': None,
            'internal_port': port,
        }
        if not automatic:
            fields['restart_count'] = 0
        try:
            row = store.update(self.engine, instance.id or 0, **fields)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)  # never leave a run nobody knows of
            raise
        return prepared, run, row

    def _spawn(self, instance: Instance, prepared: launch.Launch) -> Run:
        prepared.exit_file.unlink(missing_ok=True)
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
            popen = subprocess.Popen(
                command,
                cwd=prepared.instance_dir,
                env=prepared.env,
                stdin=subprocess.DEVNULL,
                stdout=runner_errors,
                stderr=runner_errors,
                start_new_session=True,
                close_fds=True,
            )
        return Run(
            instance_id=instance.id or 0,
            name=instance.name,
            pid=popen.pid,
            started_at=processes.start_time(popen.pid),
            port=prepared.port,
            popen=popen,
        )

    # ------------------------------------------------------------------ readiness

    async def _await_ready(
        self, run: Run, check: ReadyCheck, stall_timeout: float, log_path: Path, already_waited: float
    ) -> None:
        probe = ReadinessProbe(check, run.port or 0, log_path)
        began = time.monotonic() - already_waited
        stalled = False
        while not await probe.ready():
            if run.exited.is_set():
                return
            waited = time.monotonic() - began
            if not stalled and waited >= stall_timeout:
                stalled = True
                await self._save_if_current(run, status=InstanceStatus.STALLED)
                log.warning('%s not ready after %.0f s: stalled', run.name, stall_timeout)
            await asyncio.sleep(probe_interval(waited))
        run.ready_at = time.monotonic()
        await self._save_if_current(run, status=InstanceStatus.STARTED)
        log.info('%s is ready (%s)', run.name, check)

    # ------------------------------------------------------------------ exit

    def _watch_exit(self, run: Run) -> None:
        run.exit_watch = processes.ExitWatch(run.pid, lambda: self._spawn_task(self._handle_exit(run)))

    async def _handle_exit(self, run: Run) -> None:
        code = await asyncio.to_thread(self._collect_exit_code, run)
        run.exit_code = code
        run.exited.set()
        if run.ready_task is not None:
            run.ready_task.cancel()
        if run.stopping:
            return  # the stop task finishes the job once the whole group is gone
        async with self._locks[run.instance_id]:
            if self._runs.get(run.instance_id) is run:
                del self._runs[run.instance_id]
            instance = await asyncio.to_thread(store.get, self.engine, run.instance_id)
            restart_count = instance.restart_count
            if run.ready_at is not None and time.monotonic() - run.ready_at >= HEALTHY_UPTIME:
                restart_count = 0
            log.log(logging.WARNING if code != 0 else logging.INFO, '%s exited with code %s', run.name, code)
            await self._record_end(instance, code, restart_count, stopping=False, pid=run.pid)

    async def _record_end(
        self, instance: Instance, code: int | None, restart_count: int, *, stopping: bool, pid: int | None
    ) -> None:
        """Save how a run ended, end what it left in its group, and have ``on-failure`` start it
        again (after a back-off, up to AIKORE_RESTART_MAX times in a row)."""
        assert instance.id is not None
        failed = not stopping and code != 0
        again = failed and instance.restart_policy == RestartPolicy.ON_FAILURE
        restart = again and restart_count < self.settings.restart_max
        await self._save(
            instance.id,
            status=InstanceStatus.ERROR if failed else InstanceStatus.STOPPED,
            **ended(code),
            restart_count=restart_count + 1 if restart else restart_count,
        )
        if pid:
            self._spawn_task(self._clean_group(pid))
        if restart:
            delay = min(MAX_BACKOFF, self.settings.restart_backoff * 2**restart_count)
            log.info('Restarting %s in %.1f s (attempt %d of %d)', instance.name, delay, restart_count + 1,
                     self.settings.restart_max)  # fmt: skip
            self._schedule_restart(instance.id, instance.name, delay)
        elif again:
            log.warning('%s failed again after %d automatic restarts: not restarting it again', instance.name,
                        restart_count)  # fmt: skip

    def _schedule_restart(self, instance_id: int, name: str, delay: float) -> None:
        self._pending_restarts[instance_id] = self._spawn_task(self._restart_later(instance_id, name, delay))

    def _collect_exit_code(self, run: Run) -> int | None:
        status: int | None = None
        if run.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = run.popen.wait(timeout=5)
        recorded = read_exit_file(launch.exit_file(self.settings, run.name), run.pid)
        if recorded is not None:
            return recorded
        if status is not None and status < 0:
            return 128 - status
        return status

    async def _restart_later(self, instance_id: int, name: str, delay: float) -> None:
        """Start the instance again after ``delay``; the due time is kept on disk meanwhile, so a
        panel restarted before then still does it (``resume_restarts``). A start removes it."""
        marker = launch.restart_marker(self.settings, name)
        await asyncio.to_thread(launch.write_restart_due, marker, time.time() + delay)
        await asyncio.sleep(delay)
        self._pending_restarts.pop(instance_id, None)
        try:
            await self.start(instance_id, automatic=True)
        except ServiceError as exc:
            log.warning('Automatic restart of instance %s failed: %s', instance_id, exc.detail)
            await asyncio.to_thread(marker.unlink, missing_ok=True)

    def forget(self, instance_id: int) -> None:
        """The instance is being deleted: drop any pending automatic restart."""
        self._cancel_pending_restart(instance_id)
        self._locks.pop(instance_id, None)

    def _cancel_pending_restart(self, instance_id: int) -> None:
        task = self._pending_restarts.pop(instance_id, None)
        if task is not None:
            task.cancel()

    # ------------------------------------------------------------------ stop

    async def stop(self, instance_id: int) -> InstancePublic:
        """Ask the instance to stop; answers at once (status ``stopping``)."""
        self._cancel_pending_restart(instance_id)
        async with self._locks[instance_id]:
            run = self._runs.get(instance_id)
            if run is None:
                instance = await asyncio.to_thread(store.get, self.engine, instance_id)
                if instance.status.is_running:  # state left from a run we no longer hold
                    return await self._save(instance_id, status=InstanceStatus.STOPPED, **ended(instance.exit_code))
                # No automatic restart after a stop, even one a restarted panel would resume.
                await asyncio.to_thread(launch.restart_marker(self.settings, instance.name).unlink, missing_ok=True)
                return store.to_public(instance)
            if run.stopping:
                return store.to_public(await asyncio.to_thread(store.get, self.engine, instance_id))
            self._begin_stop(run)
            return await self._save(instance_id, status=InstanceStatus.STOPPING)

    def _begin_stop(self, run: Run) -> None:
        run.stopping = True
        if run.ready_task is not None:
            run.ready_task.cancel()
        run.stop_task = self._spawn_task(self._terminate(run))

    async def wait_stopped(self, instance_id: int) -> None:
        run = self._runs.get(instance_id)
        if run is not None and run.stop_task is not None:
            await asyncio.shield(run.stop_task)

    async def _terminate(self, run: Run) -> None:
        escaped = [p for p in await asyncio.to_thread(processes.descendants, run.pid) if _pgid(p.pid) != run.pid]
        processes.signal_group(run.pid, signal.SIGTERM, escaped)
        gone = await self._wait_group_gone(run, escaped, self.settings.stop_grace)
        if not gone:
            log.warning('%s did not stop within %.1f s: killing it', run.name, self.settings.stop_grace)
            processes.signal_group(run.pid, signal.SIGKILL, escaped)
            gone = await self._wait_group_gone(run, escaped, KILL_WAIT)
            if not gone:
                log.error('Processes of %s survived SIGKILL', run.name)
        async with self._locks[run.instance_id]:
            if self._runs.get(run.instance_id) is run:
                del self._runs[run.instance_id]
            await self._save(
                run.instance_id,
                status=InstanceStatus.STOPPED,
                **ended(run.exit_code),
            )
        log.info('Stopped %s', run.name)

    async def _wait_group_gone(self, run: Run, escaped: list[psutil.Process], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.exited.wait(), timeout)
        while True:
            members = await asyncio.to_thread(processes.group_members, run.pid)
            if run.exited.is_set() and not members and not processes.still_running(escaped):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(GROUP_POLL)

    async def _clean_group(self, pgid: int) -> None:
        """After an unexpected exit: end what the app left behind in its group."""
        if await asyncio.to_thread(processes.group_members, pgid):
            await processes.end_group(pgid, self.settings.stop_grace, GROUP_POLL)

    async def restart(self, instance_id: int) -> InstancePublic:
        """Stop (if running) then start again; answers at once."""
        if instance_id not in self._runs:
            return await self.start(instance_id)
        public = await self.stop(instance_id)
        self._spawn_task(self._start_after_stop(instance_id))
        return public

    async def _start_after_stop(self, instance_id: int) -> None:
        await self.wait_stopped(instance_id)
        try:
            await self.start(instance_id)
        except ServiceError as exc:
            log.warning('Restart of instance %s failed: %s', instance_id, exc.detail)

    # ------------------------------------------------------------------ panel start / exit

    async def adopt_all(self) -> list[str]:
        """Take back runs left by an earlier panel; mark the dead ones stopped or error; resume the
        on-failure restarts that were pending when it stopped. One instance that cannot be
        re-adopted (e.g. a corrupt state file) is logged and skipped: the sentences are returned."""
        problems: list[str] = []
        for instance in await asyncio.to_thread(store.list_in_states, self.engine, RUNNING_STATES):
            try:
                await self._adopt(instance)
            except Exception as exc:
                log.error('Re-adopting %s failed: %r', instance.name, exc, exc_info=exc)
                problems.append(f'Re-adopting {instance.name} failed: {exc!r}')
        for instance in await asyncio.to_thread(store.list_in_states, self.engine, {InstanceStatus.ERROR}):
            await self._resume_restart(instance)
        return problems

    async def _resume_restart(self, instance: Instance) -> None:
        marker = launch.restart_marker(self.settings, instance.name)
        due = await asyncio.to_thread(launch.read_restart_due, marker)
        if due is None or instance.id is None or instance.id in self._pending_restarts:
            return
        if instance.restart_policy != RestartPolicy.ON_FAILURE:
            await asyncio.to_thread(marker.unlink, missing_ok=True)
            return
        delay = max(0.0, due - time.time())
        log.info('Restarting %s in %.1f s (pending when the panel stopped)', instance.name, delay)
        self._schedule_restart(instance.id, instance.name, delay)

    async def _adopt(self, instance: Instance) -> None:
        assert instance.id is not None
        pid = instance.pid
        if pid and await asyncio.to_thread(processes.is_same_process, pid, instance.pid_started_at):
            run = Run(instance.id, instance.name, pid, instance.pid_started_at, instance.internal_port)
            self._runs[instance.id] = run
            self._watch_exit(run)
            log.info('Re-adopted %s (pid %s, %s)', instance.name, pid, instance.status)
            if instance.status == InstanceStatus.STOPPING:
                self._begin_stop(run)
            elif instance.status != InstanceStatus.STARTED:
                meta = await asyncio.to_thread(launch.read_meta, self.settings, instance)
                log_path = launch.log_path(self.settings, instance.name)
                waited = max(0.0, time.time() - (instance.pid_started_at or time.time()))
                run.ready_task = self._spawn_task(
                    self._await_ready(run, meta.ready, meta.stall_timeout, log_path, waited)
                )
            return
        code = read_exit_file(launch.exit_file(self.settings, instance.name), pid) if pid else None
        log.info('%s ended while the panel was away (exit code %s)', instance.name, code)
        # A failure while the panel was away counts for ``on-failure`` like any other.
        stopping = instance.status == InstanceStatus.STOPPING
        await self._record_end(instance, code, instance.restart_count, stopping=stopping, pid=pid)

    async def shutdown(self) -> None:
        """Panel exit: leave instances running (re-adopted next start) unless AIKORE_STOP_ON_EXIT."""
        for task in list(self._pending_restarts.values()):
            task.cancel()
        if self.settings.stop_on_exit:
            for instance_id in list(self._runs):
                with contextlib.suppress(ServiceError):
                    await self.stop(instance_id)
            await asyncio.gather(
                *(run.stop_task for run in self._runs.values() if run.stop_task), return_exceptions=True
            )
        for run in list(self._runs.values()):
            if run.ready_task is not None:
                run.ready_task.cancel()
            if run.exit_watch is not None:
                run.exit_watch.close()
        self._runs.clear()

    # ------------------------------------------------------------------ helpers

    async def _save(self, instance_id: int, **fields: object) -> InstancePublic:
        row = await asyncio.to_thread(store.update, self.engine, instance_id, **fields)
        public = store.to_public(row)
        self.events.publish(public)
        return public

    async def _save_if_current(self, run: Run, **fields: object) -> None:
        async with self._locks[run.instance_id]:
            if self._runs.get(run.instance_id) is run and not run.stopping:
                await self._save(run.instance_id, **fields)

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error('Supervisor task failed', exc_info=task.exception())


def ended(exit_code: int | None) -> dict[str, Any]:
    """The runtime fields of an instance whose run is over."""
    return {'exit_code': exit_code, 'pid': None, 'pid_started_at': None}  # internal_port stays for the next run


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
