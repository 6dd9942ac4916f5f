"""Panel start and exit: open the services, re-adopt, autostart; leave instances running."""

from __future__ import annotations

import asyncio
import logging

from .config import Settings
from .services import core as core_module
from .services.core import Core

log = logging.getLogger(__name__)


def open_core(settings: Settings) -> Core:
    """Open the services before serving, so a bad data directory stops the panel at once."""
    core = Core.open(settings)
    core_module.set_current(core)
    return core


async def startup() -> None:
    if not core_module.started():  # e.g. an app run by a test harness instead of main()
        await asyncio.to_thread(open_core, Settings.from_env())
    core = core_module.current()
    await core.startup()
    settings = core.settings
    log.info('AiKore is ready on http://%s:%s (data in %s)', settings.host, settings.port, settings.data_dir)


async def shutdown() -> None:
    if core_module.started():
        await core_module.current().shutdown()
        core_module.set_current(None)
