"""The benchmarks. Each takes the run's Context and answers one or more Results."""

from __future__ import annotations

import contextlib
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.helpers import REPO, Panel, free_port
from tests.netkit import auth

from .container import container
from .core import (
    BURST_APP,
    PYTHON,
    READY_APP,
    BenchError,
    Context,
    HealthSampler,
    Result,
    create,
    median,
    percentile,
    poll,
    post,
    put_blueprint,
    wait_status,
)
from .dashboard import dashboard, dashboards_open
from .desktop import desktop
from .log_flood import log_flood
from .proxy import proxy
from .slurm import slurm

TWENTY = 20


# ---------------------------------------------------------------------------- 1. ready -> started


def ready_started(ctx: Context) -> list[Result]:
    """Median of (status first seen ``started`` through GET, polled every 5 ms) minus (the wall
    clock time the app began listening, written by the app itself). Each run sleeps a different
    0.3-1.5 s first, so the readiness probe is in its backoff when the app comes up."""
    runs = 4 if ctx.quick else 10
    app = ctx.write_app('ready_app.py', READY_APP)
    panel = ctx.panel('ready')
    put_blueprint(panel, 'BenchReady', f'exec {PYTHON} -u {app}')
    instance_id = create(panel, 'ready', 'BenchReady')
    folder = panel.data_dir / 'instances' / 'ready'
    rng = random.Random(2024_11_21)
    lags, app_times, delays = [], [], []
    for _ in range(runs):
        delay = round(rng.uniform(0.3, 1.5), 3)
        (folder / 'delay').write_text(str(delay))
        (folder / 'listening').unlink(missing_ok=True)
        posted = time.time()
        post(panel, f'/instances/{instance_id}/start')
        _, seen = wait_status(panel, instance_id, 'started', timeout=30, interval=0.005)
        listening = float((folder / 'listening').read_text())
        lags.append(seen - listening)
        app_times.append(listening - posted)
        delays.append(delay)
        post(panel, f'/instances/{instance_id}/stop')
        wait_status(panel, instance_id, 'stopped', interval=0.02)
    ctx.stop_panel(panel)
    return [
        Result(
            key='ready_started',
            label='ready -> "started" in API (median)',
            unit='s',
            value=median(lags),
            target=0.100,
            target_text='<= 100 ms',
            original='0.96 s',
            baseline=median(app_times),
            baseline_label='app start->answer',
            note=f'max {max(lags) * 1000:.0f} ms, n={runs}',
            samples=lags,
            extra={'app_start_to_answer_s': app_times, 'delays_s': delays, 'poll_interval_s': 0.005},
        )
    ]


# ---------------------------------------------------------------------------- 2. crash -> error


def crash_detect(ctx: Context) -> list[Result]:
    """kill -9 the app process (the runner's child) of a started instance; time until GET shows
    ``error`` (polled every 5 ms)."""
    runs = 4 if ctx.quick else 10
    app = ctx.write_app('server_app.py', READY_APP)  # no delay file: serves at once
    panel = ctx.panel('crash')
    put_blueprint(panel, 'BenchServer', f'exec {PYTHON} -u {app}')
    instance_id = create(panel, 'crash', 'BenchServer')
    times, exit_codes, round_trips = [], [], []
    for _ in range(runs):
        post(panel, f'/instances/{instance_id}/start')
        started, _ = wait_status(panel, instance_id, 'started', timeout=30, interval=0.01)
        runner = psutil.Process(started['pid'])
        apps = [child for child in runner.children() if str(app) in ' '.join(child.cmdline())]
        if len(apps) != 1:
            raise BenchError(f'expected one app process under runner {runner.pid}, found {apps}')
        killed = time.perf_counter()
        apps[0].send_signal(signal.SIGKILL)

        def errored() -> dict[str, Any] | None:
            began = time.perf_counter()
            current = panel.client.get(f'/instances/{instance_id}').json()
            round_trips.append(time.perf_counter() - began)
            return current if current['status'] == 'error' else None

        final = poll(errored, 10, 0.005, 'status error after kill -9')
        times.append(time.perf_counter() - killed)
        exit_codes.append(final['exit_code'])
    ctx.stop_panel(panel)
    codes_ok = all(code == 128 + signal.SIGKILL for code in exit_codes)
    return [
        Result(
            key='crash_detect',
            label='kill -9 -> "error" in API (median)',
            unit='s',
            value=median(times),
            target=0.500,
            target_text='<= 500 ms',
            original='never detected',
            baseline=median(round_trips),
            baseline_label='one GET round trip',
            note=f'max {max(times) * 1000:.0f} ms, n={runs}' + ('' if codes_ok else f', exit codes {exit_codes}'),
            checks_ok=codes_ok,
            samples=times,
            extra={'exit_codes': exit_codes, 'get_round_trip_median_s': median(round_trips)},
        )
    ]


