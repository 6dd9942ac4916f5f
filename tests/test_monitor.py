"""The monitor (issue 4): samples, per-instance attribution, history, interval, /metrics.

How these tests reach the panel: the fake GPU source must be handed to the services, so
the panel's services run in the test process — ``Core.open(settings, gpu_source=fake)``,
``await core.startup()`` — and the requests go through the real ASGI application of
``app.main`` (NiceGUI app: session gate, the /api mount with its token middleware, the
/metrics route) with ``httpx.ASGITransport``; no production code learns about fakes. The
instances are real processes started by the real supervisor, and the fake GPUs report
PIDs of their real process trees. The no-GPU path runs a real panel subprocess on this
GPU-less machine with the real NVML source.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import ConfigError, Settings
from app.main import app as panel_app  # the whole application: pages' gate, /api mount, /metrics
from app.services import core as core_module
from app.services.core import Core
from app.services.monitoring.gpu_source import GpuProcess, GpuReading
from app.services.monitoring.monitor import Monitor
from app.services.monitoring.process_usage import TreeTracker, TreeUsage
from app.services.monitoring.sampler import SystemSampler
from tests.helpers import Panel, blueprint, free_port, kill_processes_under, wait_for

T = TypeVar('T')
TOKEN = 'monitor-test-token'
GIB = 2**30
MIB = 2**20
PYTHON = sys.executable
SERVER = (
    f"{PYTHON} -u -c \"import http.server as h, os; h.ThreadingHTTPServer(('127.0.0.1', int(os.environ['WEBUI_PORT'])),"
    ' h.SimpleHTTPRequestHandler).serve_forever()"'
)
# runner -> python (bash exec'd into it) -> sleep: VRAM held by a grandchild still counts.
SERVE_SCRIPT = blueprint(f'sleep 600 &\nexec {SERVER}', name='MonServe')
BURN_SCRIPT = blueprint(f'exec {PYTHON} -c "while True: pass"', ready='none', name='MonBurn')


class FakeGpuSource:
    """Three GPUs whose process lists the test sets; read from the sampler's thread (the
    test swaps whole tuples, so a reader never sees half an update)."""

    SPECS = (('Fake RTX 4090', 24 * GIB, 450.0), ('Fake A100', 80 * GIB, 400.0), ('Fake L4', 24 * GIB, 72.0))

    def __init__(self) -> None:
        self.processes: dict[int, tuple[GpuProcess, ...]] = {}
        self.closed = 0

    def count(self) -> int | None:
        return len(self.SPECS)

    def read(self) -> list[GpuReading]:
        readings = []
        for index, (name, total, limit) in enumerate(self.SPECS):
            processes = self.processes.get(index, ())
            readings.append(
                GpuReading(
                    index=index,
                    name=name,
                    uuid=f'GPU-fake-{index}',
                    utilization=10.0 * (index + 1),
                    memory_used=100 * MIB + sum(p.used_memory or 0 for p in processes),
                    memory_total=total,
                    temperature=40.0 + index,
                    power=50.0 + index,
                    power_limit=limit,
                    fan=None if index == 1 else 30.0,  # a passively cooled card reports no fan
                    processes=processes,
                )
            )
        return readings

    def close(self) -> None:
        self.closed += 1


async def eventually(condition: Callable[[], Awaitable[T | None]], timeout: float = 15.0, what: str = '') -> T:
    """Poll an async ``condition`` until it answers something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what or condition}')
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def panel_in_process(data_dir: Path, source: FakeGpuSource) -> AsyncIterator[tuple[Core, httpx.AsyncClient]]:
    """The panel's services in this process with the fake GPUs; a client on the whole app."""
    low = free_port()
    settings = Settings(
        data_dir=data_dir,
        port=free_port(),
        port_range=(low, low + 9) if low + 9 <= 65535 else (40001, 40010),
        api_token=TOKEN,
        stop_on_exit=True,
        stop_grace=2.0,
        monitor_interval=0.25,
    )
    core = await asyncio.to_thread(Core.open, settings, source)
    core_module.set_current(core)
    try:
        await core.startup()
        transport = httpx.ASGITransport(app=panel_app)
        headers = {'Authorization': f'Bearer {TOKEN}'}
        async with httpx.AsyncClient(transport=transport, base_url='http://panel', headers=headers) as client:
            yield core, client
    finally:
        await core.shutdown()
        core_module.set_current(None)
        kill_processes_under(data_dir)


