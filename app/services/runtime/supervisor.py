"""The supervisor: the policy of instance runs (statuses, readiness, restart on failure).

How a run is started, watched, stopped and re-adopted is the executor's (``executor.py``);
every row write goes through ``InstanceRows`` (checked against the lifecycle, one event per
commit), and every operation on one instance holds that instance's lock there, so start,
stop, restart, an exit and a delete never interleave. The panel learns of an exit at once
from the executor, probes readiness, and applies the restart policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from ... import lifecycle
from ...config import Settings
from ...models import Instance, InstancePublic, InstanceStatus, RestartPolicy
from ..catalog import store
from ..catalog.blueprints import BlueprintStore, ReadyCheck
from ..catalog.rows import InstanceRows
from ..errors import Conflict, NotFound, ServiceError
from ..files import disk_full
from ..tasks import BackgroundTasks
from . import launch, logs, preflight
from .desktop import Desktops
from .executor import LocalExecutor, RunHandle
from .executor import read_exit_file as read_exit_file  # where tests and tools look for it
from .readiness import ReadinessProbe, probe_interval
from .readoption import Readoption
from .runs import AnyExecutor, Run, append_note, ended
from .slurm import SlurmExecutor, job_secret

log = logging.getLogger(__name__)

DISK_FULL_RETRY = 2.0  # seconds between tries to record an end while the disk is full
HEALTHY_UPTIME = 60.0  # a crash after this long running is not a crash loop: the count starts over
MAX_BACKOFF = 60.0


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        blueprints: BlueprintStore,
        rows: InstanceRows,
        executor: LocalExecutor | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.blueprints = blueprints
        self.rows = rows
        self.executor = executor or LocalExecutor(settings)
        self.slurm = SlurmExecutor(settings) if settings.slurm else None
        if self.slurm is not None:
            self.slurm.on_reachability = self._cluster_reachability
        self._runs: dict[int, Run] = {}
        self._pending_restarts: dict[int, asyncio.Task[None]] = {}
        self._background = BackgroundTasks('Supervisor')
        self._reserved_ports: set[int] = set()
        self.desktops = Desktops(settings, on_change=self._desktop_changed, on_note=self._desktop_note)

    # ------------------------------------------------------------------ queries

    def is_running(self, instance_id: int) -> bool:
        return instance_id in self._runs

    def running_pids(self) -> dict[int, int]:
        """{instance id: runner PID} of the runs held now; the runner leads the instance's process tree."""
        return {instance_id: run.handle.pid for instance_id, run in self._runs.items() if run.handle.pid}

    def running_names(self) -> dict[int, str]:
        return {instance_id: run.name for instance_id, run in self._runs.items()}

    # ------------------------------------------------------------------ start

    async def start(self, instance_id: int, *, automatic: bool = False) -> InstancePublic:
        """Launch the instance; answers as soon as the process exists (status ``starting``)."""
        async with self.rows.hold(instance_id):
            if not automatic:
                self._cancel_pending_restart(instance_id)
            instance, routed = await asyncio.to_thread(self._load, instance_id)
            if instance_id in self._runs or instance.status not in lifecycle.STARTABLE:
                raise Conflict(f'Instance {instance.name!r} is already running ({instance.status})')
            if instance.executor == 'slurm':
                return await self._submit(instance, automatic)
            taken = self._ports_in_use() | {port for other, port in routed.items() if other != instance_id}
            # Chosen on the event loop (quick syscalls) so concurrent starts never pick the same port;
            # the last run's port again when it is free, so nginx's route for it stays valid.
            port = launch.free_port(taken, preferred=instance.internal_port)
            self._reserved_ports.add(port)
            try:
                prepared, handle, row = await asyncio.to_thread(self._launch, instance, port, automatic)
            finally:
                self._reserved_ports.discard(port)
            run = Run(instance_id, handle, port, persistent=instance.persistent)
            self._runs[instance_id] = run
            self._watch_exit(run)
            public = self.rows.publish(row)
            run.ready_task = self._spawn_task(
                self._await_ready(run, prepared.meta.ready, prepared.meta.stall_timeout, prepared.log_path, 0.0)
            )
        log.info('Started %s (pid %s, port %s)', instance.name, handle.pid, port)
        return public

    async def _submit(self, instance: Instance, automatic: bool) -> InstancePublic:
        """A Slurm instance: submit its job (status ``queued``); ``_follow_job`` takes it from there.
        Caller holds the lock."""
        assert instance.id is not None
        slurm = self._slurm()
        prepared, handle, row = await asyncio.to_thread(self._launch, instance, 0, automatic, slurm)
        run = Run(instance.id, handle, None, executor=slurm)
        self._runs[instance.id] = run
        self._watch_exit(run)
        public = self.rows.publish(row)
        run.ready_task = self._spawn_task(self._follow_job(run, prepared.meta.ready, prepared.meta.stall_timeout))
        log.info('Queued %s as Slurm job %s', instance.name, handle.job_id)
        return public

    def _slurm(self) -> SlurmExecutor:
        if self.slurm is None:
            raise Conflict('This instance runs on Slurm, which is not configured (AIKORE_SLURM=1 or AIKORE_SLURM_CONF)')
        return self.slurm

    def _executor_for(self, instance: Instance) -> AnyExecutor:
        return self._slurm() if instance.executor == 'slurm' else self.executor

    def _of(self, run: Run) -> AnyExecutor:
        return run.executor or self.executor

    async def _follow_job(self, run: Run, check: ReadyCheck, stall_timeout: float) -> None:
        """Queued until the job runs (Slurm's reason in ``status_detail``), then ``starting`` at its
        node and port (nginx routes there, the stall timer starts), then readiness as for a local run."""
        slurm = self._slurm()

        async def pending(reason: str) -> None:
            async with self.rows.hold(run.instance_id):
                if self._runs.get(run.instance_id) is run and not run.stopping:
                    await self.rows.update(run.instance_id, status_detail=f'queued: {reason}')

        endpoint = await slurm.wait_running(run.handle, pending)
        if endpoint is None:
            return  # ended while queued: the exit handler records it
        secret = await asyncio.to_thread(job_secret, self.settings, run.name)
        run.host, run.port, run.probe_headers = endpoint.addr, endpoint.port, {'X-AiKore-Job': secret}
        where = {'node': endpoint.node, 'node_addr': endpoint.addr, 'internal_port': endpoint.port}
        async with self.rows.hold(run.instance_id):
            if self._runs.get(run.instance_id) is not run or run.stopping:
                return
            status = (await asyncio.to_thread(store.get, self.engine, run.instance_id)).status
            if status == InstanceStatus.QUEUED:
                await self.rows.set_status(run.instance_id, InstanceStatus.STARTING, status_detail=None, **where)
            else:  # re-adopted while starting or stalled
                await self.rows.update(run.instance_id, **where)
        log.info('%s runs on %s (%s:%s)', run.name, endpoint.node, endpoint.addr, endpoint.port)
        log_path = slurm.log_path(run.name)
        await self._await_ready(run, check, stall_timeout, log_path, 0.0, stalled=status == InstanceStatus.STALLED)

    async def _cluster_reachability(self, since: datetime | None) -> None:
        """Slurm stopped (or resumed) answering: its instances keep their status, flagged meanwhile."""
        for instance in await asyncio.to_thread(store.list_all, self.engine):
            if instance.executor != 'slurm' or instance.id is None:
                continue
            if since is not None and instance.status not in lifecycle.RUNNING:
                continue
            if instance.cluster_unreachable_since != since:
                async with self.rows.hold(instance.id):
                    if since is not None and not self.is_running(instance.id):
                        continue  # its run ended since the list was read: nothing to flag
                    with contextlib.suppress(ServiceError):
                        await self.rows.update(instance.id, cluster_unreachable_since=since)

    def _ports_in_use(self) -> set[int]:
        low, high = self.settings.port_range
        ours = {run.port for run in self._runs.values() if run.port}
        return ours | self._reserved_ports | set(range(low, high + 1)) | {self.settings.port}

    def _load(self, instance_id: int) -> tuple[Instance, dict[int, int]]:
        """The instance, and the internal ports every instance runs on or last ran on."""
        return store.get(self.engine, instance_id), store.route_ports(self.engine)

    def _parent(self, instance: Instance) -> Instance | None:
        """A satellite's parent (whose script, code and environment it runs), else None."""
        if instance.parent_id is None:
            return None
        try:
            return store.get(self.engine, instance.parent_id)
        except NotFound:
            raise Conflict(
                f'{instance.name!r} is a satellite of instance {instance.parent_id}, which no longer exists'
            ) from None

    def _launch(
        self, instance: Instance, port: int, automatic: bool, executor: AnyExecutor | None = None
    ) -> tuple[launch.Launch, RunHandle, Instance]:
        """Prepare, spawn and record the run in one trip to a worker thread: when 20 instances
        start at once, every trip waits for a CPU, and the start call for every trip."""
        executor = executor or self.executor
        launch.restart_marker(self.settings, instance.name).unlink(missing_ok=True)
        parent = self._parent(instance)
        preflight.refuse_during_rebuild(self.settings, self.engine, instance, parent, self._runs)
        # a satellite runs its parent's script
        preflight.restore_missing_script(self.settings, self.blueprints, parent or instance)
        prepared = launch.prepare(self.settings, instance, self.blueprints.functions_path, port, parent)
        handle = executor.start(instance, prepared)
        fields: dict[str, object] = {
            'pid': handle.pid,
            'pid_started_at': handle.started_at,
            'exit_code': None,
            'internal_port': port,
        }
        status = InstanceStatus.STARTING
        if handle.job_id is not None:  # a cluster job: queued until it runs, then its node and port
            status = InstanceStatus.QUEUED
            fields.update(pid=None, internal_port=instance.internal_port, slurm_job_id=handle.job_id, node=None,
                          status_detail='queued: submitted', cluster_unreachable_since=None)  # fmt: skip
        if not automatic:
            fields['restart_count'] = 0
        try:
            row = self.rows.write_status(instance.id or 0, status, **fields)
        except BaseException:
            executor.kill_now(handle)  # never leave a run nobody knows of
            raise
        return prepared, handle, row

    # ------------------------------------------------------------------ readiness

    async def _await_ready(
        self,
        run: Run,
        check: ReadyCheck,
        stall_timeout: float,
        log_path: Path,
        already_waited: float,
        stalled: bool = False,
    ) -> None:
        probe = ReadinessProbe(check, run.port or 0, log_path, run.host, run.probe_headers)
        began = time.monotonic() - already_waited
        while not await probe.ready():
            if run.exited.is_set():
                return
            waited = time.monotonic() - began
            if not stalled and waited >= stall_timeout:
                stalled = True
                await self._save_if_current(run, InstanceStatus.STALLED)
                log.warning('%s not ready after %.0f s: stalled', run.name, stall_timeout)
            await asyncio.sleep(probe_interval(waited))
        run.ready_at = time.monotonic()
        await self._save_if_current(run, InstanceStatus.STARTED)
        log.info('%s is ready (%s)', run.name, check)
        if run.persistent and not run.stopping and self._runs.get(run.instance_id) is run:
            run.desktop_task = self._spawn_task(self._start_desktop(run))

    # ------------------------------------------------------------------ persistent desktop

    async def _start_desktop(self, run: Run) -> None:
        """Once the app is ready: its desktop (Xvfb, openbox, Chromium on the app, Selkies)."""
        instance = await asyncio.to_thread(store.get, self.engine, run.instance_id)
        await self.desktops.start(instance, run.app_url)

    async def _end_desktop(self, run: Run | None, instance_id: int) -> None:
        """The run is over (or ending): its desktop goes with it."""
        if run is not None and run.desktop_task is not None:
            run.desktop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run.desktop_task
        await self.desktops.stop(instance_id)

    def _desktop_note(self, instance_id: int, line: str) -> None:
        """A desktop line in the instance's log, through its runner (the log's one writer); once
        the run is over there is no runner: the panel's log (where Desktops logged it) has it."""
        run = self._runs.get(instance_id)
        if run is not None:
            logs.send_note(launch.notes_fifo(self.settings, run.name), line)

    def _desktop_changed(self, instance_id: int, display: int | None) -> None:
        self._spawn_task(self._record_display(instance_id, display))

    async def _record_display(self, instance_id: int, display: int | None) -> None:
        """``persistent_display`` is set while the desktop is up (the row's indicator)."""
        if display is not None and not self.desktops.is_up(instance_id):
            return  # it went down again meanwhile
        with contextlib.suppress(ServiceError):
            await self.rows.update(instance_id, persistent_display=display)

    # ------------------------------------------------------------------ exit

    def _watch_exit(self, run: Run) -> None:
        self._of(run).watch(run.handle, lambda: self._spawn_task(self._handle_exit(run)))

    async def _handle_exit(self, run: Run) -> None:
        code = await asyncio.to_thread(self._of(run).exit_code, run.handle)
        run.exit_code = code
        run.exited.set()
        for task in (run.ready_task, run.desktop_task):
            if task is not None:
                task.cancel()
        async with self.rows.hold(run.instance_id):
            # Checked under the lock: a stop that took it first owns the end of this run.
            if run.stopping or self._runs.get(run.instance_id) is not run:
                return  # the stop task finishes the job once the whole group is gone
            del self._runs[run.instance_id]
            instance = await asyncio.to_thread(store.get, self.engine, run.instance_id)
            restart_count = instance.restart_count
            if run.ready_at is not None and time.monotonic() - run.ready_at >= HEALTHY_UPTIME:
                restart_count = 0
            log.log(logging.WARNING if code != 0 else logging.INFO, '%s exited with code %s', run.name, code)
            await self._record_end(instance, code, restart_count, stopping=False, pid=run.handle.pid)

    async def _record_end(
        self, instance: Instance, code: int | None, restart_count: int, *, stopping: bool, pid: int | None
    ) -> None:
        """Save how a run ended, end what it left in its group, and have ``on-failure`` start it
        again (after a back-off, up to AIKORE_RESTART_MAX times in a row). Caller holds the lock."""
        assert instance.id is not None
        failed = not stopping and code != 0
        again = failed and instance.restart_policy == RestartPolicy.ON_FAILURE
        restart = again and restart_count < self.settings.restart_max
        await self._record_despite_full_disk(
            instance.id,
            instance.name,
            InstanceStatus.ERROR if failed else InstanceStatus.STOPPED,
            code,
            restart_count=restart_count + 1 if restart else restart_count,
        )
        if pid:
            self._spawn_task(self.executor.clean(pid))
        if instance.persistent or self.desktops.get(instance.id) is not None:
            await self._end_desktop(None, instance.id)
        if restart:
            delay = min(MAX_BACKOFF, self.settings.restart_backoff * 2**restart_count)
            log.info('Restarting %s in %.1f s (attempt %d of %d)', instance.name, delay, restart_count + 1,
                     self.settings.restart_max)  # fmt: skip
            self._schedule_restart(instance.id, instance.name, delay)
        elif again:
            log.warning('%s failed again after %d automatic restarts: not restarting it again', instance.name,
                        restart_count)  # fmt: skip

    async def _record_despite_full_disk(
        self, instance_id: int, name: str, status: InstanceStatus, code: int | None, **fields: object
    ) -> None:
        """Record how a run ended, also through a full disk: retried until the database has room
        (the instance's lock stays held, so nothing else changes it meanwhile); the instance's log
        then says why the end came late. Caller holds the lock."""
        waited = False
        while True:
            try:
                await self.rows.set_status(instance_id, status, **ended(code), **fields)
                break
            except Exception as exc:
                if not disk_full(exc):
                    raise
                if not waited:
                    log.warning('%s ended (code %s) but the disk is full: recording it once there is room', name, code)
                    waited = True
                await asyncio.sleep(DISK_FULL_RETRY)
        if waited:
            note = f'\n[aikore] This run ended (code {code}) while the disk was full; output may be missing.\n'
            await asyncio.to_thread(append_note, self.executor.log_path(name), note)

    def _schedule_restart(self, instance_id: int, name: str, delay: float) -> None:
        self._pending_restarts[instance_id] = self._spawn_task(self._restart_later(instance_id, name, delay))

    async def _restart_later(self, instance_id: int, name: str, delay: float) -> None:
        """Start the instance again after ``delay``; the due time is kept on disk meanwhile, so a
        panel restarted before then still does it (``resume_restarts``). A start removes it."""
        marker = launch.restart_marker(self.settings, name)
        await asyncio.to_thread(launch.write_restart_due, marker, time.time() + delay)
        await asyncio.sleep(delay)
        async with self.rows.hold(instance_id):
            if self._pending_restarts.get(instance_id) is not asyncio.current_task():
                return  # cancelled by a stop or start that held the lock first
            self._pending_restarts.pop(instance_id, None)
            try:
                await self.start(instance_id, automatic=True)
            except ServiceError as exc:
                log.warning('Automatic restart of instance %s failed: %s', instance_id, exc.detail)
                await asyncio.to_thread(marker.unlink, missing_ok=True)

    def forget(self, instance_id: int) -> None:
        """The instance is being deleted: drop any pending automatic restart."""
        self._cancel_pending_restart(instance_id)

    def _cancel_pending_restart(self, instance_id: int) -> None:
        task = self._pending_restarts.pop(instance_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # ------------------------------------------------------------------ stop

    async def stop(self, instance_id: int) -> InstancePublic:
        """Ask the instance to stop; answers at once (status ``stopping``)."""
        async with self.rows.hold(instance_id):
            self._cancel_pending_restart(instance_id)  # under the lock: an exit cannot schedule one after this
            run = self._runs.get(instance_id)
            if run is None:
                instance = await asyncio.to_thread(store.get, self.engine, instance_id)
                if instance.status.is_running:  # state left from a run we no longer hold
                    return await self.rows.set_status(instance_id, InstanceStatus.STOPPED, **ended(instance.exit_code))
                # No automatic restart after a stop, even one a restarted panel would resume.
                await asyncio.to_thread(launch.restart_marker(self.settings, instance.name).unlink, missing_ok=True)
                return store.to_public(instance)
            if run.stopping:
                return store.to_public(await asyncio.to_thread(store.get, self.engine, instance_id))
            self._begin_stop(run)
            return await self.rows.set_status(instance_id, InstanceStatus.STOPPING)

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
        await asyncio.gather(self._of(run).terminate(run.handle), self._end_desktop(run, run.instance_id))
        if not run.exited.is_set():  # ended by the stop: the exit is this task's to record
            run.exit_code = await asyncio.to_thread(self._of(run).exit_code, run.handle)
            run.exited.set()
        async with self.rows.hold(run.instance_id):
            if self._runs.get(run.instance_id) is run:
                del self._runs[run.instance_id]
                await self._record_despite_full_disk(run.instance_id, run.name, InstanceStatus.STOPPED, run.exit_code)
        log.info('Stopped %s', run.name)

    async def restart(self, instance_id: int) -> InstancePublic:
        """Stop (if running) then start again; answers at once."""
        async with self.rows.hold(instance_id):
            if instance_id not in self._runs:
                return await self.start(instance_id)
            public = await self.stop(instance_id)
            self._spawn_task(self._start_after_stop(instance_id))
            return public

    async def _start_after_stop(self, instance_id: int) -> None:
        await self.wait_stopped(instance_id)
        try:
            await self.start(instance_id)
        except NotFound:
            log.info('Instance %s was deleted before its restart could start it', instance_id)
        except ServiceError as exc:
            log.warning('Restart of instance %s failed: %s', instance_id, exc.detail)

    # ------------------------------------------------------------------ panel start / exit

    async def adopt_all(self) -> list[str]:
        """Take back runs left by an earlier panel (``readoption.Readoption``): the sentences of
        those that could not be taken back."""
        return await Readoption(self).adopt_all()

    async def shutdown(self) -> None:
        """Panel exit: leave instances running (re-adopted next start) unless AIKORE_STOP_ON_EXIT."""
        for task in list(self._pending_restarts.values()):
            task.cancel()
        if self.settings.stop_on_exit:
            for instance_id in list(self._runs):
                try:
                    await self.stop(instance_id)
                except ServiceError:
                    continue
            await asyncio.gather(
                *(run.stop_task for run in self._runs.values() if run.stop_task), return_exceptions=True
            )
        for run in list(self._runs.values()):
            for pending in (run.ready_task, run.desktop_task):
                if pending is not None:
                    pending.cancel()
            self._of(run).release(run.handle)
        self._runs.clear()
        if self.slurm is not None:
            self.slurm.shutdown()
        self.desktops.release_all()

    # ------------------------------------------------------------------ helpers

    async def _save_if_current(self, run: Run, status: InstanceStatus) -> None:
        async with self.rows.hold(run.instance_id):
            if self._runs.get(run.instance_id) is run and not run.stopping:
                await self.rows.set_status(run.instance_id, status)

    def _spawn_task(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._background.spawn(coroutine)