# ---------------------------------------------------------------------------- 3. 20 starts + 5. idle


def _twenty(ctx: Context) -> tuple[Panel, list[int]]:
    """The panel with 20 Demo-like instances (created, stopped), shared by start20 and idle_cpu."""
    if 'twenty' not in ctx.shared:
        panel = ctx.panel('twenty')
        try:
            put_blueprint(panel, 'BenchDemo', f'exec {PYTHON} -m http.server --bind 127.0.0.1 "$WEBUI_PORT"')
            ids = [create(panel, f'demo-{index:02d}', 'BenchDemo') for index in range(TWENTY)]
        except BaseException:
            ctx.stop_panel(panel)
            raise
        ctx.shared['twenty'] = (panel, ids)
    return ctx.shared['twenty']


def _statuses(panel: Panel) -> dict[int, str]:
    return {item['id']: item['status'] for item in panel.client.get('/instances').json()}


def _start_all(panel: Panel, ids: list[int], parallel: bool) -> dict[str, float]:
    """Start the instances; time until the list shows every one ``started`` (polled every 10 ms)."""
    began = time.perf_counter()
    if parallel:
        with ThreadPoolExecutor(len(ids)) as pool:
            list(pool.map(lambda i: post(panel, f'/instances/{i}/start'), ids))
    else:
        for instance_id in ids:
            post(panel, f'/instances/{instance_id}/start')
    posted = time.perf_counter() - began

    def all_started() -> bool:
        statuses = _statuses(panel)
        bad = [i for i in ids if statuses[i] in {'error', 'stopped'}]
        if bad:
            raise BenchError(f'instances {bad} ended while starting')
        return all(statuses[i] == 'started' for i in ids)

    poll(all_started, 60, 0.01, 'all 20 instances started')
    return {'all_started_s': time.perf_counter() - began, 'start_calls_s': posted}


def _stop_all(panel: Panel, ids: list[int]) -> None:
    for instance_id in ids:
        post(panel, f'/instances/{instance_id}/stop')
    poll(lambda: all(s == 'stopped' for s in _statuses(panel).values()), 60, 0.05, 'all stopped')


