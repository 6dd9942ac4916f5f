"""/api/health (open), the monitor's figures (/api/system/...) and the API's own
documentation (token protected)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from ..services import core as core_module
from ..services.core import Core
from .deps import get_core

router = APIRouter(tags=['system'])
# Swagger UI's files (package swagger-ui-bundle), served by the panel itself outside /api: no CDN.
SWAGGER_ASSETS = '/_aikore/swagger'
CoreDep = Annotated[Core, Depends(get_core)]


class Interval(BaseModel):
    """The monitor's sampling interval in seconds (0.25-10), the same for every viewer."""

    model_config = ConfigDict(strict=True)
    interval: float


@router.get('/health', responses={503: {'description': 'Still starting (re-adopting instances)'}})
async def health() -> JSONResponse:
    """Open to all: 200 once the panel can serve requests, 503 while it is starting."""
    if not core_module.ready():
        return JSONResponse({'status': 'starting'}, status_code=503)
    return JSONResponse({'status': 'ok'})


@router.get('/openapi.json', include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)


@router.get('/docs', include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    root = request.scope.get('root_path', '')
    token = request.query_params.get('token')
    # A browser opening the docs with ?token= passes it on to the schema request too.
    schema_url = f'{root}/openapi.json' + (f'?token={token}' if token else '')
    return get_swagger_ui_html(
        openapi_url=schema_url,
        title='AiKore API',
        swagger_js_url=f'{SWAGGER_ASSETS}/swagger-ui-bundle.js',  # served by the panel: works offline
        swagger_css_url=f'{SWAGGER_ASSETS}/swagger-ui.css',
        swagger_favicon_url='/favicon.ico',
    )


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
