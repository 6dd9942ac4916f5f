"""/api/blueprints: stock and custom blueprint scripts."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse

from ..models import BlueprintInfo
from ..services.catalog.blueprints import Blueprint
from ..services.core import Core
from .deps import get_core, read_limited_body, text_body

router = APIRouter(prefix='/blueprints', tags=['blueprints'])
CoreDep = Annotated[Core, Depends(get_core)]


def _info(blueprint: Blueprint) -> BlueprintInfo:
    meta = blueprint.meta
    return BlueprintInfo(
        name=blueprint.name,
        source=blueprint.source,
        category=meta.category,
        description=meta.description,
        display_name=meta.name,
        ready=str(meta.ready),
        stall_timeout=meta.stall_timeout,
        gpu=meta.extra.get('gpu', ''),
        disk=meta.extra.get('disk', ''),
    )


@router.get('')
async def list_blueprints(core: CoreDep) -> list[BlueprintInfo]:
    return [_info(bp) for bp in await asyncio.to_thread(core.blueprints.all)]


@router.get('/{name}', response_class=PlainTextResponse)
async def read_blueprint(name: str, core: CoreDep) -> str:
    return await asyncio.to_thread(core.blueprints.read, name)


@router.put('/{name}', status_code=201)
@text_body
async def put_blueprint(name: str, request: Request, core: CoreDep) -> Response:
    body = await read_limited_body(request)
    created = await asyncio.to_thread(core.blueprints.put_custom, name, body)
    return Response(status_code=201 if created else 204)


@router.delete('/{name}', status_code=204)
async def delete_blueprint(name: str, core: CoreDep) -> Response:
    await asyncio.to_thread(core.blueprints.delete_custom, name)
    return Response(status_code=204)
