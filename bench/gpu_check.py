"""``python -m bench.gpu_check``: check the monitor against a real NVIDIA GPU.

1. Takes a sample with the panel's own sampler (real NVML source) and compares each GPU's
   figures with ``nvidia-smi --query-gpu=...``.
2. Starts a child process tree (bash -> python) that allocates VRAM with torch, gives the
   sampler the tree's leader as an "instance", and checks the VRAM attributed to it against
   what ``nvidia-smi --query-compute-apps`` reports for the allocating PID. Skipped, with a
   message, when torch (with CUDA) is not importable.

Prints a small report; exits 0 when every check passed, 1 otherwise, and 0 with
"no NVIDIA GPU" on a machine without one. Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from app.services.monitoring.gpu_source import NvmlSource
from app.services.monitoring.sampler import GpuStats, RunningInstance, Sample, SystemSampler

MIB = 2**20
ALLOCATE_MIB = 1024
QUERY = 'index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw'
# How far a figure may move between our reading and nvidia-smi's, a few ms later.
TOLERANCE = {'utilization': 25.0, 'memory_used_mib': 256.0, 'temperature': 3.0, 'power': 30.0}

ALLOCATOR = f"""
import sys, torch
block = torch.empty({ALLOCATE_MIB} * 2**20, dtype=torch.uint8, device='cuda')
torch.cuda.synchronize()
print('allocated', flush=True)
sys.stdin.read()
"""


@dataclass
class Report:
    lines: list[str]
    failures: int = 0

    def check(self, ok: bool, text: str) -> None:
        self.lines.append(f'  [{"ok" if ok else "FAIL"}] {text}')
        self.failures += not ok

    def say(self, text: str) -> None:
        self.lines.append(text)


def nvidia_smi(*args: str) -> list[list[str]]:
    output = subprocess.run(
        ['nvidia-smi', *args, '--format=csv,noheader,nounits'], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return [[cell.strip() for cell in line.split(',')] for line in output.splitlines() if line.strip()]


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # '[N/A]', '[Not Supported]'


def compare_gpus(sample: Sample, report: Report) -> None:
    rows = {int(row[0]): row for row in nvidia_smi(f'--query-gpu={QUERY}')}
    report.check(len(rows) == len(sample.gpus), f'{len(sample.gpus)} GPU(s) sampled, nvidia-smi lists {len(rows)}')
    for gpu in sample.gpus:
        row = rows.get(gpu.index)
        if row is None:
            report.check(False, f'GPU {gpu.index} missing from nvidia-smi')
            continue
        compare_one(gpu, row, report)


def compare_one(gpu: GpuStats, row: list[str], report: Report) -> None:
    r = gpu.reading
    _, name, utilization, used, total, temperature, power = row
    report.say(f'GPU {r.index}: {r.name}')
    report.check(r.name == name, f'name: sampler {r.name!r}, nvidia-smi {name!r}')
    ours_total = (r.memory_total or 0) / MIB
    report.check(abs(ours_total - (number(total) or -1)) <= 1, f'memory total: {ours_total:.0f} MiB vs {total} MiB')
    pairs = (
        ('utilization', r.utilization, number(utilization), '%'),
        ('memory_used_mib', (r.memory_used or 0) / MIB if r.memory_used is not None else None, number(used), 'MiB'),
        ('temperature', r.temperature, number(temperature), '°C'),
        ('power', r.power, number(power), 'W'),
    )
    for key, ours, theirs, unit in pairs:
        if ours is None or theirs is None:
            report.check(ours is None and theirs is None, f'{key}: sampler {ours}, nvidia-smi {theirs} (not reported)')
            continue
        ok = abs(ours - theirs) <= TOLERANCE[key]
        report.check(ok, f'{key}: sampler {ours:.1f} {unit}, nvidia-smi {theirs:.1f} {unit} (±{TOLERANCE[key]:g})')


@contextlib.contextmanager
def allocating_tree() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """bash (session leader, the "runner") -> python holding ALLOCATE_MIB of VRAM."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / 'allocate.py'
        script.write_text(ALLOCATOR)
        leader = subprocess.Popen(
            ['bash', '-c', f'{sys.executable} {script}; true'],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert leader.stdout is not None
            line = leader.stdout.readline()
            if 'allocated' not in line:
                raise RuntimeError(f'the allocating child did not allocate (said {line!r})')
            yield leader, psutil.Process(leader.pid).children()[0].pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader.pid, signal.SIGKILL)
            leader.wait(10)


def check_attribution(sampler: SystemSampler, report: Report) -> None:
    try:
        import torch

        usable = bool(torch.cuda.is_available())
    except ImportError:
        usable = False
    if not usable:
        report.say('Per-process attribution: SKIPPED (torch with CUDA is not importable here)')
        return
    report.say(f'Per-process attribution: a child tree allocates {ALLOCATE_MIB} MiB with torch')
    with allocating_tree() as (leader, allocator):
        time.sleep(0.5)  # let the driver's process accounting catch up
        sample = sampler.sample({1: RunningInstance(leader.pid, 'gpu-check')}, 1.0)
        apps = {int(row[0]): number(row[1]) for row in nvidia_smi('--query-compute-apps=pid,used_memory')}
    stats = sample.instances.get(1)
    ours = (stats.gpu_memory if stats else 0) / MIB
    theirs = apps.get(allocator)
    report.check(allocator in attributed_pids(sample), 'the allocating PID is given to the instance')
    report.check(ours >= ALLOCATE_MIB, f'instance VRAM {ours:.0f} MiB >= the {ALLOCATE_MIB} MiB allocated')
    if theirs is None:
        hint = "in a container without the host's PID namespace, NVML reports host PIDs"
        report.check(False, f'nvidia-smi lists no compute app with PID {allocator} ({hint})')
    else:
        report.check(abs(ours - theirs) <= 1, f'instance VRAM {ours:.0f} MiB vs nvidia-smi {theirs:.0f} MiB for PID')


def attributed_pids(sample: Sample) -> set[int]:
    """GPU processes the sampler gave to instance 1."""
    return {p.pid for gpu in sample.gpus for p in gpu.reading.processes if gpu.owners.get(p.pid) == 1}


def main() -> int:
    source = NvmlSource()
    count = source.count()
    if not count or shutil.which('nvidia-smi') is None:
        print('no NVIDIA GPU (NVML found none, or nvidia-smi is missing): nothing to check')
        return 0
    report = Report(lines=[])
    try:
        sampler = SystemSampler(Path.cwd(), source)
        began = time.perf_counter()
        sample = sampler.sample({}, 1.0)
        report.say(f'Sampler: {count} GPU(s), one sample took {(time.perf_counter() - began) * 1000:.1f} ms')
        compare_gpus(sample, report)
        check_attribution(sampler, report)
    finally:
        source.close()
    print('\n'.join(report.lines))
    print(f'\n{"all checks passed" if not report.failures else f"{report.failures} check(s) FAILED"}')
    return 1 if report.failures else 0


if __name__ == '__main__':
    sys.exit(main())
