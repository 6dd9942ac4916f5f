"""The Slurm executor: an instance whose ``executor`` is ``slurm`` runs as a batch job on a node.

Submitted with ``sbatch --parsable`` (``--gres=gpu:N`` from its GPU count, its partition, node
and time limit, the blueprint's environment). The job runs ``job_gate.py`` on its node: the gate
picks the app's port and its own, writes ``<node> <port>`` to ``run/endpoint`` in the instance's
folder (the shared data directory) and runs ``runner.py``, which writes the instance's log and
exit file there as for a local run, so the Logs view and API read the job's output unchanged.
nginx reaches the app through the gate with the per-job secret (``run/job-secret``, 0600).

One poller looks at the queue (``squeue``) every ``AIKORE_SLURM_POLL`` seconds for every
watched job: pending (with Slurm's reason), running (then the endpoint file says where), ended
(then ``on_exit``). When a command fails the cluster is *unreachable*: statuses stay as they
were and ``on_reachability`` says since when; jobs survive a controller restart, so nothing is
ended for it. Stop is ``scancel`` (cgroup process tracking ends the job's whole tree). After a
panel restart a run is re-adopted from its job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ...config import Settings
from ...models import Instance, utc_now
from ..errors import InvalidInput, ServiceError
from ..files import PRIVATE, write_atomic
from ..tasks import BackgroundTasks
from . import launch
from .executor import RUNNER, RunHandle, read_exit_file, runner_command

log = logging.getLogger(__name__)

JOB_GATE = Path(__file__).with_name('job_gate.py')
COMMAND_TIMEOUT = 15.0
# Job states in which something of the job may still run on its node (squeue's long names).
LIVE_STATES = frozenset({
    'PENDING', 'CONFIGURING', 'RUNNING', 'COMPLETING', 'SUSPENDED', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED',
    'RESIZING', 'SIGNALING', 'STAGE_OUT', 'STOPPED', 'RESV_DEL_HOLD',
})  # fmt: skip
WAITING_STATES = frozenset({'PENDING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'RESV_DEL_HOLD'})
NODE_ADDR_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9.:-]{0,252}')  # a host name or an address, for nginx
SLURM_VALUE_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.:,\[\]-]{0,127}')  # partition, node, time limit


class SlurmUnreachable(ServiceError):
    """A cluster command failed or did not answer."""

    status_code = 503


class SlurmRefused(ServiceError):
    """Slurm answered, and will not take the job (no such partition, more GPUs than a node has)."""

    status_code = 422


@dataclass(frozen=True)
class JobInfo:
    state: str
    reason: str
    nodes: str


@dataclass(frozen=True)
class Endpoint:
    node: str
    addr: str
    port: int


@dataclass(frozen=True)
class NodeInfo:
    name: str
    state: str
    addr: str
    gpus: int
    gpus_used: int
    jobs: tuple[str, ...] = ()


@dataclass(eq=False)
class JobWatch:
    handle: RunHandle
    on_exit: Callable[[], object] | None = None
    info: JobInfo | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def secret_path(settings: Settings, name: str) -> Path:
    return launch.instance_dir(settings, name) / 'run' / 'job-secret'


def job_secret(settings: Settings, name: str) -> str:
    """The per-job secret the job's gate wants (``job_gate.py``) and nginx sends; '' when there is none."""
    try:
        return secret_path(settings, name).read_text().strip()
    except OSError:
        return ''


