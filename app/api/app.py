"""The REST API as its own FastAPI application, mounted by ``app.main`` at /api."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from ..services.errors import ServiceError
from ..services.files import disk_full
from . import account, blueprints, disk, families, instances, network, orphans, slurm, system, trash
from .deps import TokenAuthMiddleware, json_body_only
from .openapi_doc import build_schema

log = logging.getLogger(__name__)


def create_api() -> FastAPI:
    api = FastAPI(
        title='AiKore API',
        version='1',
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(json_body_only)],
    )
    for module in (system, instances, families, blueprints, trash, orphans, network, account, disk, slurm):
        api.include_router(module.router)
    api.add_middleware(TokenAuthMiddleware)
    api.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    api.add_exception_handler(OSError, _file_system_error)  # type: ignore[arg-type]
    api.add_exception_handler(OperationalError, _database_error)  # type: ignore[arg-type]

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = build_schema(api)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse({'detail': exc.detail, **exc.extra}, status_code=exc.status_code)


async def _file_system_error(request: Request, exc: OSError) -> JSONResponse:
    """A write the machine refused: a full disk is the user's to fix (507, says so); anything
    else is logged with its cause and answered with a sentence instead of a bare 500."""
    if disk_full(exc):
        return _disk_full(request, exc.strerror or str(exc))
    log.error('%s %s failed: %s', request.method, request.url.path, exc, exc_info=exc)
    return JSONResponse({'detail': f'The panel could not read or write a file: {exc}'}, status_code=500)


async def _database_error(request: Request, exc: OperationalError) -> JSONResponse:
    if disk_full(exc):
        return _disk_full(request, 'the database cannot grow')
    log.error('%s %s failed in the database: %s', request.method, request.url.path, exc.orig, exc_info=exc)
    return JSONResponse({'detail': f'The database refused the change: {exc.orig}'}, status_code=500)


def _disk_full(request: Request, reason: str) -> JSONResponse:
    log.warning('%s %s: the disk of the data directory is full (%s)', request.method, request.url.path, reason)
    detail = f'The disk of the data directory is full ({reason}). Nothing was changed; free some space and try again.'
    return JSONResponse({'detail': detail}, status_code=507)
