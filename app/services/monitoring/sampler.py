"""One sample of the machine: what it holds, and the (blocking) code that takes it.

Machine figures come from psutil, GPU figures from a ``GpuSource``, per-instance figures
from ``process_usage``; GPU processes are given to instances by PID (the instance's whole
tree). Rates (CPU %, network bytes/s) are changes since the previous sample of the same
``SystemSampler``; its counters are primed when it is built, so the first sample already
has a meaningful value.

Units: bytes, bytes per second, percent, °C, watts; ``timestamp`` is Unix time in seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from .gpu_source import GpuReading, GpuSource
from .process_usage import TreeTracker, TreeUsage

log = logging.getLogger(__name__)

# Interfaces whose traffic is counted elsewhere already (loopback, mirrors, bridges, container ends).
VIRTUAL_NICS = ('lo', 'ifb', 'veth', 'docker', 'br-', 'virbr', 'cni', 'flannel')


class RunningInstance(NamedTuple):
    pid: int  # the runner, leader of the instance's process tree
    name: str


@dataclass(frozen=True, slots=True)
class CpuStats:
    percent: float
    per_core: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class MemoryStats:
    total: int
    used: int  # total - available
    available: int
    percent: float


@dataclass(frozen=True, slots=True)
class SwapStats:
    total: int
    used: int
    percent: float


@dataclass(frozen=True, slots=True)
class DiskStats:
    path: str
    total: int
    used: int
    free: int
    percent: float


@dataclass(frozen=True, slots=True)
class NetStats:
    recv_rate: float  # bytes/s since the previous sample
    sent_rate: float
    bytes_recv: int  # counters since boot
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class GpuStats:
    reading: GpuReading
    owners: Mapping[int, int] = field(default_factory=dict)  # GPU process PID -> instance id

    @property
    def index(self) -> int:
        return self.reading.index

    @property
    def memory_free(self) -> int | None:
        total, used = self.reading.memory_total, self.reading.memory_used
        return total - used if total is not None and used is not None else None

    def to_json(self) -> dict[str, Any]:
        r = self.reading
        return {
            'index': r.index,
            'name': r.name,
            'uuid': r.uuid,
            'utilization': r.utilization,
            'memory_total': r.memory_total,
            'memory_used': r.memory_used,
            'memory_free': self.memory_free,
            'temperature': r.temperature,
            'power': r.power,
            'power_limit': r.power_limit,
            'fan': r.fan,
            'processes': [
                {'pid': p.pid, 'used_memory': p.used_memory, 'instance_id': self.owners.get(p.pid)} for p in r.processes
            ],
        }


@dataclass(frozen=True, slots=True)
class InstanceStats:
    instance_id: int
    name: str
    pid: int
    cpu_percent: float  # share of one core
    memory_rss: int
    gpu_memory: int  # bytes on all GPUs, summed over the tree's GPU processes
    gpu_memory_by_gpu: Mapping[int, int]  # GPU index -> bytes
    processes: int

    def to_json(self) -> dict[str, Any]:
        return {
            'name': self.name,
            'pid': self.pid,
            'cpu_percent': self.cpu_percent,
            'memory_rss': self.memory_rss,
            'gpu_memory': self.gpu_memory,
            'gpu_memory_by_gpu': {str(index): used for index, used in self.gpu_memory_by_gpu.items()},
            'processes': self.processes,
        }


@dataclass(frozen=True, slots=True)
class Sample:
    timestamp: float
    interval: float  # the sampling interval in force when it was taken
    duration: float  # seconds this sample took to collect
    cpu: CpuStats
    memory: MemoryStats
    swap: SwapStats
    disk: DiskStats
    net: NetStats
    gpus: tuple[GpuStats, ...]
    instances: Mapping[int, InstanceStats]

    def freest_gpu(self) -> int | None:
        """Index of the GPU with the most free memory (the create dialog's suggestion)."""
        known = [gpu for gpu in self.gpus if gpu.memory_free is not None]
        return max(known, key=lambda gpu: gpu.memory_free or 0).index if known else None

    def to_json(self) -> dict[str, Any]:
        """The API's shape (API.md "System"), with the extra fields."""
        return {
            'timestamp': self.timestamp,
            'interval': self.interval,
            'sample_seconds': self.duration,
            'cpu': {'percent': self.cpu.percent, 'per_core': list(self.cpu.per_core)},
            'memory': _fields(self.memory),
            'swap': _fields(self.swap),
            'disk': _fields(self.disk),
            'net': _fields(self.net),
            'gpus': [gpu.to_json() for gpu in self.gpus],
            'instances': {str(instance_id): stats.to_json() for instance_id, stats in self.instances.items()},
        }


def _fields(stats: Any) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in stats.__slots__}