def _direct_twenty() -> float:
    """Baseline: the same 20 ``python3 -m http.server`` spawned with Popen, until all answer."""
    ports = set()
    while len(ports) < TWENTY:
        ports.add(free_port())
    folder = Path(REPO)  # served folder is irrelevant; nothing is written
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with httpx.Client(timeout=1) as client:
            began = time.perf_counter()
            for port in ports:
                processes.append(
                    subprocess.Popen(
                        [PYTHON, '-m', 'http.server', '--bind', '127.0.0.1', str(port)],
                        cwd=folder,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
            waiting = set(ports)

            def answered() -> bool:
                for port in list(waiting):
                    with contextlib.suppress(httpx.HTTPError):
                        client.get(f'http://127.0.0.1:{port}/')
                        waiting.discard(port)
                return not waiting

            poll(answered, 30, 0.005, 'the 20 direct servers to answer')
            return time.perf_counter() - began
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def start20(ctx: Context) -> list[Result]:
    """20 instances created first, then 20 POST /start back to back, either sequentially from one
    client or from 20 threads at once; time from the first call until GET /instances (polled every
    10 ms) shows all 20 ``started``. Median of 3 runs of each (1 in --quick), alternating; the
    baseline spawns the same 20 servers directly, alternating with them too."""
    panel, ids = _twenty(ctx)
    repeats = 1 if ctx.quick else 3
    direct: list[float] = []
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for repeat in range(repeats):
        direct.append(_direct_twenty())
        for parallel in (False, True):
            runs[parallel].append(_start_all(panel, ids, parallel=parallel))
            if repeat < repeats - 1 or not parallel:
                _stop_all(panel, ids)
    ctx.shared['twenty_running'] = True  # left running for idle_cpu
    baseline = median(direct)
    results = []
    for key, label, parallel in (
        ('start20_sequential', '20 starts, sequential POSTs -> all started', False),
        ('start20_parallel', '20 starts, 20 parallel POSTs -> all started', True),
    ):
        totals = [run['all_started_s'] for run in runs[parallel]]
        calls = [run['start_calls_s'] for run in runs[parallel]]
        results.append(
            Result(
                key=key,
                label=label,
                unit='s',
                value=median(totals),
                target=1.0,
                target_text='<= 1.0 s',
                original='1.8 s',
                baseline=baseline,
                baseline_label='20 Popen direct',
                note=f'max {max(totals):.2f} s, n={repeats}; the 20 POSTs took {median(calls) * 1000:.0f} ms',
                samples=totals,
                extra={'start_calls_s': calls, 'direct_popen_s': direct},
            )
        )
    if not {'idle_cpu', 'monitor'} & set(ctx.shared.get('selected', ())):
        _stop_all(panel, ids)
        ctx.shared['twenty_running'] = False
    return results


# ---------------------------------------------------------------------------- 6. monitor sample cost


def _empty(ctx: Context) -> Panel:
    """A panel with no instance, shared by monitor and idle_cpu as their baseline."""
    if 'empty' not in ctx.shared:
        ctx.shared['empty'] = ctx.panel('empty')
    return ctx.shared['empty']


def _set_interval(panel: Panel, seconds: float) -> None:
    response = panel.client.put('/system/interval', json={'interval': seconds})
    if response.status_code != 200:
        raise BenchError(f'PUT /system/interval answered {response.status_code}: {response.text}')


def _sample_costs(panel: Panel, since: float, count: int, instances: int) -> list[float]:
    """``sample_seconds`` (the panel times each sample in its worker thread) of ``count``
    samples taken after ``since`` with ``instances`` instances in them."""

    def enough() -> list[float] | None:
        samples = [
            s for s in panel.client.get('/system/history').json()
            if s['timestamp'] > since and len(s['instances']) == instances
        ]  # fmt: skip
        return [s['sample_seconds'] for s in samples] if len(samples) >= count else None

    return poll(enough, 30 + count, 0.5, f'{count} samples with {instances} instances')


def _direct_sample_costs(panel: Panel, repeats: int) -> list[float]:
    """The same sampler class in this process, on the same 20 process trees, no panel around it."""
    from app.services.monitoring.gpu_source import default_source
    from app.services.monitoring.sampler import RunningInstance, SystemSampler

    running = {
        item['id']: RunningInstance(item['pid'], item['name'])
        for item in panel.client.get('/instances').json()
        if item['pid']
    }
    sampler = SystemSampler(panel.data_dir, default_source())
    costs = []
    for _ in range(repeats):
        began = time.perf_counter()
        sampler.sample(running, 1.0)
        costs.append(time.perf_counter() - began)
        time.sleep(0.01)
    return costs


def monitor(ctx: Context) -> list[Result]:
    """Cost of one monitor sample with 20 running instances (machine, GPUs, and each instance's
    process tree): the median of the panel's own ``sample_seconds`` over N samples taken at a
    0.25 s interval. Baseline: the same on a panel with no instance, sampled at the same time."""
    count = 20 if ctx.quick else 80
    panel, ids = _twenty(ctx)
    if not ctx.shared.get('twenty_running'):
        _start_all(panel, ids, parallel=False)
        ctx.shared['twenty_running'] = True
    empty = _empty(ctx)
    since = time.time()
    for target in (panel, empty):
        _set_interval(target, 0.25)
    try:
        costs = _sample_costs(panel, since, count, TWENTY)
        empty_costs = _sample_costs(empty, since, count, 0)
    finally:
        for target in (panel, empty):
            _set_interval(target, 1.0)
    direct = _direct_sample_costs(panel, 50 if ctx.quick else 200)
    gpus = len(panel.client.get('/system/stats').json()['gpus'])
    if 'idle_cpu' not in ctx.shared.get('selected', ()):
        _stop_all(panel, ids)
        ctx.shared['twenty_running'] = False
    return [
        Result(
            key='monitor_sample',
            label='one monitor sample, 20 instances (median)',
            unit='s',
            value=median(costs),
            target=0.005,
            target_text='<= 5 ms',
            original='-',
            baseline=median(empty_costs),
            baseline_label='0 instances',
            note=(
                f'p90 {percentile(costs, 0.9) * 1000:.1f} ms, n={len(costs)}, {gpus} GPU(s); '
                f'same sampler in-process {median(direct) * 1000:.1f} ms'
            ),
            samples=costs,
            extra={'empty_panel_costs_s': empty_costs, 'in_process_costs_s': direct, 'gpus': gpus},
        )
    ]


def idle_cpu(ctx: Context) -> list[Result]:
    """20 started instances, no client: the panel's CPU time over a window, as % of one core,
    with the monitor sampling at its default 1 s, then again at 10 s (close to no monitor).
    Baseline: a second panel with no instance, measured over the same window."""
    window = 10.0 if ctx.quick else 30.0
    panel, ids = _twenty(ctx)
    if not ctx.shared.get('twenty_running'):
        _start_all(panel, ids, parallel=False)
    empty = _empty(ctx)
    time.sleep(2.0)  # let both settle (startup work, closing of the start calls' connections)
    busy_process = psutil.Process(panel.process.pid if panel.process else 0)
    empty_process = psutil.Process(empty.process.pid if empty.process else 0)
    runners = [psutil.Process(item['pid']) for item in panel.client.get('/instances').json() if item['pid']]

    def cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def precise(process: psutil.Process) -> float:
        """CPU seconds from /proc/<pid>/task/*/schedstat (nanoseconds; cpu_times counts 10 ms ticks)."""
        total = 0
        for task in Path(f'/proc/{process.pid}/task').iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / 'schedstat').read_text().split()[0])
        return total / 1e9

    def tree_cpu() -> float:
        total = 0.0
        for runner in runners:
            with contextlib.suppress(psutil.Error):
                total += cpu(runner) + sum(cpu(child) for child in runner.children(recursive=True))
        return total

    def sample() -> tuple[float, ...]:
        return (
            time.perf_counter(), cpu(busy_process), cpu(empty_process), tree_cpu(),
            precise(busy_process), precise(empty_process),
        )  # fmt: skip

    def measure() -> tuple[float, ...]:
        before = sample()
        time.sleep(window)
        after = sample()
        elapsed = after[0] - before[0]
        return (elapsed, *((after[index] - before[index]) / elapsed * 100 for index in range(1, 6)))

    elapsed, busy_pct, empty_pct, instances_pct, busy_precise, empty_precise = measure()  # monitor at 1 s
    for target in (panel, empty):
        _set_interval(target, 10.0)
    slow = measure()  # the monitor at 10 s: close to the panel without it
    for target in (panel, empty):
        _set_interval(target, 1.0)
    rss = busy_process.memory_info().rss
    empty_rss = empty_process.memory_info().rss
    ctx.stop_panel(empty)
    ctx.shared.pop('empty', None)
    _stop_all(panel, ids)
    ctx.shared['twenty_running'] = False
    return [
        Result(
            key='idle_cpu',
            label=f'idle CPU, 20 instances, {window:.0f} s (panel, monitor at 1 s)',
            unit='%',
            value=busy_pct,
            target=0.5,
            target_text='<= 0.5 % core',
            original='0.17 %',
            baseline=empty_pct,
            baseline_label='panel, 0 instances',
            note=f'RSS {rss / 2**20:.0f} MiB; schedstat {busy_precise:.3f} % vs {empty_precise:.3f} % empty',
            samples=[busy_pct],
            extra={
                'window_s': elapsed,
                'panel_rss_bytes': rss,
                'empty_panel_rss_bytes': empty_rss,
                'empty_panel_cpu_pct': empty_pct,
                'panel_cpu_pct_schedstat': busy_precise,
                'empty_panel_cpu_pct_schedstat': empty_precise,
                'runners_and_apps_cpu_pct': instances_pct,
                'cpu_tick_resolution_pct': 1 / elapsed,
            },
        ),
        Result(
            key='idle_cpu_monitor_10s',
            label=f'idle CPU, 20 instances, {window:.0f} s (panel, monitor at 10 s)',
            unit='%',
            value=slow[1],
            target=0.5,
            target_text='<= 0.5 % core',
            original='0.17 %',
            baseline=busy_pct,
            baseline_label='monitor at 1 s',
            note=f'schedstat {slow[4]:.3f} % vs {busy_precise:.3f} % at 1 s; empty panel {slow[2]:.2f} %',
            samples=[slow[1]],
            extra={'window_s': slow[0], 'empty_panel_cpu_pct': slow[2], 'panel_cpu_pct_schedstat': slow[4]},
        ),
    ]


