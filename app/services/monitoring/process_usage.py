"""CPU, memory and processes of each running instance's whole process tree.

``/proc/<pid>/stat`` gives, for a process, its parent, session, CPU time and RSS: all the
attribution needs, in one read (psutil would rescan ``/proc`` for each
``children(recursive=True)`` and read each member's files again). Reading it for every
process of the machine at every sample is what a sample would mostly cost, so the parent
and session of the other processes are kept between samples (``ProcessIndex``): a sample
lists /proc, reads the processes it has not seen yet and the members of the trees, and
reads everything again once a minute.

An instance's tree is its runner (session and group leader), the runner's descendants,
and every process still in the runner's session (a daemonised grandchild whose parent
exited is reparented away from the tree but stays in the session).

CPU % of a tree is the change, since the previous sample, of the sum over its live members
of their own CPU time plus the CPU time of their children that ended and were reaped
(``cutime``/``cstime``): a short job that started and ended between two samples is still
counted, and no process is counted twice (a reaped child's time moves into its parent's
``cutime`` as the child leaves the table). It is a share of one core (200 = two cores busy).
RSS is the sum of the members' resident sets (pages shared between them count once each).
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
PAGE_SIZE = os.sysconf('SC_PAGE_SIZE')
PROC = '/proc'


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    session: int
    start: int  # clock ticks after boot: with the PID, identifies the process
    cpu_ticks: int  # utime + stime + cutime + cstime
    rss: int  # bytes


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """What one instance's process tree uses now."""

    runner_pid: int
    pids: frozenset[int]
    cpu_percent: float  # share of one core since the previous sample; 0.0 on the first one
    memory_rss: int  # bytes


def read_stat(pid: str) -> ProcStat | None:
    try:
        fd = os.open(f'{PROC}/{pid}/stat', os.O_RDONLY)
    except OSError:
        return None  # ended meanwhile
    try:
        data = os.read(fd, 1024)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = data[data.rfind(b')') + 2 :].split()
    if len(fields) < 22:
        return None
    # fields[0] is the state (field 3 of proc(5)): index = field number - 3
    return ProcStat(
        pid=int(pid),
        ppid=int(fields[1]),
        session=int(fields[3]),
        start=int(fields[19]),
        cpu_ticks=int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14]),
        rss=int(fields[21]) * PAGE_SIZE,
    )


def list_pids() -> set[int]:
    with os.scandir(PROC) as entries:
        return {int(entry.name) for entry in entries if entry.name.isdigit()}


Links = Mapping[int, tuple[int, int]]  # pid -> (parent pid, session id)


def family(links: Links, runner_pids: set[int]) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Children of every process, and the members of each runner's session."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    sessions: defaultdict[int, list[int]] = defaultdict(list)
    for pid, (parent, session) in links.items():
        children[parent].append(pid)
        if session in runner_pids:
            sessions[session].append(pid)
    return children, sessions


def tree_pids(children: Mapping[int, list[int]], sessions: Mapping[int, list[int]], runner_pid: int) -> set[int]:
    """The runner, its descendants and the members of its session."""
    found = {runner_pid, *sessions.get(runner_pid, ())}
    pending = list(found)
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


class ProcessIndex:
    """Parent and session of every process, kept from one sample to the next.

    Only a new process can join a tree (a fork), and members are read at every sample, so
    keeping the links of the other processes loses nothing; a PID reused between two
    samples could keep a stale link for one sample at most, and the full read every
    ``full_every`` seconds bounds any other drift.
    """

    def __init__(self, full_every: float = 60.0) -> None:
        self.full_every = full_every
        self._links: dict[int, tuple[int, int]] = {}
        self._full_at = -math.inf

    def clear(self) -> None:
        self._links.clear()
        self._full_at = -math.inf

    def read(self, runner_pids: set[int], members: set[int], now: float) -> dict[int, ProcStat]:
        """Fresh stats of every process in the trees of ``runner_pids`` (``members``: the last
        sample's members, read again first since they are the ones that change)."""
        alive = list_pids()
        if now - self._full_at >= self.full_every:
            self._full_at, wanted = now, alive
        else:
            wanted = (alive - self._links.keys()) | (members & alive) | (runner_pids & alive)
        fresh = self._read(wanted)
        self._links = {pid: link for pid, link in self._links.items() if pid in alive}
        self._links.update((stat.pid, (stat.ppid, stat.session)) for stat in fresh.values())
        children, sessions = family(self._links, runner_pids)
        in_trees = set().union(*(tree_pids(children, sessions, runner) for runner in runner_pids))
        fresh.update(self._read(in_trees - fresh.keys()))  # e.g. the tree of a runner started since
        return {pid: fresh[pid] for pid in in_trees if pid in fresh}

    @staticmethod
    def _read(pids: set[int]) -> dict[int, ProcStat]:
        found = {}
        for pid in pids:
            stat = read_stat(str(pid))
            if stat is not None:
                found[pid] = stat
        return found


class TreeTracker:
    """Measures the trees of the running instances, sample after sample (not thread-safe:
    one sampler calls it)."""

    def __init__(self) -> None:
        self._index = ProcessIndex()
        self._members: set[int] = set()
        # instance id -> ((runner pid, runner start), the tree's CPU ticks, monotonic time)
        self._previous: dict[int, tuple[tuple[int, int], int, float]] = {}

    def measure(self, runners: Mapping[int, int]) -> dict[int, TreeUsage]:
        """``runners``: {instance id: runner PID}. Instances whose runner is gone are left out."""
        if not runners:
            self._previous.clear()
            self._members.clear()
            self._index.clear()
            return {}
        now = time.monotonic()
        runner_pids = set(runners.values())
        table = self._index.read(runner_pids, self._members, now)
        children, sessions = family({pid: (stat.ppid, stat.session) for pid, stat in table.items()}, runner_pids)
        usage, current = {}, {}
        for instance_id, runner_pid in runners.items():
            runner = table.get(runner_pid)
            if runner is None:
                continue
            pids = frozenset(tree_pids(children, sessions, runner_pid) & table.keys())
            ticks = sum(table[pid].cpu_ticks for pid in pids)
            key = (runner_pid, runner.start)
            current[instance_id] = (key, ticks, now)
            usage[instance_id] = TreeUsage(
                runner_pid=runner_pid,
                pids=pids,
                cpu_percent=self._cpu_percent(instance_id, key, ticks, now),
                memory_rss=sum(table[pid].rss for pid in pids),
            )
        self._previous = current
        self._members = set(table)
        return usage

    def _cpu_percent(self, instance_id: int, key: tuple[int, int], ticks: int, now: float) -> float:
        previous = self._previous.get(instance_id)
        if previous is None or previous[0] != key or now <= previous[2]:
            return 0.0
        used = max(0, ticks - previous[1]) / CLOCK_TICKS
        return round(used / (now - previous[2]) * 100.0, 1)
