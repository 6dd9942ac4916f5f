"""A real Slurm cluster on this machine for the tests (``shared/notes/slurm.md``, the verified ground).

munged with its own key and socket, one slurmctld and two slurmd node daemons (``vm1``, ``vm2``),
each node with two fake GPUs (character devices made with mknod, so ``--gres=gpu:N`` sets
CUDA_VISIBLE_DEVICES), cgroup process tracking (so ``scancel`` ends a job's whole tree), free
ports, every file under one temp folder. Every daemon runs in the foreground (``-D``) as a child
of the test process in its own process group, and is ended by that group at teardown.

If Slurm cannot start here, :func:`start` raises an AssertionError that says why: the tests fail,
they never skip.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.helpers import end_group, free_port, wait_for

NODES = ('vm1', 'vm2')
GPUS_PER_NODE = 2
TOOLS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue', 'scontrol', 'scancel', 'sinfo')
SBIN_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    munge_socket: Path
    ctld_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm client (sbatch, squeue, the panel) needs to reach this cluster."""
        return {'SLURM_CONF': str(self.conf)}

    def command(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout, check=False
        )

    def queue(self) -> str:
        """Every job Slurm knows of: id, name, state, reason, node (for a failure's message)."""
        return self.command('squeue', '-h', '-t', 'all', '-o', '%i|%j|%T|%r|%N').stdout.strip()

    def node_states(self) -> dict[str, str]:
        result = self.command('sinfo', '-h', '-N', '-o', '%N %t')
        states = {}
        for line in result.stdout.splitlines():
            name, _sep, state = line.partition(' ')
            states[name] = state.strip()
        return states

    def _spawn(self, name: str, *args: str) -> None:
        log = self.root / 'log' / f'{name}.out'
        with log.open('ab') as out:
            self.processes[name] = subprocess.Popen(
                list(args), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **self.env},
            )  # fmt: skip
        self.logs[name] = log

    def start_controller(self) -> None:
        self._spawn('slurmctld', 'slurmctld', '-D', '-f', str(self.conf))
        wait_for(self._controller_answers, 20, 0.05, 'slurmctld to answer' + self._tail('slurmctld'))

    def _controller_answers(self) -> bool:
        self._check_alive('slurmctld')
        return self.command('scontrol', 'ping').returncode == 0 and 'UP' in self.command('scontrol', 'ping').stdout

    def stop_controller(self) -> None:
        """slurmctld only (its nodes and their jobs go on): the cluster is unreachable meanwhile."""
        self._end('slurmctld')

    def _check_alive(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is not None:
            tail = self._tail(name)
            raise AssertionError(f'Slurm could not start here: {name} exited with {process.returncode}{tail}')

    def _tail(self, name: str = '') -> str:
        """The end of each daemon's log (all of them, or those whose file names ``name``)."""
        texts = []
        for log in sorted((self.root / 'log').glob('*')):
            if name in log.name:
                texts.append(f'\n--- {log.name}:\n' + log.read_text(errors='replace')[-2000:])
        return ''.join(texts)

    def log_tails(self) -> str:
        """For a failed test's report: the cluster's folder goes with the session."""
        return self._tail()

    def _end(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            end_group(process)

    def cancel_all(self) -> None:
        """Cancel every job left in the cluster and wait until none runs (tests end their own;
        this is the safety net)."""
        if 'slurmctld' not in self.processes:
            return
        self.command('scancel', '--full', '-u', 'root')
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not self.command('squeue', '-h', '-o', '%i').stdout.strip(), 20, 0.1, 'jobs to end')

    def stop(self) -> None:
        self.cancel_all()
        for name in ('slurmctld', *NODES, 'munged'):
            self._end(name)
        # A job's slurmstepd is no child of ours (slurmd daemonizes it); one that outlived its
        # slurmd still holds a file of this cluster's folder open: that is how it is found.
        for process in psutil.process_iter(['name']):
            if (process.info['name'] or '').startswith('slurmstepd') and self._holds_our_files(process):
                with contextlib.suppress(psutil.Error):
                    process.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def _holds_our_files(self, process: psutil.Process) -> bool:
        try:
            return any(Path(f.path).is_relative_to(self.root) for f in process.open_files())
        except psutil.Error:
            return False


def require_tools() -> None:
    missing = [tool for tool in TOOLS if not shutil.which(tool, path=SBIN_PATH)]
    assert not missing, (
        f'Slurm could not start here: {missing} not installed '
        '(apt-get install -y slurm-wlm munge; container/install-deps.sh --test does it)'
    )


def start(root: Path) -> SlurmCluster:
    """Start the cluster under ``root``; returns once every node is idle."""
    require_tools()
    for sub in ('log', 'state', 'spool', 'run', 'gpus', 'munge'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # munged: the socket's folders must be world-executable
    munge_socket = root / 'munge' / 'munge.sock'
    ctld_port = free_port()
    cluster = SlurmCluster(root, root / 'slurm.conf', munge_socket, ctld_port)
    try:
        _write_config(cluster)
        _start_munge(cluster)
        cluster.start_controller()
        for node in NODES:
            cluster._spawn(node, 'slurmd', '-D', '-f', str(cluster.conf), '-N', node)
        wait_for(lambda: _nodes_idle(cluster), 30, 0.1, 'the Slurm nodes to be idle')
    except AssertionError as exc:
        logs = cluster._tail('slurm') + cluster._tail('munge')
        cluster.stop()
        raise AssertionError(f'Slurm could not start here: {exc}{logs}') from None
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _nodes_idle(cluster: SlurmCluster) -> bool:
    for node in NODES:
        cluster._check_alive(node)
    states = cluster.node_states()
    return all(states.get(node, '').startswith('idle') for node in NODES)


def _start_munge(cluster: SlurmCluster) -> None:
    key = cluster.root / 'munge' / 'munge.key'
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    munge = cluster.root / 'munge'
    munge.chmod(0o755)
    cluster._spawn(
        'munged', 'munged', '--foreground', '--force', f'--socket={cluster.munge_socket}', f'--key-file={key}',
        f'--pid-file={munge / "munged.pid"}', f'--log-file={cluster.root / "log" / "munged.log"}',
        f'--seed-file={munge / "munged.seed"}',
    )  # fmt: skip
    wait_for(lambda: _munge_ready(cluster), 10, 0.05, 'munged to make its socket' + cluster._tail('munge'))


def _munge_ready(cluster: SlurmCluster) -> bool:
    cluster._check_alive('munged')
    return cluster.munge_socket.exists()


def _write_config(cluster: SlurmCluster) -> None:
    root = cluster.root
    host = socket.gethostname()
    node_lines = []
    for node in NODES:
        gpus = root / 'gpus' / node
        gpus.mkdir(exist_ok=True)
        for index in range(GPUS_PER_NODE):
            device = gpus / f'nvidia{index}'
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(195, index))  # a character device
        node_lines.append(
            f'NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={free_port()} '
            f'CPUs=4 RealMemory=1000 Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN'
        )
    (root / 'gres.conf').write_text(
        'AutoDetect=off\n'
        + ''.join(
            f'NodeName={node} Name=gpu File={root / "gpus" / node}/nvidia[0-{GPUS_PER_NODE - 1}]\n' for node in NODES
        )
    )
    (root / 'cgroup.conf').write_text(
        'CgroupPlugin=cgroup/v1\nConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n'
    )
    (root / 'slurm.conf').write_text(
        '\n'.join(
            [
                'ClusterName=aikoretest',
                # Job ids name the jobs' cgroups, which every cluster on this machine shares: two
                # test runs at once must never number their jobs alike.
                f'FirstJobId={secrets.randbelow(50_000_000) + 1000}',
                f'SlurmctldHost={host}(127.0.0.1)',
                f'SlurmctldPort={cluster.ctld_port}',
                'AuthType=auth/munge',
                'CredType=cred/munge',
                f'AuthInfo=socket={cluster.munge_socket}',
                'SlurmUser=root',
                'SlurmdUser=root',
                f'StateSaveLocation={root / "state"}',
                f'SlurmdSpoolDir={root / "spool"}/%n',
                f'SlurmctldPidFile={root / "run" / "slurmctld.pid"}',
                f'SlurmdPidFile={root / "run" / "slurmd-%n.pid"}',
                f'SlurmctldLogFile={root / "log" / "slurmctld.log"}',
                f'SlurmdLogFile={root / "log" / "slurmd-%n.log"}',
                'ProctrackType=proctrack/cgroup',
                'TaskPlugin=task/none',
                'SelectType=select/cons_tres',
                'SelectTypeParameters=CR_Core',
                'GresTypes=gpu',
                'AccountingStorageType=accounting_storage/none',
                'JobCompType=jobcomp/filetxt',
                f'JobCompLoc={root / "log" / "jobcomp.txt"}',
                'ReturnToService=2',
                'SchedulerType=sched/backfill',
                'SchedulerParameters=sched_interval=1',
                'MinJobAge=300',
                'KillWait=2',
                'MpiDefault=none',
                'SlurmdTimeout=300',
                'SlurmctldTimeout=300',
                'InactiveLimit=0',
                'SlurmdParameters=config_overrides',  # 4 CPUs per node whatever this machine has
                *node_lines,
                f'PartitionName=gpu Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP',
                '',
            ]
        )
    )