# ---------------------------------------------------------------------------- 4. log burst

LINE_RE = re.compile(rb'^line (\d+)$', re.MULTILINE)


def _count_lines(log_dir: Path, count: int) -> dict[str, Any]:
    seen: Counter[int] = Counter()
    files = sorted(log_dir.glob('output.log*'))
    for path in files:
        seen.update(int(match) for match in LINE_RE.findall(path.read_bytes()))
    missing = sum(1 for number in range(1, count + 1) if number not in seen)
    duplicated = sum(1 for times in seen.values() if times > 1)
    foreign = sum(1 for number in seen if not 1 <= number <= count)
    return {'files': len(files), 'distinct': len(seen), 'missing': missing, 'duplicated': duplicated,
            'out_of_range': foreign}  # fmt: skip


def _follow_logs(panel: Panel, instance_id: int, stop: threading.Event, seen: dict[str, int]) -> None:
    """What a dashboard tab does: read the log through the API from the last offset, again and
    again. Counts the lines it gets, the resets, and the silent jumps (a number that is not the
    previous + 1 although the answer did not say ``reset``)."""
    offset, partial, last = 0, '', 0
    with httpx.Client(base_url=panel.client.base_url, headers=panel.client.headers, timeout=30) as client:
        while not stop.is_set() or offset == 0:
            chunk = client.get(f'/instances/{instance_id}/logs', params={'offset': offset}).json()
            if chunk['reset']:
                seen['resets'] += 1
                partial = ''
            lines = (partial + chunk['text']).split('\n')
            partial = lines.pop()
            for line in lines:
                match = LINE_RE.match(line.encode())
                if match is None:
                    continue
                number = int(match.group(1))
                seen['lines'] += 1
                if number != last + 1:
                    seen['jumps_after_reset' if chunk['reset'] else 'silent_jumps'] += 1
                last = number
            offset = chunk['next_offset']
            if not chunk['text']:
                stop.wait(0.05)


