"""Shared tools of the benchmark suite: results, the run context (temp dirs, panels), polling,
small instance apps and the formatting of the table."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.helpers import Panel, blueprint

T = TypeVar('T')

# The real interpreter (not the venv link, not a pyenv shim): what instance apps run on.
PYTHON = os.path.realpath(sys.executable)


class BenchError(RuntimeError):
    """A benchmark could not measure what it wanted (timeout, unexpected status)."""


# ---------------------------------------------------------------------------- results


@dataclass
class Result:
    key: str  # stable machine name, e.g. 'ready_started'
    label: str  # the row's text in the table
    unit: str  # 's' (durations), '%' (share of one core), 'B', 'MB', 'MB/s', 'kbit/s' or 'lines' (a count)
    value: float | None
    target: float
    target_text: str
    original: str  # the original AiKore backend's figure, as text
    baseline: float | None = None
    baseline_label: str = ''
    note: str = ''  # shown after the measured value
    checks_ok: bool = True  # a correctness condition of the benchmark (e.g. no lost log line)
    higher_is_better: bool = False  # throughput-like figures: met when value >= target
    samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def met(self) -> bool:
        if self.error is not None or not self.checks_ok or self.value is None:
            return False
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def as_json(self) -> dict[str, Any]:
        return {
            'key': self.key,
            'label': self.label,
            'unit': self.unit,
            'value': self.value,
            'target': self.target,
            'met': self.met,
            'baseline': self.baseline,
            'baseline_label': self.baseline_label,
            'ratio': self.ratio,
            'original_aikore': self.original,
            'note': self.note,
            'checks_ok': self.checks_ok,
            'samples': self.samples,
            'extra': self.extra,
            'error': self.error,
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return 'n/a'
    if unit == '%':
        return f'{value:.2f} %'
    if unit == 'MB/s':
        return f'{value:.0f} MB/s'
    if unit == 'MB':
        return f'{value:.0f} MB'
    if unit == 'B':
        return f'{value:.0f} B'
    if unit == 'lines':
        return f'{value:.0f}'
    if unit == 'kbit/s':
        return f'{value:.0f} kbit/s'
    if value < 1.0:
        return f'{value * 1000:.1f} ms'
    return f'{value:.2f} s'


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# ---------------------------------------------------------------------------- polling


def poll(condition: Callable[[], T | None], timeout: float, interval: float, what: str) -> T:
    """Call ``condition`` every ``interval`` s (fixed cadence) until it returns something truthy."""
    deadline = time.perf_counter() + timeout
    next_at = time.perf_counter()
    while True:
        value = condition()
        if value:
            return value
        now = time.perf_counter()
        if now > deadline:
            raise BenchError(f'timed out after {timeout} s waiting for {what}')
        next_at = max(next_at + interval, now)
        time.sleep(max(0.0, next_at - now))


def instance_status(panel: Panel, instance_id: int) -> dict[str, Any]:
    response = panel.client.get(f'/instances/{instance_id}')
    if response.status_code != 200:
        raise BenchError(f'GET /instances/{instance_id} answered {response.status_code}: {response.text}')
    return response.json()


def wait_status(
    panel: Panel, instance_id: int, wanted: str, timeout: float = 30.0, interval: float = 0.005
) -> tuple[dict[str, Any], float]:
    """Poll GET /instances/{id} until ``status == wanted``; answers the instance and the wall-clock
    time (time.time()) at which the answer that showed it arrived. Any other final state fails."""
    final = {'stopped', 'error', 'started'} - {wanted}

    def reached() -> tuple[dict[str, Any], float] | None:
        current = instance_status(panel, instance_id)
        seen = time.time()
        if current['status'] == wanted:
            return current, seen
        if current['status'] in final and wanted != 'stopped':
            raise BenchError(f'instance {instance_id} is {current["status"]} while waiting for {wanted}')
        return None

    return poll(reached, timeout, interval, f'instance {instance_id} to be {wanted}')


def post(panel: Panel, path: str, expected: int = 202) -> dict[str, Any]:
    response = panel.client.post(path)
    if response.status_code != expected:
        raise BenchError(f'POST {path} answered {response.status_code}: {response.text}')
    return response.json()


class HealthSampler(threading.Thread):
    """GET /api/health every ``interval`` s from a thread; records each round-trip latency.

    This measures the panel's event loop from outside: a request waits while the loop is busy.
    """

    def __init__(self, url: str, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.url = f'{url}/api/health'
        self.interval = interval
        self.latencies: list[float] = []
        self.failures = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            next_at = time.perf_counter()
            while not self._stop_event.is_set():
                began = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                ended = time.perf_counter()
                if ok:
                    self.latencies.append(ended - began)
                else:
                    self.failures += 1
                next_at = max(next_at + self.interval, ended)
                self._stop_event.wait(max(0.0, next_at - ended))

    def finish(self) -> list[float]:
        self._stop_event.set()
        self.join(15)
        return self.latencies


# ---------------------------------------------------------------------------- run context


@dataclass
class Context:
    """One benchmark run: a temp root for data dirs and apps, the panels to stop at the end,
    and resources shared by benchmarks (the 20 started instances)."""

    quick: bool
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix='aikore-bench-')))
    panels: list[Panel] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)

    def panel(self, name: str, **env: str) -> Panel:
        """A started panel with its own data dir, port and token; it stops its instances on exit."""
        folder, counter = self.root / name, 2
        while folder.exists():
            folder, counter = self.root / f'{name}-{counter}', counter + 1
        panel = Panel(folder / 'data', AIKORE_STOP_ON_EXIT='1', **env)
        self.panels.append(panel)
        panel.start(timeout=60)
        # /api/health answers before the panel's services are up (503 'AiKore is starting' meanwhile)
        poll(lambda: panel.client.get('/instances').status_code == 200, 30, 0.01, 'the API to answer')
        return panel

    def stop_panel(self, panel: Panel) -> None:
        panel.stop()
        if panel in self.panels:
            self.panels.remove(panel)

    def write_app(self, name: str, source: str) -> Path:
        folder = self.root / 'apps'
        folder.mkdir(exist_ok=True)
        path = folder / name
        path.write_text(source)
        return path

    def close(self, keep: bool = False) -> None:
        for panel in list(self.panels):
            with contextlib.suppress(Exception):
                panel.stop()
        self.panels.clear()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def put_blueprint(panel: Panel, name: str, body: str, ready: str = 'http') -> None:
    panel.put_blueprint(name, blueprint(body, ready=ready, stall_timeout=120, name=name))


def create(panel: Panel, name: str, blueprint_name: str) -> int:
    return int(panel.create(name, blueprint_name)['id'])


# ---------------------------------------------------------------------------- instance apps

# Sleeps the delay written in $INSTANCE_DIR/delay, listens, writes time.time() into
# $INSTANCE_DIR/listening, then serves: the moment it "starts answering".
READY_APP = """\
import http.server, os, time
folder = os.environ['INSTANCE_DIR']
try:
    delay = float(open(os.path.join(folder, 'delay')).read())
except OSError:
    delay = 0.0
time.sleep(delay)
server = http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['WEBUI_PORT'])),
                                         http.server.SimpleHTTPRequestHandler)
with open(os.path.join(folder, 'listening.tmp'), 'w') as handle:
    handle.write(repr(time.time()))
os.replace(os.path.join(folder, 'listening.tmp'), os.path.join(folder, 'listening'))
server.serve_forever()
"""

# Writes ``line N`` for N in 1..count, one write() each (as fast as it can), then idles.
BURST_APP = """\
import os, sys, time
count = int(sys.argv[1])
write = sys.stdout.write
for number in range(1, count + 1):
    write(f'line {number}\\n')
write('burst done\\n')
sys.stdout.flush()
time.sleep(3600)
"""
