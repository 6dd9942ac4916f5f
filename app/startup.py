"""Panel start and exit: open the services, re-adopt, autostart; leave instances running."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

from nicegui import app
from nicegui.storage import Storage

from . import log_safety
from .config import Settings
from .services import core as core_module
from .services.core import Core
from .services.net.nginx import NginxError

log = logging.getLogger(__name__)
failure: str | None = None  # why startup gave up; main() exits with it


def open_core(settings: Settings) -> Core:
    """Open the services before serving, so a bad data directory stops the panel at once."""
    core = Core.open(settings)
    core_module.set_current(core)
    return core


async def startup() -> None:
    global failure
    failure = None  # this start's own verdict (a process may run the app more than once: tests)
    log_safety.install()  # again: the server configured its own handlers (uvicorn's) since main()
    if not core_module.started():  # e.g. an app run by a test harness instead of main()
        await asyncio.to_thread(open_core, Settings.from_env())
    core = core_module.current()
    try:
        await core.startup()
    except NginxError as exc:  # the panel cannot be reached: stop instead of serving nothing
        failure = f'nginx: {exc}'
        log.critical('Cannot start: %s', failure)
        app.shutdown()
        return
    settings = core.settings
    # What exists now (modules, NiceGUI, the services: ~140,000 objects) lives as long as the
    # panel: kept out of the collector's full passes, each of which walked it all (90 ms quiet,
    # 260 ms seen under load inside a page request, where it delayed a dashboard's first render).
    gc.freeze()
    log.info('AiKore is ready on http://%s:%s (data in %s)', settings.host, settings.port, settings.data_dir)
    if core.problems:
        log.warning('Started with %d problem(s) (see /api/health and the dashboard):', len(core.problems))
        for problem in core.problems:
            log.warning('  - %s', problem)
    try:
        proxy = core.network.proxy
        https = settings.https_only and proxy is not None and proxy.certificate is not None
        link = login_link(settings, core.sessions.new_login_link_token(), https=https)
    except Exception as exc:  # a login link is a convenience: the password still works
        log.error('Cannot make a one-time login link: %s', exc, exc_info=exc)
        core.add_problem(f'One-time login link failed: {exc}')
        return
    log.warning('Log in: %s (one-time link, valid for an hour)', link)


def login_link(settings: Settings, token: str, https: bool = False) -> str:
    """``https``: the proxy serves HTTPS and plain HTTP redirects there (AIKORE_HTTPS_ONLY), so
    the link goes there at once (the session is made where the user stays)."""
    host = settings.public_host or ('localhost' if settings.host in {'0.0.0.0', '::'} else settings.host)
    if https and settings.https_port is not None:
        return f'https://{host}:{settings.https_port}/login?once={token}'
    return f'http://{host}:{settings.port}/login?once={token}'


def keep_browser_storage_in(folder: Path) -> None:
    """NiceGUI's per-browser storage (pane sizes, selected tab) lives in the data directory."""
    Storage.path = folder.resolve()
    app.storage = Storage()


async def shutdown() -> None:
    if core_module.started():
        await core_module.current().shutdown()
        core_module.set_current(None)