class SlurmCommands:
    """The cluster's command-line tools (blocking: called in worker threads)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.user = pwd.getpwuid(os.getuid()).pw_name

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        if self.settings.slurm_conf is not None:
            env['SLURM_CONF'] = str(self.settings.slurm_conf)
        return env

    def tool(self, name: str) -> str:
        folder = self.settings.slurm_bin
        return str(folder / name) if folder is not None else (shutil.which(name) or name)

    def run(self, name: str, *args: str, env: dict[str, str] | None = None) -> str:
        try:
            result = subprocess.run(
                [self.tool(name), *args], env=self.env(env), capture_output=True, text=True,
                timeout=COMMAND_TIMEOUT, check=False, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmUnreachable(f'{name} failed: {exc}') from None
        if result.returncode != 0:
            message = ' '.join((result.stderr or result.stdout).split())[:300]
            raise SlurmUnreachable(f'{name} failed ({result.returncode}): {message}')
        return result.stdout

    def queue(self) -> dict[str, JobInfo]:
        """This user's jobs Slurm still knows of (ended ones too, for a while)."""
        text = self.run('squeue', '-h', '-t', 'all', '-u', self.user, '-o', '%i|%T|%r|%N')
        jobs = {}
        for line in text.splitlines():
            parts = line.strip().split('|')
            if len(parts) == 4:
                jobs[parts[0]] = JobInfo(parts[1], parts[2], parts[3])
        return jobs

    def submit(self, args: list[str], env: dict[str, str]) -> str:
        try:
            return self.run('sbatch', '--parsable', *args, env=env).strip().split(';')[0]
        except SlurmUnreachable as exc:
            if 'submission failed' in exc.detail:  # Slurm answered: the job can never run as asked
                raise SlurmRefused(f'Slurm refused the job: {exc.detail}') from None
            raise

    def cancel(self, job_id: str) -> None:
        self.run('scancel', job_id)

    def exit_code(self, job_id: str) -> int | None:
        match = re.search(r'\bExitCode=(\d+):(\d+)', self.run('scontrol', 'show', 'job', '-o', job_id))
        if match is None:
            return None
        code, signal_number = int(match.group(1)), int(match.group(2))
        return 128 + signal_number if signal_number else code

    def nodes(self) -> list[NodeInfo]:
        nodes = []
        for line in self.run('scontrol', 'show', 'node', '-d', '-o').splitlines():
            fields = dict(re.findall(r'(\w+)=(\S*)', line))
            if 'NodeName' in fields:
                gpus, used = gpu_count(fields.get('Gres', '')), gpu_count(fields.get('GresUsed', ''))
                nodes.append(NodeInfo(fields['NodeName'], fields.get('State', '').lower(), fields.get('NodeAddr', ''),
                                      gpus, used))  # fmt: skip
        return nodes


def gpu_count(gres: str) -> int:
    """``gpu:2`` or ``gpu:1(IDX:0)`` or ``gpu:tesla:2(S:0)`` -> the count."""
    total = 0
    for item in re.split(r',(?![^(]*\))', gres):
        if item.startswith('gpu:'):
            match = re.search(r':(\d+)(?:\(|$)', item)
            total += int(match.group(1)) if match else 0
    return total


