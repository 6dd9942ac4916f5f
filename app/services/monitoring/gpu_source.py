"""Where GPU figures come from: a small ``GpuSource`` protocol and its NVML implementation.

The monitor and the create validation read GPUs only through a ``GpuSource``, so tests (and
a future non-NVIDIA backend) can hand the panel another one at the service boundary
(``Core.open(settings, gpu_source=...)``). Every method is blocking: call them off the
event loop.

No driver, no library, no GPU: ``nvmlInit()`` raises ``pynvml.NVMLError``; that is a normal
machine, not a fault, so it is said once at INFO level and the source answers "no GPU"
(``count() is None``, ``read() == []``) from then on without trying again.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar('T')


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process holding memory on a GPU, as the driver reports it (host PIDs)."""

    pid: int
    used_memory: int | None  # bytes; None when the driver cannot tell


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one moment. A figure the GPU does not report (fan on a passively
    cooled card, power on some boards) is None."""

    index: int
    name: str
    uuid: str = ''
    utilization: float | None = None  # % of time a kernel ran
    memory_used: int | None = None  # bytes
    memory_total: int | None = None  # bytes
    temperature: float | None = None  # °C
    power: float | None = None  # W drawn now
    power_limit: float | None = None  # W enforced limit
    fan: float | None = None  # % of the maximum speed
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)


class GpuSource(Protocol):
    def count(self) -> int | None:
        """How many GPUs there are; None when there is no usable driver or GPU."""
        ...

    def read(self) -> list[GpuReading]:
        """The figures of every GPU now (``[]`` without GPUs)."""
        ...

    def close(self) -> None:
        """Release the driver; a later call may open it again."""
        ...


class NvmlSource:
    """GPUs through NVML (``pynvml`` from nvidia-ml-py). Thread-safe; opened on first use,
    device handles and names kept while open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._available: bool | None = None  # None: not tried yet (or closed)
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._static: list[tuple[str, str]] = []  # (name, uuid) per GPU
        self._memory_v2 = True  # until the driver says it has no nvmlDeviceGetMemoryInfo_v2

    def count(self) -> int | None:
        with self._lock:
            return len(self._handles) if self._open() else None

    def read(self) -> list[GpuReading]:
        with self._lock:
            if not self._open():
                return []
            return [self._read_one(index, handle) for index, handle in enumerate(self._handles)]

    def close(self) -> None:
        with self._lock:
            if self._available:
                _quiet(self._nvml, self._nvml.nvmlShutdown)
                self._available = None
                self._handles, self._static = [], []

    # ------------------------------------------------------------------ internals (lock held)

    def _open(self) -> bool:
        if self._available is None:
            self._available = self._init()
        return self._available

    def _init(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # pynvml.NVMLError (no driver/library/GPU) or no pynvml at all
            log.info('No NVIDIA GPU detected (%s): GPU monitoring is off', exc or type(exc).__name__)
            return False
        self._nvml = pynvml
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)]
        except pynvml.NVMLError as exc:
            log.warning('NVML started but cannot list the GPUs (%s): GPU monitoring is off', exc)
            _quiet(pynvml, pynvml.nvmlShutdown)
            self._handles = []
            return False
        self._static = [self._identity(index, handle) for index, handle in enumerate(self._handles)]
        log.info('NVML: %d GPU(s): %s', count, ', '.join(name for name, _ in self._static) or 'none')
        return True

    def _identity(self, index: int, handle: Any) -> tuple[str, str]:
        nvml = self._nvml
        name = _text(_quiet(nvml, nvml.nvmlDeviceGetName, handle)) or f'GPU {index}'
        return name, _text(_quiet(nvml, nvml.nvmlDeviceGetUUID, handle))

    def _read_one(self, index: int, handle: Any) -> GpuReading:
        nvml = self._nvml
        utilization = _quiet(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = self._memory(handle)
        power = _quiet(nvml, nvml.nvmlDeviceGetPowerUsage, handle)  # mW
        limit = _quiet(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)  # mW
        name, uuid = self._static[index]
        return GpuReading(
            index=index,
            name=name,
            uuid=uuid,
            utilization=float(utilization.gpu) if utilization is not None else None,
            memory_used=int(memory.used) if memory is not None else None,
            memory_total=int(memory.total) if memory is not None else None,
            temperature=_float(_quiet(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)),
            power=power / 1000.0 if power is not None else None,
            power_limit=limit / 1000.0 if limit is not None else None,
            fan=_float(_quiet(nvml, nvml.nvmlDeviceGetFanSpeed, handle)),
            processes=self._processes(handle),
        )

    def _memory(self, handle: Any) -> Any:
        """Memory info; v2 where the driver has it, whose ``used`` leaves out the memory the
        driver reserves for itself, as nvidia-smi does (v1 counts it as used)."""
        nvml = self._nvml
        version = getattr(nvml, 'nvmlMemory_v2', None)
        if self._memory_v2 and version is not None:
            info = _quiet(nvml, nvml.nvmlDeviceGetMemoryInfo, handle, version)
            if info is not None:
                return info
            self._memory_v2 = False
        return _quiet(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...]:
        """Compute and graphics processes, one entry per PID (a C+G process is in both lists)."""
        nvml = self._nvml
        found: dict[int, int | None] = {}
        for query in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
            for process in _quiet(nvml, query, handle) or ():
                used = process.usedGpuMemory
                previous = found.get(process.pid)
                found[process.pid] = max(used, previous) if used is not None and previous is not None else used
        return tuple(GpuProcess(pid, used) for pid, used in found.items())


@functools.cache
def default_source() -> NvmlSource:
    """The panel's one NVML source (NVML is opened once per process, on first use), so create
    validation and the GPU charts always agree on the GPUs there are."""
    return NvmlSource()


def detected_gpu_count() -> int | None:
    """How many NVIDIA GPUs this machine has (None: no driver / no GPU)."""
    return default_source().count()


def _quiet(nvml: Any, call: Callable[..., T], *args: Any) -> T | None:
    """The call's answer, or None when NVML says no (not supported on this GPU, lost GPU…)."""
    try:
        return call(*args)
    except nvml.NVMLError:
        return None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors='replace')
    return str(value) if value is not None else ''


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
