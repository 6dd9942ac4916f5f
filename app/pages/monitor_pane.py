"""The monitor pane: CPU, RAM and per-GPU charts that grow by appending points.

The figures are plain dicts; each new sample is appended in the browser with Plotly's
``extendTraces`` (never a full redraw), and the pane starts from the service's history so
charts survive a page reload. The + and - buttons change the sampling interval of the one
sampler, for everyone (every open page follows the samples it gets).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nicegui import Client, background_tasks, ui

from ..services.core import Core
from ..services.monitoring.sampler import GpuStats, Sample
from ..services.runtime.slurm import SlurmUnreachable

POINTS = 600  # points kept per trace in a chart (10 minutes at the default 1 s)
INTERVAL_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
GIB = 1024**3
SLURM_REFRESH = 5.0  # seconds between two looks at the cluster's nodes

log = logging.getLogger(__name__)


def chart(title: str, traces: list[dict[str, Any]], y_title: str, y_range: list[float] | None = None) -> dict[str, Any]:
    yaxis: dict[str, Any] = {'title': {'text': y_title}, 'gridcolor': '#333', 'zeroline': False}
    if y_range:
        yaxis['range'] = y_range
    return {
        'data': traces,
        'layout': {
            'title': {'text': title, 'font': {'size': 13}},
            'height': 190,
            'margin': {'l': 40, 'r': 10, 't': 28, 'b': 24},
            'paper_bgcolor': 'rgba(0,0,0,0)',
            'plot_bgcolor': 'rgba(0,0,0,0)',
            'font': {'color': '#9ca3af', 'size': 11},
            # Times only, a few and level: a date line or slanted labels ran into the legend in narrow panes.
            'xaxis': {'type': 'date', 'gridcolor': '#333', 'tickformat': '%H:%M:%S', 'nticks': 4, 'tickangle': 0},
            'yaxis': yaxis,
            'legend': {'orientation': 'h', 'y': -0.25},
            'showlegend': True,
        },
        'config': {'displayModeBar': False, 'responsive': True},
    }


def line(name: str, xs: list[float], ys: list[float | None]) -> dict[str, Any]:
    return {'type': 'scatter', 'mode': 'lines', 'name': name, 'x': xs, 'y': ys}


def when(sample: Sample) -> float:
    return round(sample.timestamp * 1000)  # Plotly date axes take epoch milliseconds


class Chart:
    """One Plotly chart whose traces are appended to, in the browser and in our copy."""

    def __init__(self, figure: dict[str, Any]) -> None:
        self.figure = figure
        self.plot = ui.plotly(figure).classes('w-full')
        self.live = False  # until plotly.js has loaded in the browser, points only go to our copy

    async def go_live(self) -> None:
        """Wait for plotly.js in the browser, then send the figure as it is now, once."""
        check = f'return typeof getElement({self.plot.id})?.Plotly !== "undefined"'
        for _ in range(100):
            try:
                if await self.plot.client.run_javascript(check, timeout=5):
                    break
            except TimeoutError:  # the browser left (or is busy): not an error of the panel
                log.info('Chart %s: no answer from the browser yet', self.plot.id)
            if self.plot.is_deleted or not self.plot.client.has_socket_connection:
                return
            await asyncio.sleep(0.1)
        self.plot.update()
        self.live = True

    def trace_names(self) -> list[str]:
        return [trace['name'] for trace in self.figure['data']]

    def add_trace(self, trace: dict[str, Any]) -> None:
        self.figure['data'].append(trace)
        if self.live:
            self.plot.run_plot_method('addTraces', trace)

    def extend(self, x: float, ys: list[float | None]) -> None:
        for trace, y in zip(self.figure['data'], ys, strict=True):
            trace['x'] = [*trace['x'][-(POINTS - 1) :], x]
            trace['y'] = [*trace['y'][-(POINTS - 1) :], y]
        if not self.live:
            return
        indexes = list(range(len(ys)))
        self.plot.run_plot_method('extendTraces', {'x': [[x]] * len(ys), 'y': [[y] for y in ys]}, indexes, POINTS)


class MonitorPane:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.gpu_charts: dict[int, Chart] = {}
        self.gpu_labels: dict[int, ui.label] = {}
        history = core.monitor.history()[-POINTS:]
        with ui.row().classes('items-center w-full gap-1'):
            ui.label('Monitor').classes('font-bold')
            ui.space()
            ui.button(icon='remove', on_click=lambda: self.step_interval(-1)).props('flat dense round size=sm').mark(
                'interval-down'
            )
            self.interval_label = ui.label().mark('monitor-interval')
            ui.button(icon='add', on_click=lambda: self.step_interval(+1)).props('flat dense round size=sm').mark(
                'interval-up'
            )
        self.interval_label.tooltip('Sampling interval, for everyone: − samples more often, + less often')
        self._show_interval(core.monitor.interval)
        xs = [when(s) for s in history]
        self.system = Chart(
            chart(
                'System',
                [
                    line('CPU %', xs, [s.cpu.percent for s in history]),
                    line('RAM %', xs, [s.memory.percent for s in history]),
                ],
                '%',
                [0, 100],
            )
        )
        self.system.plot.mark('system-chart')
        self.gpu_area = ui.column().classes('w-full gap-1')
        self.no_gpu = ui.label('No NVIDIA GPU detected').classes('opacity-70').mark('no-gpu')
        latest = history[-1] if history else core.monitor.latest
        self.no_gpu.set_visibility(latest is None or not latest.gpus)
        if latest is not None:
            for gpu in latest.gpus:
                self._add_gpu(gpu, history)
        if core.supervisor.slurm is not None:  # per-node GPU allocation, as Slurm reports it
            self.slurm_label = ui.label('Slurm: …').classes('text-sm whitespace-pre-line').mark('slurm-nodes')
            ui.timer(SLURM_REFRESH, self._show_slurm_nodes)
        unsubscribe = core.monitor.events.subscribe(self.add_sample)
        ui.context.client.on_delete(unsubscribe)
        background_tasks.create(self._go_live(ui.context.client), name='monitor charts')

    async def _show_slurm_nodes(self) -> None:
        slurm = self.core.supervisor.slurm
        assert slurm is not None
        try:
            nodes = await slurm.nodes()
        except SlurmUnreachable as exc:
            self.slurm_label.set_text(f'Slurm unreachable: {exc.detail}')
            return
        lines = [f'{n.name} ({n.state}): {n.gpus_used}/{n.gpus} GPUs allocated' + _jobs_text(n.jobs) for n in nodes]
        self.slurm_label.set_text('Slurm nodes\n' + '\n'.join(lines))

    async def _go_live(self, client: Client) -> None:
        await client.connected()
        for chart_ in [self.system, *self.gpu_charts.values()]:
            await chart_.go_live()

    def _add_gpu(self, gpu: GpuStats, history: list[Sample]) -> None:
        index = gpu.index
        points = [(when(s), next((g for g in s.gpus if g.index == index), None)) for s in history]
        xs = [x for x, _ in points]
        traces = [
            line('utilisation %', xs, [g.reading.utilization if g else None for _, g in points]),
            line('VRAM %', xs, [_vram_percent(g) for _, g in points]),
        ]
        with self.gpu_area:
            self.gpu_labels[index] = ui.label().classes('text-sm').mark(f'gpu-{index}')
            self.gpu_charts[index] = Chart(chart(f'GPU {index} · {gpu.reading.name}', traces, '%', [0, 100]))
        if self.system.live:  # a GPU that appeared later: its chart is new in the browser
            background_tasks.create(self.gpu_charts[index].go_live(), name='gpu chart')
        self._show_gpu_figures(gpu)

    def add_sample(self, sample: Sample) -> None:
        x = when(sample)
        self._show_interval(sample.interval)
        self.system.extend(x, [sample.cpu.percent, sample.memory.percent])
        self.no_gpu.set_visibility(not sample.gpus)
        for gpu in sample.gpus:
            if gpu.index not in self.gpu_charts:
                self._add_gpu(gpu, [])
            chart_ = self.gpu_charts[gpu.index]
            by_instance = self._vram_by_instance(sample, gpu.index)
            for name in by_instance:
                if f'VRAM · {name}' not in chart_.trace_names():
                    chart_.add_trace(line(f'VRAM · {name}', [], []))
            values: list[float | None] = [gpu.reading.utilization, _vram_percent(gpu)]
            for trace_name in chart_.trace_names()[2:]:
                values.append(by_instance.get(trace_name.removeprefix('VRAM · '), 0.0))
            chart_.extend(x, values)
            self._show_gpu_figures(gpu)

    def _vram_by_instance(self, sample: Sample, gpu_index: int) -> dict[str, float]:
        """% of this GPU's memory used by each instance (the legend where GPUs are shared)."""
        gpu = next(g for g in sample.gpus if g.index == gpu_index)
        total = gpu.reading.memory_total or 0
        shares = {}
        for stats in sample.instances.values():
            used = stats.gpu_memory_by_gpu.get(gpu_index, 0)
            if used and total:
                shares[stats.name] = round(100 * used / total, 1)
        return shares

    def _show_gpu_figures(self, gpu: GpuStats) -> None:
        r = gpu.reading
        parts = [f'GPU {r.index}']
        if r.temperature is not None:
            parts.append(f'{r.temperature:.0f} °C')
        if r.power is not None:
            parts.append(f'{r.power:.0f} W' + (f' / {r.power_limit:.0f} W' if r.power_limit else ''))
        if r.memory_used is not None and r.memory_total:
            parts.append(f'{r.memory_used / GIB:.1f} / {r.memory_total / GIB:.1f} GiB')
        text = ' · '.join(parts)
        label = self.gpu_labels[r.index]
        if label.text != text:
            label.set_text(text)

    def _show_interval(self, interval: float) -> None:
        text = f'{interval:g} s'
        if self.interval_label.text != text:
            self.interval_label.set_text(text)

    def step_interval(self, direction: int) -> None:
        current = self.core.monitor.interval
        steps = [s for s in INTERVAL_STEPS if (s > current if direction > 0 else s < current)]
        if not steps:
            return  # the label already shows the limit; no notification per click
        chosen = self.core.monitor.set_interval(steps[0] if direction > 0 else steps[-1])
        self._show_interval(chosen)


def _jobs_text(jobs: tuple[str, ...]) -> str:
    return f' · {", ".join(jobs)}' if jobs else ''


def _vram_percent(gpu: GpuStats | None) -> float | None:
    if gpu is None or not gpu.reading.memory_total or gpu.reading.memory_used is None:
        return None
    return round(100 * gpu.reading.memory_used / gpu.reading.memory_total, 1)