def _burst(ctx: Context, panel: Panel, name: str, count: int, follow: bool) -> dict[str, Any]:
    instance_id = create(panel, name, 'BenchBurst')
    log_dir = panel.data_dir / 'instances' / name / 'logs'
    idle = HealthSampler(panel.url)
    idle.start()
    time.sleep(1.0 if ctx.quick else 2.0)
    idle_latencies = idle.finish()
    sampler = HealthSampler(panel.url)
    sampler.start()
    time.sleep(0.1)
    stop_follow = threading.Event()
    follow_seen = dict.fromkeys(('lines', 'resets', 'jumps_after_reset', 'silent_jumps'), 0)
    follower = None
    began = time.perf_counter()
    post(panel, f'/instances/{instance_id}/start')
    if follow:
        follower = threading.Thread(target=_follow_logs, args=(panel, instance_id, stop_follow, follow_seen))
        follower.start()

    def done() -> bool:
        path = log_dir / 'output.log'
        try:
            with path.open('rb') as handle:
                handle.seek(max(0, path.stat().st_size - 64))
                return b'burst done' in handle.read()
        except OSError:
            return False

    poll(done, 120, 0.02, 'the burst to end')
    burst_s = time.perf_counter() - began
    time.sleep(0.2)
    latencies = sampler.finish()
    stop_follow.set()
    if follower is not None:
        follower.join(30)
    counted = _count_lines(log_dir, count)
    post(panel, f'/instances/{instance_id}/stop')
    wait_status(panel, instance_id, 'stopped', interval=0.05)
    return {
        'max_latency_s': max(latencies),
        'p99_latency_s': percentile(latencies, 0.99),
        'median_latency_s': median(latencies),
        'samples': len(latencies),
        'failed_requests': sampler.failures,
        'idle_max_latency_s': max(idle_latencies),
        'idle_median_latency_s': median(idle_latencies),
        'burst_s': burst_s,
        'latencies_s': latencies,
        'follower': follow_seen if follow else None,
        **counted,
    }


