"""How many NVIDIA GPUs this machine has (None: no driver / no GPU), from the same NVML
source the monitor reads, so create validation and the GPU charts always agree."""

from __future__ import annotations

import functools

from .gpu_source import NvmlSource


@functools.cache
def default_source() -> NvmlSource:
    """The panel's one NVML source (NVML is opened once per process, on first use)."""
    return NvmlSource()


def detected_gpu_count() -> int | None:
    return default_source().count()
