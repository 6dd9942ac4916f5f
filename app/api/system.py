"""/api/health (open), the monitor's figures (/api/system/...) and the API's own
documentation (token protected)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from ..services import core as core_module
from ..services.core import Core
from .deps import get_core

router = APIRouter(tags=['system'])
# Swagger UI 5's files (package swagger-ui-py), served by the panel itself outside /api: no CDN.
SWAGGER_ASSETS = '/_aikore/swagger'
SWAGGER_FILES = ('swagger-ui-bundle.js', 'swagger-ui.css')
# The docs page's own script, a static file (no inline script: the panel's CSP allows none).
DOCS_SCRIPT = '/_aikore/api-docs.js'
DOCS_SCRIPT_FILE = Path(__file__).parent.parent / 'static' / 'api_docs.js'
DOCS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>AiKore API</title>
<link rel="stylesheet" href="{SWAGGER_ASSETS}/swagger-ui.css">
<link rel="icon" href="/favicon.ico">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{SWAGGER_ASSETS}/swagger-ui-bundle.js"></script>
<script src="{DOCS_SCRIPT}"></script>
</body>
</html>
"""
CoreDep = Annotated[Core, Depends(get_core)]


def swagger_folder() -> Path:
    """Where swagger-ui-py keeps Swagger UI's files (found without importing the package)."""
    spec = importlib.util.find_spec('swagger_ui')
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError('the package swagger-ui-py is not installed')
    return Path(spec.submodule_search_locations[0]) / 'static'


class Interval(BaseModel):
    """The monitor's sampling interval in seconds (0.25-10), the same for every viewer."""

    model_config = ConfigDict(strict=True)
    interval: float


@router.get(
    '/health',
    responses={
        200: {'description': '`ok`, or `degraded` with `problems`: the start-up steps that failed (one sentence each)'},
        503: {'description': 'Still starting (re-adopting instances)'},
    },
)
async def health() -> JSONResponse:
    """Open to all: 503 only while the panel starts; then 200 ``{"status": "ok"}``, or
    ``{"status": "degraded", "problems": [...]}`` when a start-up step failed (a bad autostart,
    a run that could not be re-adopted, ...): the panel serves, but something needs a look."""
    if not core_module.ready():
        return JSONResponse({'status': 'starting'}, status_code=503)
    problems = core_module.current().problems
    if problems:
        return JSONResponse({'status': 'degraded', 'problems': list(problems)})
    return JSONResponse({'status': 'ok'})


@router.get('/openapi.json', include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)


@router.get('/docs', include_in_schema=False)
async def docs() -> HTMLResponse:
    """Swagger UI. The page is a constant: a ``?token=`` in its address is read by the page's
    own script (``app/static/api_docs.js``) as data, never written into the HTML."""
    return HTMLResponse(DOCS_PAGE)


@router.get('/system/stats')
async def system_stats(core: CoreDep) -> JSONResponse:
    """The latest sample: machine, GPUs and per-instance figures (bytes, %, °C, W; Unix time)."""
    return JSONResponse((await core.monitor.current()).to_json())


@router.get('/system/history')
async def system_history(core: CoreDep, seconds: Annotated[float | None, Query(gt=0, le=86400)] = None) -> Response:
    """The samples of the last ``seconds`` (default: all kept, 3600 samples), oldest first."""
    return Response(await core.monitor.history_json(seconds), media_type='application/json')


@router.get('/system/interval')
async def get_interval(core: CoreDep) -> Interval:
    return Interval(interval=core.monitor.interval)


@router.put('/system/interval', responses={422: {'description': 'Not a number of seconds within 0.25-10'}})
async def set_interval(body: Interval, core: CoreDep) -> Interval:
    """Change how often the panel samples, for everyone, at once (not kept across restarts)."""
    return Interval(interval=core.monitor.set_interval(body.interval))