def log_burst(ctx: Context) -> list[Result]:
    """An instance writes 200,000 numbered lines as fast as it can (one write() per line) while
    the log rotates every 256 KiB; every number must be in output.log + output.log.N exactly once.
    Meanwhile GET /api/health every 10 ms from outside measures the panel's event loop."""
    count = 200_000
    app = ctx.write_app('burst_app.py', BURST_APP)
    panel = ctx.panel('burst', AIKORE_LOG_MAX_BYTES=str(256 * 1024), AIKORE_LOG_BACKUPS='30')
    put_blueprint(panel, 'BenchBurst', f'exec {PYTHON} -u {app} {count}', ready='none')
    results = []
    for key, label, follow in (
        ('log_burst', 'log burst 200k lines: max /api/health latency', False),
        ('log_burst_follow', 'log burst + API log reader: max /api/health', True),
    ):
        run = _burst(ctx, panel, key.replace('_', '-'), count, follow)
        lines_ok = run['distinct'] == count and not run['missing'] and not run['duplicated']
        note = (
            f'{run["distinct"]}/{count} lines in {run["files"]} files, burst {run["burst_s"]:.2f} s, '
            f'{run["samples"]} samples'
        )
        if not lines_ok:
            note += f', {run["missing"]} missing, {run["duplicated"]} duplicated'
        if follow:
            seen = run['follower']
            note += (
                f'; API reader got {seen["lines"]} lines, {seen["resets"]} resets, {seen["silent_jumps"]} silent gaps'
            )
        results.append(
            Result(
                key=key,
                label=label,
                unit='s',
                value=run['max_latency_s'],
                target=0.100,
                target_text='<= 100 ms stall',
                original='-',
                baseline=run['idle_max_latency_s'],
                baseline_label='idle max',
                note=note,
                checks_ok=lines_ok,
                samples=run.pop('latencies_s'),
                extra=run,
            )
        )
    ctx.stop_panel(panel)
    return results


