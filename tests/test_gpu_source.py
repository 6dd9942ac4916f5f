"""``NvmlSource`` against a fake ``pynvml`` module: the NVML calls, units and fallbacks that
otherwise only run on a machine with an NVIDIA GPU (``bench/gpu_check.py`` checks the real
thing there). The real library's no-driver path is tested for real in test_monitor.py."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pytest

from app.services.monitoring.gpu_source import GpuProcess, NvmlSource

MIB = 2**20


class NVMLError(Exception):
    pass


def fake_nvml(memory_v2: bool = True, driver: bool = True) -> types.ModuleType:
    """Two GPUs: GPU 0 has a fan and a process that is both compute and graphics; GPU 1 is
    passively cooled (fan not supported) and reports no power limit."""
    nvml = types.ModuleType('pynvml')
    calls: dict[str, int] = {'init': 0, 'shutdown': 0}

    def init() -> None:
        calls['init'] += 1
        if not driver:
            raise NVMLError('Driver Not Loaded')

    def memory(handle: int, version: int | None = None) -> Any:
        if version is not None and not memory_v2:
            raise NVMLError('Function Not Found')
        reserved = 300 * MIB if version is None else 0  # v1 counts the driver's reserve as used
        return types.SimpleNamespace(total=8192 * MIB, used=(handle + 1) * 1000 * MIB + reserved)

    def unsupported_on_1(value: float) -> Any:
        def call(handle: int) -> float:
            if handle == 1:
                raise NVMLError('Not Supported')
            return value

        return call

    def processes(kind: str) -> Any:
        def call(handle: int) -> list[Any]:
            if handle != 0:
                return []
            used = {'compute': 700 * MIB, 'graphics': 300 * MIB}[kind]
            return [
                types.SimpleNamespace(pid=4242, usedGpuMemory=used),
                types.SimpleNamespace(pid=77, usedGpuMemory=None),
            ]

        return call

    nvml.__dict__.update(
        NVMLError=NVMLError,
        NVML_TEMPERATURE_GPU=0,
        nvmlMemory_v2=0x02000028,
        calls=calls,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.__setitem__('shutdown', calls['shutdown'] + 1),
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetName=lambda handle: f'Fake GPU {handle}'.encode(),  # older pynvml answers bytes
        nvmlDeviceGetUUID=lambda handle: f'GPU-{handle}',
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=55 + handle, memory=10),
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetTemperature=lambda handle, sensor: 60 + handle,
        nvmlDeviceGetPowerUsage=lambda handle: 123_456,  # mW
        nvmlDeviceGetEnforcedPowerLimit=unsupported_on_1(300_000),
        nvmlDeviceGetFanSpeed=unsupported_on_1(42),
        nvmlDeviceGetComputeRunningProcesses=processes('compute'),
        nvmlDeviceGetGraphicsRunningProcesses=processes('graphics'),
    )
    return nvml


def test_readings_units_and_missing_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml()
    monkeypatch.setitem(sys.modules, 'pynvml', nvml)
    source = NvmlSource()
    assert source.count() == 2
    first, second = source.read()
    assert (first.index, first.name, first.uuid) == (0, 'Fake GPU 0', 'GPU-0')
    assert (first.utilization, first.temperature, first.power, first.power_limit) == (55.0, 60.0, 123.456, 300.0)
    assert (first.memory_total, first.memory_used, first.fan) == (8192 * MIB, 1000 * MIB, 42.0)
    # One entry per PID: a C+G process is listed by both queries; unknown usage stays None.
    assert sorted(first.processes, key=lambda p: p.pid) == [GpuProcess(77, None), GpuProcess(4242, 700 * MIB)]
    assert second.fan is None and second.power_limit is None and second.processes == ()
    source.close()
    assert nvml.calls == {'init': 1, 'shutdown': 1}
    assert source.count() == 2 and nvml.calls['init'] == 2  # opened again on demand


def test_memory_info_v1_when_the_driver_has_no_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'pynvml', fake_nvml(memory_v2=False))
    readings = NvmlSource().read()
    assert [r.memory_used for r in readings] == [1300 * MIB, 2300 * MIB]


def test_no_driver_said_once_and_never_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    nvml = fake_nvml(driver=False)
    monkeypatch.setitem(sys.modules, 'pynvml', nvml)
    source = NvmlSource()
    with caplog.at_level(logging.INFO, logger='app.services.monitoring.gpu_source'):
        assert source.count() is None
        assert source.read() == [] and source.read() == []
        source.close()
    assert nvml.calls == {'init': 1, 'shutdown': 0}
    assert [r.levelname for r in caplog.records] == ['INFO']
    assert 'No NVIDIA GPU detected (Driver Not Loaded)' in caplog.records[0].getMessage()
