"""The image (README "Container"): its size, container start -> first /api/health 200, and
``podman stop`` with a Demo instance running (the panel stops it and records its end first).

Builds the image with the container tests' kit (layers cached between runs; an unchanged tree
costs seconds) and runs it with host networking, a temp /config and free ports."""

from __future__ import annotations

import shutil
import time

from tests import container_kit as kit
from tests.container_kit import STOP_TIMEOUT, Container
from tests.helpers import wait_for

from .core import Context, Result, median


def _one_run(ctx: Context, index: int) -> tuple[float, float, float]:
    """(start -> health, stop with an instance running, start again -> health) of a fresh container."""
    config = ctx.root / f'container-{index}' / 'config'
    config.mkdir(parents=True)
    container = Container(kit.IMAGE, config)
    try:
        container.run()
        first = container.wait_healthy()
        container.login()
        instance = container.api('POST', '/instances', 201, json={'name': 'demo', 'blueprint': 'Demo'})
        container.api('POST', f'/instances/{instance["id"]}/start', 202)
        container.wait_status(instance['id'], 'started')
        wait_for(lambda: container.proxied('demo'), 20, 0.05, 'the instance through the proxy')
        began = time.monotonic()
        kit.podman('stop', '-t', str(STOP_TIMEOUT), container.name, timeout=STOP_TIMEOUT + 30)
        stop = time.monotonic() - began
        kit.podman('start', container.name)
        again = container.wait_healthy()
        return first, stop, again
    finally:
        kit.remove_container(container.name)
        shutil.rmtree(config, ignore_errors=True)


def container(ctx: Context) -> list[Result]:
    kit.require_podman()
    build = kit.build()
    size = kit.image_size() / 1e6
    runs = [_one_run(ctx, index) for index in range(2 if ctx.quick else 3)]
    starts = [first for first, _, _ in runs]
    stops = [stop for _, stop, _ in runs]
    restarts = [again for _, _, again in runs]
    return [
        Result(
            key='image_size', label='image size (with the desktop: Xvfb, Chromium, Selkies)', unit='MB', value=size,
            target=2000, target_text='<= 2 GB (no target set: reported)', original='-',
            note=f'build {build:.0f} s (cached layers reused)',
        ),
        Result(
            key='container_start', label='container start -> /api/health 200 (median)', unit='s',
            value=median(starts), target=10.0, target_text='<= 10 s', original='8 min first boot',
            note=f'restart of a stopped container {median(restarts):.2f} s', samples=starts,
            extra={'restart_s': restarts},
        ),
        Result(
            key='container_stop', label='podman stop, Demo running (median)', unit='s', value=median(stops),
            target=5.0, target_text='<= 5 s', original='-', samples=stops,
        ),
    ]  # fmt: skip