class SystemSampler:
    """Takes samples (blocking; run it in a thread). One sample at a time: a lock guards the
    counters kept from one sample to the next."""

    def __init__(self, disk_path: Path, gpu_source: GpuSource) -> None:
        self.disk_path = disk_path
        self.gpu_source = gpu_source
        self._lock = threading.Lock()
        self._trees = TreeTracker()
        self._gpu_failing = False
        self._cpu_before = _core_times()
        self._net_before = (_net_counters(), time.monotonic())

    def sample(self, running: Mapping[int, RunningInstance], interval: float) -> Sample:
        with self._lock:
            began = time.perf_counter()
            timestamp = time.time()
            trees = self._trees.measure({instance_id: run.pid for instance_id, run in running.items()})
            owners = {pid: instance_id for instance_id, tree in trees.items() for pid in tree.pids}
            gpus = tuple(GpuStats(reading, _owners_on(reading, owners)) for reading in self._read_gpus())
            instances = _instance_stats(running, trees, gpus, owners)
            cpu, memory, swap, disk, net = self._cpu(), _memory(), _swap(), self._disk(), self._net()
            duration = round(time.perf_counter() - began, 6)
            return Sample(timestamp, interval, duration, cpu, memory, swap, disk, net, gpus, instances)

    def _read_gpus(self) -> list[GpuReading]:
        """A failing source costs the GPU figures of this sample, never the sample."""
        try:
            readings = self.gpu_source.read()
        except Exception:
            if not self._gpu_failing:
                log.exception('Reading the GPUs failed; GPU figures are left out until it works again')
            self._gpu_failing = True
            return []
        if self._gpu_failing:
            log.info('Reading the GPUs works again')
            self._gpu_failing = False
        return readings

    def _cpu(self) -> CpuStats:
        now = _core_times()
        per_core = []
        for (busy, total), (busy_before, total_before) in zip(now, self._cpu_before, strict=False):
            spent = total - total_before
            per_core.append(round(min(100.0, max(0.0, (busy - busy_before) / spent * 100)), 1) if spent > 0 else 0.0)
        self._cpu_before = now
        return CpuStats(round(sum(per_core) / len(per_core), 1) if per_core else 0.0, tuple(per_core))

    def _disk(self) -> DiskStats:
        try:
            usage = psutil.disk_usage(str(self.disk_path))
        except OSError:
            return DiskStats(str(self.disk_path), 0, 0, 0, 0.0)
        return DiskStats(str(self.disk_path), usage.total, usage.used, usage.free, usage.percent)

    def _net(self) -> NetStats:
        (recv, sent), at = _net_counters(), time.monotonic()
        (recv_before, sent_before), before = self._net_before
        self._net_before = ((recv, sent), at)
        elapsed = at - before
        if elapsed <= 0:
            return NetStats(0.0, 0.0, recv, sent)
        return NetStats(
            round(max(0, recv - recv_before) / elapsed, 1), round(max(0, sent - sent_before) / elapsed, 1), recv, sent
        )


def _instance_stats(
    running: Mapping[int, RunningInstance],
    trees: Mapping[int, TreeUsage],
    gpus: tuple[GpuStats, ...],
    owners: Mapping[int, int],
) -> dict[int, InstanceStats]:
    """Each instance's tree figures plus the GPU memory of its processes, per GPU."""
    by_gpu: defaultdict[int, dict[int, int]] = defaultdict(dict)
    for gpu in gpus:
        for process in gpu.reading.processes:
            owner = owners.get(process.pid)
            if owner is not None:
                by_gpu[owner][gpu.index] = by_gpu[owner].get(gpu.index, 0) + (process.used_memory or 0)
    return {
        instance_id: InstanceStats(
            instance_id=instance_id,
            name=running[instance_id].name,
            pid=tree.runner_pid,
            cpu_percent=tree.cpu_percent,
            memory_rss=tree.memory_rss,
            gpu_memory=sum(by_gpu[instance_id].values()),
            gpu_memory_by_gpu=dict(by_gpu[instance_id]),
            processes=len(tree.pids),
        )
        for instance_id, tree in trees.items()
    }


def _owners_on(reading: GpuReading, owners: Mapping[int, int]) -> dict[int, int]:
    return {p.pid: owners[p.pid] for p in reading.processes if p.pid in owners}


def _core_times() -> list[tuple[float, float]]:
    """(busy, total) CPU seconds per core since boot (guest time is already inside user time)."""
    found = []
    for times in psutil.cpu_times(percpu=True):
        total = sum(times) - getattr(times, 'guest', 0.0) - getattr(times, 'guest_nice', 0.0)
        idle = times.idle + getattr(times, 'iowait', 0.0)
        found.append((total - idle, total))
    return found


def _memory() -> MemoryStats:
    memory = psutil.virtual_memory()
    used = memory.total - memory.available
    return MemoryStats(
        memory.total, used, memory.available, round(used / memory.total * 100, 1) if memory.total else 0.0
    )


def _swap() -> SwapStats:
    swap = psutil.swap_memory()
    return SwapStats(swap.total, swap.used, swap.percent)


def _net_counters() -> tuple[int, int]:
    """Bytes received and sent since boot on the interfaces that carry real traffic."""
    recv = sent = 0
    for name, counters in psutil.net_io_counters(pernic=True).items():
        if not name.startswith(VIRTUAL_NICS):
            recv += counters.bytes_recv
            sent += counters.bytes_sent
    return recv, sent
