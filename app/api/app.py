"""The REST API as its own FastAPI application, mounted by ``app.main`` at /api."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..services.errors import ServiceError
from . import blueprints, instances, network, system, trash
from .deps import TokenAuthMiddleware
from .openapi_doc import build_schema


def create_api() -> FastAPI:
    api = FastAPI(title='AiKore API', version='1', docs_url=None, redoc_url=None, openapi_url=None)
    for module in (system, instances, blueprints, trash, network):
        api.include_router(module.router)
    api.add_middleware(TokenAuthMiddleware)
    api.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = build_schema(api)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse({'detail': exc.detail, **exc.extra}, status_code=exc.status_code)
