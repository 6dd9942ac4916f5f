"""How many NVIDIA GPUs this machine has, as NVML sees them (None: no driver / no GPU)."""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)


@functools.cache
def detected_gpu_count() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError and friends: the "no GPU" case
        log.info('No NVIDIA GPU detected (%s)', type(exc).__name__)
        return None
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()
