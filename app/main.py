"""Builds the panel: NiceGUI pages, the REST API under /api, and the lifecycle hooks.

Everything is registered at import (pages by their modules, the API mount, middleware),
so tests and ``ui.run`` see the same application.
"""

from __future__ import annotations

import logging
import sys

from nicegui import app, ui

from . import log_safety
from . import startup as lifecycle
from .api import metrics, proxy_auth, system
from .api.app import create_api
from .api.stray_paths import StrayApiPaths
from .config import ConfigError, Settings
from .db import SchemaError
from .pages import blueprints_page, dashboard, downloads, login, speedups, utility_css  # noqa: F401 - registers the pages
from .pages.gate import SessionGate
from .pages.security_headers import SecurityHeaders
from .services.access import auth
from .services.access.sessions import STORAGE_COOKIE

speedups.install()
utility_css.install()
api = create_api()
app.mount('/api', api)
app.add_api_route('/metrics', metrics.endpoint, methods=['GET'], include_in_schema=False)  # token checked inside
app.add_api_route('/_aikore/auth', proxy_auth.check, methods=['GET', 'HEAD'], include_in_schema=False)  # nginx
for asset in system.SWAGGER_FILES:  # public: the docs page needs them before any token
    app.add_static_file(local_file=system.swagger_folder() / asset, url_path=f'{system.SWAGGER_ASSETS}/{asset}')
app.add_static_file(local_file=system.DOCS_SCRIPT_FILE, url_path=system.DOCS_SCRIPT)
app.add_middleware(StrayApiPaths)  # inside the gate, which lets /api/ through (the API checks its own auth)
app.add_middleware(SessionGate)
app.add_middleware(SecurityHeaders)  # outermost: also on the gate's redirects and 401s
app.on_startup(lifecycle.startup)
app.on_shutdown(lifecycle.shutdown)


def main(argv: list[str] | None = None) -> None:
    """``aikore`` runs the panel; ``aikore token`` prints the API token."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    log_safety.install()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f'aikore: {exc}')
    if args == ['token']:
        print(stored_token(settings))  # noqa: T201 - the command's output
        return
    if args:
        sys.exit('usage: aikore [token]')
    try:
        core = lifecycle.open_core(settings)
    except (SchemaError, OSError, RuntimeError) as exc:
        sys.exit(f'aikore: cannot open {settings.data_dir}: {exc}')
    lifecycle.keep_browser_storage_in(settings.data_dir / 'nicegui')
    lifecycle.failure = None
    ui.run(
        storage_secret=core.sessions.secret,
        # Not NiceGUI's default name "session", which many apps use for their own cookie.
        session_middleware_kwargs={'session_cookie': STORAGE_COOKIE, 'same_site': 'lax'},
        host=core.network.panel_host,  # behind nginx: a loopback port; else AIKORE_HOST:AIKORE_PORT
        port=core.network.panel_port,
        title='AiKore',
        dark=True,
        reload=False,
        show=False,
        show_welcome_message=False,
        uvicorn_logging_level='warning',
        # The utility classes come as a stylesheet made ahead of time (pages/utility_css.py), not
        # from a runtime in the browser (UnoCSS, Tailwind): the pages render much faster.
        unocss=None,
        tailwind=False,
    )
    if lifecycle.failure:
        sys.exit(f'aikore: {lifecycle.failure}')


def stored_token(settings: Settings) -> str:
    """The token the panel of this data directory accepts; never creates one (a new token here
    would not be the one a panel of another data directory accepts)."""
    if settings.api_token:
        return settings.api_token
    try:
        token = auth.stored_api_token(settings.secrets_path)
    except (OSError, RuntimeError) as exc:
        sys.exit(f'aikore token: cannot read {settings.secrets_path}: {exc}')
    if token is None:
        sys.exit(
            f'aikore token: no API token in {settings.secrets_path} (data directory {settings.data_dir}).\n'
            'The panel creates one at its first start. Run this command with the same AIKORE_DATA_DIR '
            '(or AIKORE_API_TOKEN) as the panel.'
        )
    return token


if __name__ in {'__main__', '__mp_main__'}:
    main()
