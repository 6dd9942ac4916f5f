"""The REST API as its own FastAPI application, mounted by ``app.main`` at /api."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from ..services.errors import ServiceError
from . import blueprints, instances, network, system, trash
from .deps import TokenAuthMiddleware, json_body_only


def create_api() -> FastAPI:
    api = FastAPI(
        title='AiKore API',
        version='1',
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(json_body_only)],
    )
    for module in (system, instances, blueprints, trash, network):
        api.include_router(module.router)
    api.add_middleware(TokenAuthMiddleware)
    api.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, routes=api.routes, servers=[{'url': '/api'}])
            schema.setdefault('components', {})['securitySchemes'] = {'bearer': {'type': 'http', 'scheme': 'bearer'}}
            schema['security'] = [{'bearer': []}]
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse({'detail': exc.detail, **exc.extra}, status_code=exc.status_code)
