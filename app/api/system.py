"""/api/health (open) and the API's own documentation (token protected)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from ..services import core as core_module

router = APIRouter(tags=['system'])


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
    return get_swagger_ui_html(openapi_url=schema_url, title='AiKore API')
