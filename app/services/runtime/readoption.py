"""Taking back, at panel start, the runs an earlier panel left: local runs by their runner,
Slurm jobs by their job id; runs that ended meanwhile are recorded, and the on-failure restarts
that were pending are resumed. The supervisor's helper: it works on the supervisor's runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from ... import lifecycle
from ...models import Instance, InstanceStatus, RestartPolicy
from ..catalog import store
from . import launch
from .executor import RunHandle
from .runs import CorruptRunState, Run, ended
from .slurm import job_secret

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger(__name__)


class Readoption:
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor

    async def adopt_all(self) -> list[str]:
        """Take back runs left by an earlier panel; mark the dead ones stopped or error; resume the
        on-failure restarts that were pending when it stopped. One instance that cannot be
        re-adopted (e.g. a corrupt state file) is logged and skipped: the sentences are returned."""
        problems: list[str] = []
        instances = await asyncio.to_thread(store.list_in_states, self.sup.engine, lifecycle.RUNNING)
        async with self._each_held_until_taken_back(instances) as taken_back:
            for instance in instances:
                try:
                    await self._adopt(instance)
                except Exception as exc:
                    log.error('Re-adopting %s failed: %r', instance.name, exc, exc_info=exc)
                    problems.append(f'Re-adopting {instance.name} failed: {exc!r}')
                finally:
                    await taken_back(instance)
        for instance in await asyncio.to_thread(store.list_in_states, self.sup.engine, {InstanceStatus.ERROR}):
            await self._resume_restart(instance)
        return problems

    @contextlib.asynccontextmanager
    async def _each_held_until_taken_back(
        self, instances: list[Instance]
    ) -> AsyncIterator[Callable[[Instance], Awaitable[None]]]:
        """Every instance's lock, taken before the first is adopted; each let go by the function
        yielded once its run is taken back. The pages answer while the panel starts, and taking
        back a Slurm job asks squeue (up to 15 s when the cluster is slow): a Stop pressed meanwhile
        took a run not yet taken back for one that was gone, and recorded it stopped while it ran on."""
        holds: dict[int, contextlib.AbstractAsyncContextManager[None]] = {}

        async def taken_back(instance: Instance) -> None:
            hold = holds.pop(instance.id or 0, None)
            if hold is not None:
                await hold.__aexit__(None, None, None)

        try:
            for instance in sorted(instances, key=lambda row: row.id or 0):  # id order, as rows.hold takes them
                assert instance.id is not None
                hold = self.sup.rows.hold(instance.id)
                await hold.__aenter__()
                holds[instance.id] = hold
            yield taken_back
        finally:
            for instance in instances:
                await taken_back(instance)

    async def _resume_restart(self, instance: Instance) -> None:
        marker = launch.restart_marker(self.sup.settings, instance.name)
        due = await asyncio.to_thread(launch.read_restart_due, marker)
        if due is None or instance.id is None or instance.id in self.sup._pending_restarts:
            return
        if instance.restart_policy != RestartPolicy.ON_FAILURE:
            await asyncio.to_thread(marker.unlink, missing_ok=True)
            return
        delay = max(0.0, due - time.time())
        log.info('Restarting %s in %.1f s (pending when the panel stopped)', instance.name, delay)
        self.sup._schedule_restart(instance.id, instance.name, delay)

    async def _adopt(self, instance: Instance) -> None:
        assert instance.id is not None
        executor = self.sup._executor_for(instance)
        handle = await asyncio.to_thread(executor.adopt, instance)
        if handle is not None and handle.job_id is not None:
            await self._adopt_job(instance, handle)
            return
        if handle is not None:
            run = Run(instance.id, handle, instance.internal_port, persistent=instance.persistent)
            self.sup._runs[instance.id] = run
            self.sup._watch_exit(run)
            log.info('Re-adopted %s (pid %s, %s)', instance.name, handle.pid, instance.status)
            if instance.status != InstanceStatus.STOPPING:
                # Its desktop too (a persistent run's, or one left from a run that was): taken
                # back, else started once the app is ready.
                ready = run.persistent and instance.status == InstanceStatus.STARTED
                run.desktop_task = self.sup._spawn_task(self.sup.desktops.resume(instance, run.app_url, ready))
            if instance.status == InstanceStatus.STOPPING:
                self.sup._begin_stop(run)
            elif instance.status != InstanceStatus.STARTED:
                parent = await asyncio.to_thread(self.sup._parent, instance)
                meta = await asyncio.to_thread(launch.read_meta, self.sup.settings, instance, parent)
                log_path = self.sup.executor.log_path(instance.name)
                waited = max(0.0, time.time() - (instance.pid_started_at or time.time()))
                run.ready_task = self.sup._spawn_task(
                    self.sup._await_ready(run, meta.ready, meta.stall_timeout, log_path, waited,
                                      stalled=instance.status == InstanceStatus.STALLED)
                )  # fmt: skip
            return
        pid = instance.pid
        code = await asyncio.to_thread(executor.recorded_exit_code, instance.name, pid)
        log.info('%s ended while the panel was away (exit code %s)', instance.name, code)
        # A failure while the panel was away counts for ``on-failure`` like any other.
        stopping = instance.status == InstanceStatus.STOPPING
        await self.sup._record_end(instance, code, instance.restart_count, stopping=stopping, pid=pid)
        if code is None and await asyncio.to_thread(executor.exit_file_unreadable, instance.name):
            # Recorded as ended all the same; the damaged file is a fault the user should hear of.
            raise CorruptRunState('its exit file is unreadable, so its exit code is unknown (recorded as ended)')

    async def _adopt_job(self, instance: Instance, handle: RunHandle) -> None:
        """Take back a Slurm job: queued or starting, it is followed again from where it is (its
        endpoint file says where it runs); started, only its end is awaited."""
        assert instance.id is not None
        slurm = self.sup._slurm()
        secret = await asyncio.to_thread(job_secret, self.sup.settings, instance.name)
        if not secret:
            await self._end_secretless_job(instance, handle)
            return
        run = Run(instance.id, handle, instance.internal_port, executor=slurm, host=instance.node_addr or '127.0.0.1')
        run.probe_headers = {'X-AiKore-Job': secret}
        self.sup._runs[instance.id] = run
        self.sup._watch_exit(run)
        log.info('Re-adopted %s (Slurm job %s, %s)', instance.name, handle.job_id, instance.status)
        if instance.status == InstanceStatus.STOPPING:
            self.sup._begin_stop(run)
        elif instance.status in (InstanceStatus.QUEUED, InstanceStatus.STARTING, InstanceStatus.STALLED):
            meta = await asyncio.to_thread(launch.read_meta, self.sup.settings, instance)
            run.ready_task = self.sup._spawn_task(self.sup._follow_job(run, meta.ready, meta.stall_timeout))

    async def _end_secretless_job(self, instance: Instance, handle: RunHandle) -> None:
        """A job whose secret (``run/job-secret``) is gone cannot be reached (its gate refuses every
        request without it): it is cancelled and the instance is in error. Caller holds the lock."""
        assert instance.id is not None
        log.warning('%s: its Slurm job %s has no job secret left: cancelled', instance.name, handle.job_id)
        await asyncio.to_thread(self.sup._slurm().kill_now, handle)
        detail = 'its job secret (run/job-secret) was missing when the panel started: the job was cancelled'
        await self.sup.rows.set_status(instance.id, InstanceStatus.ERROR, **{**ended(None), 'status_detail': detail})
