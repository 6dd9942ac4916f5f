"""The monitor: one sampler for the whole panel, its history, and its samples as events.

A task on the event loop takes a sample every ``interval`` seconds in a worker thread
(psutil, /proc and NVML calls block), keeps it in a ring buffer and publishes it on
``events``; pages subscribe there instead of polling, and the API reads ``latest`` and
``history``.

The ring holds 3600 samples: one hour at the default 1 s interval, 15 minutes at 0.25 s,
ten hours at 10 s; counting samples rather than seconds bounds its memory (about 14 KB a
sample with 64 cores and 20 instances: 50 MB). The API encodes a long
history in a worker thread, sample by sample (``history_json``): encoding an hour at once
on the event loop would stall it for up to half a second on a big machine.

The interval is one setting for everyone: changing it (``set_interval``) changes how often
the panel samples, at once; it starts from AIKORE_MONITOR_INTERVAL and is not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Protocol

from ...config import MONITOR_INTERVALS
from ..errors import InvalidInput
from ..events import EventBus
from .gpu_source import GpuSource
from .sampler import RunningInstance, Sample, SystemSampler

log = logging.getLogger(__name__)

MIN_INTERVAL, MAX_INTERVAL = MONITOR_INTERVALS
DEFAULT_INTERVAL = 1.0
HISTORY_SAMPLES = 3600


class RunSource(Protocol):
    """What the monitor needs of the supervisor: the instances running now."""

    def running_pids(self) -> dict[int, int]: ...

    def running_names(self) -> dict[int, str]: ...


def check_interval(value: float) -> float:
    """The interval as a float, or InvalidInput (422) outside 0.25-10 s."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f'The sampling interval must be a number of seconds, not {value!r}')
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise InvalidInput(f'The sampling interval must be between {MIN_INTERVAL} and {MAX_INTERVAL} s, not {value}')
    return float(value)


class Monitor:
    def __init__(
        self,
        runs: RunSource,
        gpu_source: GpuSource,
        disk_path: Path,
        interval: float = DEFAULT_INTERVAL,
        history_samples: int = HISTORY_SAMPLES,
    ) -> None:
        self.runs = runs
        self.gpu_source = gpu_source
        self.events: EventBus[Sample] = EventBus('samples')
        self._interval = check_interval(interval)
        self._sampler = SystemSampler(disk_path, gpu_source)
        self._history: deque[Sample] = deque(maxlen=history_samples)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failing = False

    # ------------------------------------------------------------------ reading

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def latest(self) -> Sample | None:
        return self._history[-1] if self._history else None

    async def current(self) -> Sample:
        """The latest sample; taken now when there is none yet (just after start)."""
        return self.latest or await self.sample_now()

    def history(self, seconds: float | None = None) -> list[Sample]:
        """The samples of the last ``seconds`` (all that are kept when None), oldest first."""
        if seconds is None:
            return list(self._history)
        cutoff = time.time() - seconds
        recent: list[Sample] = []
        for sample in reversed(self._history):
            if sample.timestamp < cutoff:
                break
            recent.append(sample)
        recent.reverse()
        return recent

    async def history_json(self, seconds: float | None = None) -> bytes:
        """``history`` as a JSON array in the API's shape, encoded off the event loop."""
        return await asyncio.to_thread(encode, self.history(seconds))

    # ------------------------------------------------------------------ control

    def set_interval(self, value: float) -> float:
        """Change the sampling interval for everyone, effective at once (0.25-10 s)."""
        self._interval = check_interval(value)
        self._wake.set()
        log.info('Monitor interval set to %.2f s', self._interval)
        return self._interval

    async def sample_now(self) -> Sample:
        """Take one sample now (off the event loop), keep it and publish it."""
        sample = await asyncio.to_thread(self._sampler.sample, self._running(), self._interval)
        self._history.append(sample)
        self.events.publish(sample)
        return sample

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name='aikore-monitor')
            log.info('Monitor sampling every %.2f s', self._interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.gpu_source.close)

    # ------------------------------------------------------------------ internals

    async def _loop(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self.sample_now()
                self._failing = False
            except Exception:
                if not self._failing:  # said once, not every second
                    log.exception('Taking a monitor sample failed')
                self._failing = True
            await self._sleep_until_due(began)

    async def _sleep_until_due(self, began: float) -> None:
        """Sleep until ``interval`` after ``began``; a new interval takes effect at once."""
        while (remaining := began + self._interval - time.monotonic()) > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    def _running(self) -> dict[int, RunningInstance]:
        """A snapshot taken on the event loop (the supervisor changes its runs there)."""
        names = self.runs.running_names()
        return {
            instance_id: RunningInstance(pid, names.get(instance_id, ''))
            for instance_id, pid in self.runs.running_pids().items()
        }


def encode(samples: list[Sample]) -> bytes:
    """A JSON array of samples; one sample at a time, so a long history encoded in a worker
    thread lets the event loop run in between (one big ``json.dumps`` would hold the GIL)."""
    return b'[' + b','.join(json.dumps(s.to_json(), separators=(',', ':')).encode() for s in samples) + b']'