async def start_instance(client: httpx.AsyncClient, name: str, blueprint_name: str, gpu_ids: list[int]) -> int:
    created = await client.post('/api/instances', json={'name': name, 'blueprint': blueprint_name, 'gpu_ids': gpu_ids})
    assert created.status_code == 201, created.text
    instance_id = int(created.json()['id'])
    assert (await client.post(f'/api/instances/{instance_id}/start')).status_code == 202

    async def started() -> bool:
        return (await client.get(f'/api/instances/{instance_id}')).json()['status'] == 'started'

    await eventually(started, 20, f'{name} to be started')
    return instance_id


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get('/api/system/stats')
    assert response.status_code == 200, response.text
    return response.json()


def only_child(pid: int) -> psutil.Process:
    return wait_for(lambda: psutil.Process(pid).children(), 10, what=f'a child of {pid}')[0]


def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_fake_gpus_attributed_to_instance_trees(tmp_path: Path) -> None:
    source = FakeGpuSource()
    async with panel_in_process(tmp_path / 'data', source) as (core, client):
        for name, script in (('MonServe', SERVE_SCRIPT), ('MonBurn', BURN_SCRIPT)):
            assert (await client.put(f'/api/blueprints/{name}', content=script.encode())).status_code == 201

        # Create validation counts the GPUs of the same source: 3 fake GPUs, ids 0-2.
        refused = await client.post('/api/instances', json={'name': 'too-far', 'blueprint': 'MonServe', 'gpu_ids': [3]})
        assert refused.status_code == 422 and '3 GPU(s) detected' in refused.json()['detail']

        serve_id = await start_instance(client, 'serve-a', 'MonServe', [0, 2])
        burn_id = await start_instance(client, 'burn-b', 'MonBurn', [1])
        running = core.supervisor.running_pids()
        serve_app = only_child(running[serve_id])
        sleeper = only_child(serve_app.pid)  # the grandchild
        burn_app = only_child(running[burn_id])
        source.processes = {
            0: (GpuProcess(sleeper.pid, GIB),),
            1: (
                GpuProcess(burn_app.pid, 512 * MIB),
                GpuProcess(os.getpid(), 100 * MIB),
            ),  # the test itself: no instance
            2: (GpuProcess(serve_app.pid, 256 * MIB),),
        }

        async def attributed() -> dict[str, Any] | None:
            current = await stats(client)
            instances = current['instances']
            burning = instances.get(str(burn_id), {}).get('cpu_percent', 0)
            if str(serve_id) in instances and instances[str(serve_id)]['gpu_memory'] and burning > 30:
                return current
            return None

        current = await eventually(attributed, 20, 'VRAM and CPU attributed to the instances')
        check_gpus(current['gpus'], serve_id, burn_id, sleeper.pid, os.getpid())
        check_instances(current['instances'], serve_id, burn_id, running)
        await check_metrics(client, serve_id, burn_id)

        # A stopped instance leaves the figures.
        assert (await client.post(f'/api/instances/{burn_id}/stop')).status_code == 202

        async def burn_gone() -> bool:
            return str(burn_id) not in (await stats(client))['instances']

        await eventually(burn_gone, 20, 'the stopped instance to leave the stats')
    assert source.closed == 1  # the monitor released the source at shutdown


