"""Panel start and exit: open the services, re-adopt, autostart; leave instances running."""

from __future__ import annotations

import asyncio
import logging

from .config import Settings
from .services import core as core_module
from .services.core import Core

log = logging.getLogger(__name__)


async def startup() -> None:
    settings = Settings.from_env()
    core = await asyncio.to_thread(Core.open, settings)
    core_module.set_current(core)
    await core.startup()
    log.info('AiKore is ready on http://%s:%s (data in %s)', settings.host, settings.port, settings.data_dir)


async def shutdown() -> None:
    if core_module.started():
        await core_module.current().shutdown()
        core_module.set_current(None)
