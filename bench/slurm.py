"""Submit -> ``started`` through Slurm vs a local start of the same app, interleaved in one run,
on the tests' real one-machine Slurm (``tests/slurm_kit.py``: two nodes, two fake GPUs each,
polled every 0.2 s); and the panel's CPU while it follows 20 Slurm instances (2 running, 18 queued)."""

from __future__ import annotations

import time

import psutil

from tests import slurm_kit
from tests.helpers import Panel

from .core import PYTHON, Context, Result, median, post, put_blueprint, wait_status

APP = (
    'import http.server, os; h = http.server; '
    "h.ThreadingHTTPServer(('127.0.0.1', int(os.environ['WEBUI_PORT'])), h.SimpleHTTPRequestHandler).serve_forever()"
)


def _started(panel: Panel, instance_id: int) -> float:
    began = time.monotonic()
    post(panel, f'/instances/{instance_id}/start')
    wait_status(panel, instance_id, 'started', timeout=60, interval=0.01)
    took = time.monotonic() - began
    post(panel, f'/instances/{instance_id}/stop')
    wait_status(panel, instance_id, 'stopped', timeout=30, interval=0.02)
    return took


def slurm(ctx: Context) -> list[Result]:
    runs = 3 if ctx.quick else 8
    cluster = slurm_kit.start(ctx.root / 'slurm')
    try:
        panel = ctx.panel('slurm', AIKORE_SLURM_CONF=str(cluster.conf), AIKORE_SLURM_POLL='0.2')
        put_blueprint(panel, 'BenchHttp', f'exec {PYTHON} -u -c "{APP}"')
        local = int(panel.create('loc', 'BenchHttp')['id'])
        job = int(panel.create('job', 'BenchHttp', executor='slurm', gpu_ids=[0])['id'])
        local_times, slurm_times = [], []
        for _ in range(runs):
            local_times.append(_started(panel, local))
            slurm_times.append(_started(panel, job))
        # 20 instances of two GPUs each: one runs on each node, the other 18 stay queued (Resources)
        ids = [int(panel.create(f'q{n}', 'BenchHttp', executor='slurm', gpu_ids=[0, 1])['id']) for n in range(20)]
        for instance_id in ids:
            post(panel, f'/instances/{instance_id}/start')
        assert panel.process is not None
        process = psutil.Process(panel.process.pid)
        process.cpu_percent()
        cpu_before, wall_before = sum(process.cpu_times()[:2]), time.monotonic()
        deadline = wall_before + (5 if ctx.quick else 15)
        while time.monotonic() < deadline:
            time.sleep(0.5)  # measuring over a time span, not waiting for a condition
        cpu = (sum(process.cpu_times()[:2]) - cpu_before) / (time.monotonic() - wall_before) * 100
        ctx.stop_panel(panel)
    finally:
        cluster.stop()
    return [
        Result(key='slurm_started', label='slurm: submit -> "started" (median)', unit='s',
               value=median(slurm_times), target=5.0, target_text='<= 5 s', original='-',
               baseline=median(local_times), baseline_label='local start -> started',
               note=f'n={runs}, poll 0.2 s', samples=slurm_times),
        Result(key='slurm_poll_cpu', label='slurm: panel CPU, 20 Slurm instances', unit='%', value=cpu,
               target=5.0, target_text='<= 5 % core', original='-', note='poll 0.2 s'),
    ]  # fmt: skip