def check_gpus(gpus: list[dict[str, Any]], serve_id: int, burn_id: int, sleeper: int, foreign: int) -> None:
    assert [g['name'] for g in gpus] == ['Fake RTX 4090', 'Fake A100', 'Fake L4']
    assert [g['index'] for g in gpus] == [0, 1, 2]
    assert [g['memory_total'] for g in gpus] == [24 * GIB, 80 * GIB, 24 * GIB]
    assert [g['memory_used'] for g in gpus] == [100 * MIB + GIB, 100 * MIB + 612 * MIB, 100 * MIB + 256 * MIB]
    assert gpus[0]['memory_free'] == 24 * GIB - 100 * MIB - GIB
    assert [(g['utilization'], g['temperature'], g['power']) for g in gpus] == [
        (10.0, 40.0, 50.0), (20.0, 41.0, 51.0), (30.0, 42.0, 52.0)
    ]  # fmt: skip
    assert gpus[1]['power_limit'] == 400.0 and gpus[1]['fan'] is None and gpus[0]['fan'] == 30.0
    assert gpus[0]['processes'] == [{'pid': sleeper, 'used_memory': GIB, 'instance_id': serve_id}]
    owners = {p['pid']: p['instance_id'] for p in gpus[1]['processes']}
    assert owners[foreign] is None and set(owners.values()) == {None, burn_id}


def check_instances(instances: dict[str, Any], serve_id: int, burn_id: int, running: dict[int, int]) -> None:
    serve, burn = instances[str(serve_id)], instances[str(burn_id)]
    assert serve['name'] == 'serve-a' and burn['name'] == 'burn-b'
    assert serve['pid'] == running[serve_id] and burn['pid'] == running[burn_id]
    assert serve['gpu_memory'] == GIB + 256 * MIB
    assert serve['gpu_memory_by_gpu'] == {'0': GIB, '2': 256 * MIB}
    assert burn['gpu_memory'] == 512 * MIB and burn['gpu_memory_by_gpu'] == {'1': 512 * MIB}
    assert serve['processes'] >= 3  # runner, python, sleep
    assert serve['memory_rss'] > 10 * MIB and burn['memory_rss'] > 5 * MIB  # two Python interpreters at least
    assert burn['cpu_percent'] > 30 and serve['cpu_percent'] >= 0


async def check_metrics(client: httpx.AsyncClient, serve_id: int, burn_id: int) -> None:
    response = await client.get('/metrics')
    assert response.status_code == 200, response.text
    assert response.headers['content-type'].startswith('text/plain')
    text = response.text
    vram = metric_samples(text, 'aikore_instance_gpu_memory_bytes')
    assert vram[(('instance', 'serve-a'), ('instance_id', str(serve_id)))] == GIB + 256 * MIB
    assert vram[(('instance', 'burn-b'), ('instance_id', str(burn_id)))] == 512 * MIB
    per_gpu = metric_samples(text, 'aikore_instance_gpu_memory_by_gpu_bytes')
    assert per_gpu[(('gpu', '2'), ('instance', 'serve-a'), ('instance_id', str(serve_id)))] == 256 * MIB
    totals = metric_samples(text, 'aikore_gpu_memory_total_bytes')
    assert totals == {
        (('gpu', '0'), ('name', 'Fake RTX 4090')): 24 * GIB,
        (('gpu', '1'), ('name', 'Fake A100')): 80 * GIB,
        (('gpu', '2'), ('name', 'Fake L4')): 24 * GIB,
    }
    assert set(metric_samples(text, 'aikore_gpu_fan_percent')) == {
        (('gpu', '0'), ('name', 'Fake RTX 4090')), (('gpu', '2'), ('name', 'Fake L4'))
    }  # fmt: skip
    assert metric_samples(text, 'aikore_gpus') == {(): 3.0}
    rss = metric_samples(text, 'aikore_instance_memory_rss_bytes')
    assert rss[(('instance', 'serve-a'), ('instance_id', str(serve_id)))] > 0
    assert metric_samples(text, 'aikore_network_receive_bytes_total')  # a counter
    # The same token rule as the API: none, a wrong one -> 401; ?token= works too.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=panel_app), base_url='http://panel') as anonymous:
        assert (await anonymous.get('/metrics')).status_code == 401
        assert (await anonymous.get('/metrics', headers={'Authorization': 'Bearer nope'})).status_code == 401
        assert (await anonymous.get('/metrics', params={'token': 'nope'})).status_code == 401
        assert (await anonymous.get('/metrics', params={'token': TOKEN})).status_code == 200


