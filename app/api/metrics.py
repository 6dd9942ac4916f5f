"""GET /metrics: the monitor's latest sample in Prometheus' text format, for Prometheus/Grafana.

Served on the panel's root (not under /api) where scrapers look for it, behind the same
token rule as the API (``Authorization: Bearer`` or ``?token=``; 401 otherwise). Each
request renders one sample through a collector on a registry of its own, so nothing is
registered in prometheus_client's global registry.

Labels: ``gpu`` (index) and ``name`` on GPU series; ``instance`` (the instance's name) and
``instance_id`` on per-instance series. Prometheus sets its own ``instance`` label (the
scraped target) and renames ours to ``exported_instance`` unless the scrape job has
``honor_labels: true``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from ..services import core as core_module
from ..services.monitoring.sampler import GpuStats, InstanceStats, Sample
from .deps import authenticated, unauthorized

GPU_LABELS = ('gpu', 'name')
INSTANCE_LABELS = ('instance', 'instance_id')
GPU_FIGURES: tuple[tuple[str, str, Callable[[GpuStats], float | None]], ...] = (
    ('aikore_gpu_utilization_percent', 'GPU utilisation', lambda g: g.reading.utilization),
    ('aikore_gpu_memory_used_bytes', 'GPU memory in use', lambda g: g.reading.memory_used),
    ('aikore_gpu_memory_total_bytes', 'GPU memory', lambda g: g.reading.memory_total),
    ('aikore_gpu_temperature_celsius', 'GPU temperature', lambda g: g.reading.temperature),
    ('aikore_gpu_power_watts', 'GPU power draw', lambda g: g.reading.power),
    ('aikore_gpu_power_limit_watts', 'GPU power limit', lambda g: g.reading.power_limit),
    ('aikore_gpu_fan_percent', 'GPU fan speed', lambda g: g.reading.fan),
)
INSTANCE_FIGURES: tuple[tuple[str, str, Callable[[InstanceStats], float]], ...] = (
    ('aikore_instance_cpu_percent', 'CPU of the process tree (100 = one core)', lambda i: i.cpu_percent),
    ('aikore_instance_memory_rss_bytes', 'Resident memory of the process tree', lambda i: i.memory_rss),
    ('aikore_instance_gpu_memory_bytes', 'GPU memory of the process tree, all GPUs', lambda i: i.gpu_memory),
    ('aikore_instance_processes', 'Processes in the tree', lambda i: i.processes),
)


class SampleCollector(Collector):
    """The figures of one sample as metric families."""

    def __init__(self, sample: Sample, interval: float) -> None:
        self.sample = sample
        self.interval = interval

    def collect(self) -> Iterator[Metric]:
        yield from self._panel()
        yield from self._machine()
        yield from self._gpus()
        yield from self._instances()

    def _panel(self) -> Iterator[Metric]:
        s = self.sample
        yield GaugeMetricFamily('aikore_monitor_interval_seconds', 'Sampling interval', self.interval)
        yield GaugeMetricFamily('aikore_sample_timestamp_seconds', 'Unix time of the sample', s.timestamp)
        yield GaugeMetricFamily('aikore_sample_duration_seconds', 'Time taken to collect the sample', s.duration)
        yield GaugeMetricFamily('aikore_instances_running', 'Instances running now', len(s.instances))

    def _machine(self) -> Iterator[Metric]:
        s = self.sample
        yield GaugeMetricFamily('aikore_cpu_usage_percent', 'CPU use, all cores (0-100)', s.cpu.percent)
        cores = GaugeMetricFamily('aikore_cpu_core_usage_percent', 'CPU use per core (0-100)', labels=['core'])
        for index, percent in enumerate(s.cpu.per_core):
            cores.add_metric([str(index)], percent)
        yield cores
        yield GaugeMetricFamily('aikore_memory_total_bytes', 'Physical memory', s.memory.total)
        yield GaugeMetricFamily('aikore_memory_used_bytes', 'Memory in use (total - available)', s.memory.used)
        yield GaugeMetricFamily('aikore_memory_available_bytes', 'Memory available', s.memory.available)
        yield GaugeMetricFamily('aikore_swap_total_bytes', 'Swap space', s.swap.total)
        yield GaugeMetricFamily('aikore_swap_used_bytes', 'Swap in use', s.swap.used)
        for field, text in (('total', 'Size'), ('used', 'Used space'), ('free', 'Free space')):
            disk = GaugeMetricFamily(f'aikore_disk_{field}_bytes', f'{text} of the data volume', labels=['path'])
            disk.add_metric([s.disk.path], getattr(s.disk, field))
            yield disk
        yield GaugeMetricFamily('aikore_network_receive_bytes_per_second', 'Bytes received/s', s.net.recv_rate)
        yield GaugeMetricFamily('aikore_network_transmit_bytes_per_second', 'Bytes sent/s', s.net.sent_rate)
        yield CounterMetricFamily('aikore_network_receive_bytes', 'Bytes received since boot', s.net.bytes_recv)
        yield CounterMetricFamily('aikore_network_transmit_bytes', 'Bytes sent since boot', s.net.bytes_sent)

    def _gpus(self) -> Iterator[Metric]:
        gpus = self.sample.gpus
        yield GaugeMetricFamily('aikore_gpus', 'NVIDIA GPUs detected', len(gpus))
        for name, text, value in GPU_FIGURES:
            family = GaugeMetricFamily(name, text, labels=list(GPU_LABELS))
            for gpu in gpus:
                figure = value(gpu)
                if figure is not None:  # a figure this GPU does not report is left out, not shown as 0
                    family.add_metric([str(gpu.index), gpu.reading.name], figure)
            yield family

    def _instances(self) -> Iterator[Metric]:
        instances = list(self.sample.instances.values())
        for name, text, value in INSTANCE_FIGURES:
            family = GaugeMetricFamily(name, text, labels=list(INSTANCE_LABELS))
            for stats in instances:
                family.add_metric([stats.name, str(stats.instance_id)], value(stats))
            yield family
        by_gpu = GaugeMetricFamily(
            'aikore_instance_gpu_memory_by_gpu_bytes',
            'GPU memory of the tree per GPU',
            labels=[*INSTANCE_LABELS, 'gpu'],
        )
        for stats in instances:
            for index, used in stats.gpu_memory_by_gpu.items():
                by_gpu.add_metric([stats.name, str(stats.instance_id), str(index)], used)
        yield by_gpu


def render(sample: Sample, interval: float) -> bytes:
    registry = CollectorRegistry()
    registry.register(SampleCollector(sample, interval))
    return generate_latest(registry)


async def endpoint(request: Request) -> Response:
    if not authenticated(request.scope):
        return unauthorized()
    monitor = core_module.current().monitor
    sample = await monitor.current()
    return Response(render(sample, monitor.interval), media_type=CONTENT_TYPE_LATEST)