# ---------------------------------------------------------------------------- 6. cold start


def _time_to_health(ctx: Context, index: int) -> tuple[float, float]:
    panel = Panel(ctx.root / f'cold-{index}' / 'data', AIKORE_STOP_ON_EXIT='1')
    panel.data_dir.mkdir(parents=True)
    ctx.panels.append(panel)
    try:
        with panel.log_file.open('ab') as log, httpx.Client(timeout=1) as client:
            began = time.perf_counter()
            panel.process = subprocess.Popen(
                [sys.executable, '-m', 'app'], cwd=REPO, env=panel.env, stdout=log, stderr=subprocess.STDOUT
            )

            def healthy() -> bool:
                assert panel.process is not None
                if panel.process.poll() is not None:
                    raise BenchError(f'panel exited with {panel.process.returncode}: {panel.log_text()[-2000:]}')
                try:
                    return client.get(f'{panel.url}/api/health').status_code == 200
                except httpx.HTTPError:
                    return False

            poll(healthy, 60, 0.005, 'the panel to answer /api/health')
            health = time.perf_counter() - began
            headers = auth(panel)
            poll(
                lambda: client.get(f'{panel.url}/api/instances', headers=headers).status_code == 200,
                60,
                0.005,
                'GET /api/instances to answer 200',
            )
            return health, time.perf_counter() - began
    finally:
        ctx.stop_panel(panel)


def _time_import() -> float:
    """Spawn to 'imported' printed after ``import app.main`` (interpreter exit not counted)."""
    began = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, '-c', 'import app.main; print("imported", flush=True)'], cwd=REPO, stdout=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        elapsed = time.perf_counter() - began
        process.wait(30)
    if line.strip() != b'imported':
        raise BenchError(f'import app.main failed (exit {process.returncode})')
    return elapsed


def cold_start(ctx: Context) -> list[Result]:
    """``python -m app`` (fresh data dir each time) until the first 200 from /api/health.
    Baseline: ``python -c 'import app.main'``, i.e. the imports alone."""
    runs = 3 if ctx.quick else 5
    measured = [_time_to_health(ctx, index) for index in range(runs)]
    times = [health for health, _ in measured]
    api_times = [api for _, api in measured]
    imports = [_time_import() for _ in range(runs)]
    return [
        Result(
            key='cold_start',
            label='cold start -> first /api/health 200 (median)',
            unit='s',
            value=median(times),
            target=1.5,
            target_text='<= 1.5 s',
            original='1.0 s',
            baseline=median(imports),
            baseline_label="python -c 'import app.main'",
            note=f'max {max(times):.2f} s, n={runs}; first 200 of GET /api/instances {median(api_times):.2f} s',
            samples=times,
            extra={'import_app_main_s': imports, 'first_instances_200_s': api_times},
        )
    ]


BENCHMARKS: dict[str, Callable[[Context], list[Result]]] = {
    'cold_start': cold_start,
    'ready_started': ready_started,
    'crash_detect': crash_detect,
    'log_burst': log_burst,
    'start20': start20,
    'monitor': monitor,
    'idle_cpu': idle_cpu,
    'proxy': proxy,
    'dashboard': dashboard,
    'dashboards_open': dashboards_open,
    'container': container,
    'log_flood': log_flood,
    'desktop': desktop,
    'slurm': slurm,
}