class SlurmExecutor:
    """Runs instances as Slurm jobs (``executor.Executor``, plus what a queue adds: see ``wait_running``)."""

    def __init__(self, settings: Settings, commands: SlurmCommands | None = None) -> None:
        self.settings = settings
        self.commands = commands or SlurmCommands(settings)
        self.on_reachability: Callable[[datetime | None], Awaitable[None]] | None = None
        self.unreachable_since: datetime | None = None
        self.last_error: str | None = None
        self._jobs: dict[str, JobWatch] = {}
        self._addrs: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._background = BackgroundTasks('Slurm poller')

    # ------------------------------------------------------------------ paths as the nodes see them

    def node_path(self, path: Path | str) -> str:
        text, local = str(path), str(self.settings.data_dir)
        shared = self.settings.slurm_data_dir
        if shared is None or not (text == local or text.startswith(local + '/')):
            return text
        return str(shared) + text[len(local) :]

    def _tools_dir(self) -> Path:
        """The gate and the runner, copied into the data directory: the nodes see that, not the panel's code."""
        folder = self.settings.data_dir / 'slurm'
        folder.mkdir(parents=True, exist_ok=True)
        for source in (JOB_GATE, RUNNER):
            target = folder / source.name
            text = source.read_bytes()
            if not target.exists() or target.read_bytes() != text:
                write_atomic(target, text)
        return folder

    # ------------------------------------------------------------------ start / adopt

    def start(self, instance: Instance, prepared: launch.Launch) -> RunHandle:
        """Submit the job (blocking); its run has no process here (pid 0), only a job id."""
        run_dir = prepared.instance_dir / 'run'
        prepared.exit_file.unlink(missing_ok=True)
        endpoint = run_dir / 'endpoint'
        endpoint.unlink(missing_ok=True)
        secret_file = secret_path(self.settings, instance.name)
        write_atomic(secret_file, secrets.token_urlsafe(32) + '\n', PRIVATE)
        tools = self._tools_dir()
        python = self.settings.slurm_python or sys.executable
        runner = [python, *(self.node_path(arg) for arg in runner_command(self.settings, prepared)[1:])]
        runner[3] = self.node_path(tools / RUNNER.name)  # python -I -S runner.py ...
        gate = [python, '-I', '-S', self.node_path(tools / JOB_GATE.name), '--secret-file',
                self.node_path(secret_file), '--endpoint-file', self.node_path(endpoint), '--', *runner]  # fmt: skip
        script = run_dir / 'job.sh'
        write_atomic(script, f'#!/bin/bash\nexec {shlex.join(gate)}\n')
        env = {key: self.node_path(value) for key, value in prepared.env.items()}
        for key in ('CUDA_VISIBLE_DEVICES', 'WEBUI_PORT'):  # Slurm sets the GPUs; the gate picks the port
            env.pop(key, None)
        job_id = self.commands.submit([*self.job_options(instance, prepared), self.node_path(script)], env)
        log.info('Submitted %s as Slurm job %s', instance.name, job_id)
        return RunHandle(instance.name, 0, None, job_id=job_id)

    def job_options(self, instance: Instance, prepared: launch.Launch) -> list[str]:
        options = [
            f'--job-name=aikore-{instance.slug}',
            f'--output={self.node_path(prepared.instance_dir / "run")}/slurm-%j.out',
            f'--chdir={self.node_path(prepared.instance_dir)}',
            '--export=ALL',
        ]
        if self.settings.slurm_exclusive == 'user':  # the app's loopback port: no other user on the node
            options.append('--exclusive=user')
        if instance.gpu_ids:
            options.append(f'--gres=gpu:{len(instance.gpu_ids)}')
        partition = instance.slurm_partition or self.settings.slurm_partition
        if partition:
            options.append(f'--partition={partition}')
        if instance.slurm_node:
            options.append(f'--nodelist={instance.slurm_node}')
        if instance.slurm_time_limit:
            options.append(f'--time={instance.slurm_time_limit}')
        return options

    def kill_now(self, handle: RunHandle) -> None:
        if handle.job_id:
            with contextlib.suppress(SlurmUnreachable):
                self.commands.cancel(handle.job_id)

    def adopt(self, instance: Instance) -> RunHandle | None:
        """The job an earlier panel submitted, while Slurm still runs or queues it. While the
        cluster does not answer it is taken back all the same (jobs outlive a controller restart):
        the poller ends it once Slurm says it is gone."""
        job_id = instance.slurm_job_id
        if not job_id:
            return None
        try:
            info = self.commands.queue().get(job_id)
        except SlurmUnreachable as exc:
            log.warning('Slurm does not answer (%s): %s re-adopted as job %s unchecked', exc.detail, instance.name,
                        job_id)  # fmt: skip
            return RunHandle(instance.name, 0, None, job_id=job_id)
        if info is None or info.state not in LIVE_STATES:
            return None
        return RunHandle(instance.name, 0, None, job_id=job_id)

    # ------------------------------------------------------------------ following jobs

    def watch(self, handle: RunHandle, on_exit: Callable[[], object]) -> None:
        assert handle.job_id is not None
        job = self._jobs.setdefault(handle.job_id, JobWatch(handle))
        job.on_exit = on_exit
        if self._poller is None or self._poller.done():
            self._poller = self._background.spawn(self._poll_forever())
        self._wake.set()

    def release(self, handle: RunHandle) -> None:
        if handle.job_id:
            self._jobs.pop(handle.job_id, None)

    async def _poll_forever(self) -> None:
        while True:
            if self._jobs:
                try:
                    await self.poll()
                except Exception:  # e.g. the database, in the supervisor's reachability step
                    # One look that failed must not end the following of every job: a dead poller
                    # left each Stop waiting and each job's end unrecorded.
                    log.exception('Following the Slurm jobs failed; looking again at the next poll')
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.slurm_poll)
            self._wake.clear()

    async def poll(self) -> None:
        """One look at the queue for every watched job. Only the jobs watched before squeue was
        asked are judged by its answer: a job submitted while it ran is missing from that answer
        without having ended (taken for ended, its instance was recorded as stopped while the job
        went on running, forgotten)."""
        watched = list(self._jobs.items())
        try:
            queue = await asyncio.to_thread(self.commands.queue)
        except SlurmUnreachable as exc:
            await self._reachability(exc.detail)
            for job in list(self._jobs.values()):
                job.changed.set()
            return
        await self._reachability(None)
        for job_id, job in watched:
            if self._jobs.get(job_id) is not job:
                continue  # released meanwhile
            job.info = queue.get(job_id)
            job.changed.set()
            if job.info is None or job.info.state not in LIVE_STATES:
                self._jobs.pop(job_id, None)
                job.ended.set()
                if job.on_exit is not None:
                    job.on_exit()

    async def _reachability(self, error: str | None) -> None:
        """Remember whether the last command answered; tell the supervisor when that changes."""
        self.last_error = error
        if (error is None) == (self.unreachable_since is None):
            return
        if error is not None:
            self.unreachable_since = utc_now()
            log.warning('Slurm is unreachable: %s', error)
        else:
            self.unreachable_since = None
            log.info('Slurm answers again')
        if self.on_reachability is not None:
            await self.on_reachability(self.unreachable_since)

    async def wait_running(self, handle: RunHandle, on_pending: Callable[[str], Awaitable[None]]) -> Endpoint | None:
        """Returns where the job's gate listens once it runs (None: it ended first); ``on_pending``
        hears Slurm's reason each time it changes while the job waits ("Resources")."""
        assert handle.job_id is not None
        job = self._jobs.get(handle.job_id)
        if job is None:
            return None
        reported: str | None = None
        while not job.ended.is_set():
            job.changed.clear()  # before reading: a poll during the awaits below is not missed
            info = job.info
            if info is not None and info.state in WAITING_STATES and info.reason != reported:
                reported = info.reason
                await on_pending(info.reason)
            elif (info is not None and info.state not in WAITING_STATES) or self.unreachable_since is not None:
                endpoint = await asyncio.to_thread(self.endpoint, handle.name)
                if endpoint is not None:
                    return endpoint
            await job.changed.wait()
        return None

    def endpoint(self, name: str) -> Endpoint | None:
        """What the job's gate wrote, and its node's address (blocking)."""
        try:
            node, port = (launch.instance_dir(self.settings, name) / 'run' / 'endpoint').read_text().split()
        except (OSError, ValueError):
            return None
        addr = self._addrs.get(node)
        if addr is None:
            try:
                addr = next((n.addr for n in self.commands.nodes() if n.name == node), '')
            except SlurmUnreachable:
                return None
            if not NODE_ADDR_RE.fullmatch(addr):
                log.warning('Slurm node %s has an address nginx cannot use: %r', node, addr)
                return None
            self._addrs[node] = addr
        return Endpoint(node, addr, int(port)) if port.isdigit() else None

    # ------------------------------------------------------------------ exit

    def exit_code(self, handle: RunHandle) -> int | None:
        code = self.recorded_exit_code(handle.name, None)
        if code is None and handle.job_id:
            with contextlib.suppress(SlurmUnreachable):
                return self.commands.exit_code(handle.job_id)
        return code

    def recorded_exit_code(self, name: str, handle_pid: int | None) -> int | None:
        return read_exit_file(launch.exit_file(self.settings, name), None)

    def exit_file_unreadable(self, name: str) -> bool:
        path = launch.exit_file(self.settings, name)
        return path.exists() and read_exit_file(path, None) is None

    def log_path(self, name: str) -> Path:
        return launch.log_path(self.settings, name)

    # ------------------------------------------------------------------ stop

    async def terminate(self, handle: RunHandle) -> None:
        """``scancel``, retried while the cluster does not answer; returns once Slurm says the job
        is over (nothing of it runs: COMPLETING lasts until its cgroup is empty)."""
        assert handle.job_id is not None
        job = self._jobs.get(handle.job_id)
        if job is None:
            job = self._jobs[handle.job_id] = JobWatch(handle)
            self.watch(handle, lambda: None)
        while True:
            try:
                await asyncio.to_thread(self.commands.cancel, handle.job_id)
                break
            except SlurmUnreachable as exc:
                log.info('scancel %s: %s (retrying)', handle.job_id, exc.detail)
                await asyncio.sleep(self.settings.slurm_poll)
        self._wake.set()
        await job.ended.wait()

    async def clean(self, handle_pid: int) -> None:
        """Slurm ends what a job leaves behind."""

    def shutdown(self) -> None:
        self._background.cancel_all()

    # ------------------------------------------------------------------ the cluster, for the monitor

    async def nodes(self) -> list[NodeInfo]:
        """Every node with its GPUs in use and the instances' jobs on it. The watched jobs are
        taken here, on the loop (the poller changes them there); Slurm is asked in a worker thread."""
        return await asyncio.to_thread(self.nodes_with, list(self._jobs.values()))

    def nodes_with(self, jobs: list[JobWatch]) -> list[NodeInfo]:
        """Every node, with those of ``jobs`` that run there (blocking)."""
        nodes = self.commands.nodes()
        on_node: dict[str, list[str]] = {}
        for job in jobs:
            info = job.info  # once: the poller, on the event loop, may change it meanwhile
            if info is not None and info.state == 'RUNNING':
                on_node.setdefault(info.nodes, []).append(job.handle.name)
        return [NodeInfo(n.name, n.state, n.addr, n.gpus, n.gpus_used, tuple(on_node.get(n.name, ()))) for n in nodes]


def check_options(settings: Settings, executor: str, values: dict[str, object]) -> None:
    """What a Slurm instance may be given (shared by create and update): 422 with a sentence."""
    if executor != 'slurm':
        return
    if not settings.slurm:
        raise InvalidInput('executor "slurm" needs a configured cluster (AIKORE_SLURM=1 or AIKORE_SLURM_CONF)')
    if values.get('persistent'):
        raise InvalidInput('a Slurm instance has no persistent desktop yet (persistent must be false)')
    if values.get('public_port') is not None:
        raise InvalidInput('a Slurm instance has no public port yet: it is reached through the proxy')
    for key in ('slurm_partition', 'slurm_node', 'slurm_time_limit'):
        value = values.get(key)
        if value is not None and not SLURM_VALUE_RE.fullmatch(str(value)):
            raise InvalidInput(f'{key} {value!r} is not a Slurm name or time ([A-Za-z0-9_.:,[]-])')
