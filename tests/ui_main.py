"""The main file NiceGUI's user simulation runs before each UI test: a fresh panel app.

NiceGUI resets its routes between tests and forgets the page modules; the panel's own
wiring (API mount, middleware, hooks) lives in app.main, so that is imported afresh too.
"""

import sys

from nicegui import app as nicegui_app
from starlette.routing import Mount

for module in [name for name in sys.modules if name == 'app.main' or name.startswith(('app.pages', 'app.api'))]:
    del sys.modules[module]
nicegui_app.routes[:] = [r for r in nicegui_app.routes if not (isinstance(r, Mount) and r.path == '/api')]

import app.main  # noqa: E402

app.main.main([])