# What a failed benchmark's row(s) show: (key, label, target, target_text, original, unit).
PLACEHOLDERS: dict[str, list[tuple[str, str, float, str, str, str]]] = {
    'slurm': [
        ('slurm_started', 'slurm: submit -> "started" (median)', 5.0, '<= 5 s', '-', 's'),
        ('slurm_poll_cpu', 'slurm: panel CPU, 20 Slurm instances', 5.0, '<= 5 % core', '-', '%'),
    ],
    'desktop': [
        ('desktop_first_frame', 'desktop: app ready -> first frame', 2.0, '<= 2 s', '-', 's'),
        ('desktop_idle_cpu', 'desktop: CPU, no viewer', 1.0, '<= 1 % core', '-', '%'),
        ('desktop_viewer_cpu', 'desktop: CPU, viewer on a static page', 3.0, '<= 3 % core', '-', '%'),
        ('desktop_rss', 'desktop: RSS of the unit', 1500, '<= 1500 MB', '-', 'MB'),
    ],
    'cold_start': [('cold_start', 'cold start -> first /api/health 200', 1.5, '<= 1.5 s', '1.0 s', 's')],
    'ready_started': [('ready_started', 'ready -> "started" in API', 0.1, '<= 100 ms', '0.96 s', 's')],
    'crash_detect': [('crash_detect', 'kill -9 -> "error" in API', 0.5, '<= 500 ms', 'never detected', 's')],
    'log_burst': [('log_burst', 'log burst 200k lines', 0.1, '<= 100 ms stall', '-', 's')],
    'start20': [('start20_sequential', '20 starts -> all started', 1.0, '<= 1.0 s', '1.8 s', 's')],
    'monitor': [('monitor_sample', 'one monitor sample, 20 instances', 0.005, '<= 5 ms', '-', 's')],
    'idle_cpu': [('idle_cpu', 'idle CPU, 20 instances', 0.5, '<= 0.5 % core', '0.17 %', '%')],
    'dashboard': [
        (f'{key}{"" if size == 50 else f"_{size}"}', f'{label}, {size} instances', target, text, '-', unit)
        for size, render in ((50, 0.5), (200, 1.0), (1000, 3.0))
        for key, label, target, text, unit in (
            ('dashboard_render', 'dashboard first render', render, f'<= {render:g} s', 's'),
            ('status_bytes', 'websocket bytes per status change', 2048, '< 2 KB', 'B'),
            ('status_visible', 'status change -> visible in browser', 0.3, '<= 300 ms', 's'),
        )
    ]
    + [('dashboard_errors', 'panel log: ERROR / "did not respond" lines', 0, '= 0', '-', 'lines')],
    'dashboards_open': [
        ('dashboards_cpu', 'panel CPU, 3 dashboards open', 3.0, '< 3 % core', '-', '%'),
        ('chart_bytes', 'websocket bytes per chart tick', 1024, '< 1 KB', '-', 'B'),
    ],
    'proxy': [
        ('throughput_socat', '200 MB download through socat', 0.5, '>= 50% of direct', '-', 'MB/s'),
        ('throughput_nginx', '200 MB download through nginx', 0.4, '>= 40% of direct', '-', 'MB/s'),
        ('latency_nginx', 'small GET, p99 added by nginx', 0.002, '<= 2 ms', '-', 's'),
        ('latency_socat', 'small GET, p99 added by socat', 0.002, '<= 2 ms', '-', 's'),
        ('latency_nginx_panel', 'small GET, p99 added by nginx+panel', 0.002, '<= 2 ms', '-', 's'),
    ],
    'log_flood': [
        ('log_flood_rss', 'log flood with a viewer: panel RSS above idle', 50, '<= +50 MB', '+797 MB', 'MB'),
        ('log_flood_health', 'log flood with a viewer: max /api/health', 0.1, '<= 100 ms', '633 ms', 's'),
    ],
    'container': [
        ('image_size', 'image size', 2000, '<= 2 GB (no target set: reported)', '-', 'MB'),
        ('container_start', 'container start -> /api/health 200', 10.0, '<= 10 s', '8 min first boot', 's'),
        ('container_stop', 'podman stop, Demo running', 5.0, '<= 5 s', '-', 's'),
    ],
}