async def test_history_and_interval(tmp_path: Path) -> None:
    async with panel_in_process(tmp_path / 'data', FakeGpuSource()) as (core, client):

        async def history(**params: float) -> list[dict[str, Any]]:
            response = await client.get('/api/system/history', params=params)
            assert response.status_code == 200, response.text
            return response.json()

        first = await eventually(lambda: _at_least(history(), 2), 10, 'two samples')
        grown = await eventually(lambda: _at_least(history(), len(first) + 3), 10, 'more samples')
        times = [sample['timestamp'] for sample in grown]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert grown[-1]['gpus'][0]['name'] == 'Fake RTX 4090' and grown[0]['interval'] == 0.25
        recent = await history(seconds=0.6)
        assert 1 <= len(recent) < len(await history()), 'seconds=0.6 must leave out the older samples'
        assert all(sample['timestamp'] >= time.time() - 1.6 for sample in recent)
        for bad in ('0', '-1', 'abc', '1e9'):
            assert (await client.get('/api/system/history', params={'seconds': bad})).status_code == 422

        assert (await client.get('/api/system/interval')).json() == {'interval': 0.25}
        for bad_body in ({'interval': 0.1}, {'interval': 10.5}, {'interval': 'fast'}, {'interval': None}, {}):
            refused = await client.put('/api/system/interval', json=bad_body)
            assert refused.status_code == 422, (bad_body, refused.text)
        assert (await client.put('/api/system/interval', json={'interval': 0.5})).json() == {'interval': 0.5}
        assert core.monitor.interval == 0.5

        async def slow_samples() -> list[dict[str, Any]] | None:
            samples = [s for s in await history() if s['interval'] == 0.5]
            return samples if len(samples) >= 4 else None

        slow = await eventually(slow_samples, 10, 'samples at the new interval')
        gaps = [b['timestamp'] - a['timestamp'] for a, b in itertools.pairwise(slow)]
        assert min(gaps) >= 0.45, gaps
        assert (await client.put('/api/system/interval', json={'interval': 2})).json() == {'interval': 2.0}


async def _at_least(pending: Awaitable[list[dict[str, Any]]], count: int) -> list[dict[str, Any]] | None:
    samples = await pending
    return samples if len(samples) >= count else None


def test_no_gpu_on_this_machine_and_metrics_route(tmp_path: Path) -> None:
    """The real NVML source on a machine without driver: no GPU, no error, one info line;
    /metrics is served by the real panel and needs the token."""
    panel = Panel(tmp_path / 'data', AIKORE_STOP_ON_EXIT='1').start()
    try:
        stats = wait_for(lambda: _ready_stats(panel), 15, what='the stats')
        assert stats['gpus'] == [] and stats['instances'] == {}
        assert 0 <= stats['cpu']['percent'] <= 100 and len(stats['cpu']['per_core']) == psutil.cpu_count()
        assert stats['memory']['total'] == psutil.virtual_memory().total and stats['disk']['total'] > 0
        assert httpx.get(f'{panel.url}/metrics', timeout=10).status_code == 401
        scraped = httpx.get(f'{panel.url}/metrics', headers={'Authorization': f'Bearer {panel.token}'}, timeout=10)
        assert scraped.status_code == 200
        assert metric_samples(scraped.text, 'aikore_gpus') == {(): 0.0}
        assert metric_samples(scraped.text, 'aikore_gpu_memory_used_bytes') == {}
    finally:
        panel.stop()
    log = panel.log_text()
    assert ' ERROR ' not in log and 'Traceback' not in log, log
    assert log.count('No NVIDIA GPU detected') == 1, log


def _ready_stats(panel: Panel) -> dict[str, Any] | None:
    response = panel.client.get('/system/stats')
    return response.json() if response.status_code == 200 else None


def test_monitor_interval_setting() -> None:
    assert Settings.from_env({}).monitor_interval == 1.0
    assert Settings.from_env({'AIKORE_MONITOR_INTERVAL': '2.5'}).monitor_interval == 2.5
    for bad in ('0.1', '11', 'nan', 'inf', 'fast'):
        with pytest.raises(ConfigError, match='AIKORE_MONITOR_INTERVAL'):
            Settings.from_env({'AIKORE_MONITOR_INTERVAL': bad})


class BrokenSource(FakeGpuSource):
    def read(self) -> list[GpuReading]:
        raise RuntimeError('driver fell over')


def test_failing_gpu_source_costs_only_the_gpu_figures(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sampler = SystemSampler(tmp_path, BrokenSource())
    with caplog.at_level(logging.INFO):
        samples = [sampler.sample({}, 1.0) for _ in range(3)]
    assert all(sample.gpus == () and sample.memory.total > 0 for sample in samples)
    assert sum('Reading the GPUs failed' in record.message for record in caplog.records) == 1  # said once


def test_tree_cpu_counts_children_that_ended_between_samples(tmp_path: Path) -> None:
    """A child that burns CPU and is reaped between two samples still counts (cutime)."""
    done = tmp_path / 'done'
    burn = f'{PYTHON} -c "import time; end = time.process_time() + 0.4\nwhile time.process_time() < end: pass"'
    script = f'sleep 0.3; {burn}; touch {done}; exec sleep 60'
    leader = subprocess.Popen(['bash', '-c', script], start_new_session=True)
    try:
        tracker = TreeTracker()
        first = tracker.measure({1: leader.pid})[1]
        assert first.cpu_percent == 0.0 and leader.pid in first.pids
        wait_for(done.exists, 15, what='the child to burn and end')
        second = tracker.measure({1: leader.pid})[1]
        assert second.cpu_percent >= 10.0, second
        assert tracker.measure({}) == {}
    finally:
        leader.kill()
        leader.wait(5)


def test_tree_follows_new_and_daemonised_processes(tmp_path: Path) -> None:
    """Processes forked after the first sample join the tree at the next one, also a
    daemonised one (its parent exited, it stays in the instance's session)."""
    go, spawned = tmp_path / 'go', tmp_path / 'spawned'
    script = f'while [ ! -e {go} ]; do sleep 0.02; done; (sleep 300 &); touch {spawned}; exec sleep 301'
    leader = subprocess.Popen(['bash', '-c', script], start_new_session=True)
    try:
        tracker = TreeTracker()
        first = tracker.measure({7: leader.pid})[7]
        go.touch()
        wait_for(spawned.exists, 10, what='the daemonised child')

        def orphan() -> int | None:
            for process in psutil.process_iter(['ppid']):
                with contextlib.suppress(psutil.Error):
                    outside = process.pid != leader.pid and process.info['ppid'] != leader.pid
                    if outside and os.getsid(process.pid) == leader.pid:
                        return process.pid
            return None

        daemon = wait_for(orphan, 10, what='a session member outside the parent chain')

        def with_daemon() -> TreeUsage | None:
            usage = tracker.measure({7: leader.pid})[7]
            return usage if daemon in usage.pids else None

        second = wait_for(with_daemon, 10, what='the daemon in the tree')
        assert daemon not in first.pids and psutil.Process(daemon).ppid() not in second.pids
        assert second.memory_rss > 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, 9)
        leader.wait(5)


class NoRuns:
    def running_pids(self) -> dict[int, int]:
        return {}

    def running_names(self) -> dict[int, str]:
        return {}


async def test_history_ring_keeps_the_newest_samples_and_publishes_each(tmp_path: Path) -> None:
    monitor = Monitor(NoRuns(), FakeGpuSource(), tmp_path, interval=1.0, history_samples=5)
    seen: list[object] = []
    monitor.events.subscribe(seen.append)
    taken = [await monitor.sample_now() for _ in range(7)]
    assert [id(s) for s in monitor.history()] == [id(s) for s in taken[-5:]]
    assert seen == taken and monitor.latest is taken[-1]
    assert json.loads(await monitor.history_json()) == [s.to_json() for s in taken[-5:]]
    assert monitor.latest is not None and monitor.latest.freest_gpu() == 1  # the 80 GiB card
