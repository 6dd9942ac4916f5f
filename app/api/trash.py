"""/api/trash: deleted instances, restorable until deleted for good."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from ..models import InstancePublic, TrashEntry
from ..services.core import Core
from .deps import get_core

router = APIRouter(prefix='/trash', tags=['trash'])
CoreDep = Annotated[Core, Depends(get_core)]


@router.get('')
async def list_trash(core: CoreDep) -> list[TrashEntry]:
    return await core.instances.trash()


@router.post('/{name}/restore', status_code=201)
async def restore(name: str, core: CoreDep) -> InstancePublic:
    return await core.instances.restore(name)


@router.delete('/{name}', status_code=204)
async def purge(name: str, core: CoreDep) -> Response:
    await core.instances.purge(name)
    return Response(status_code=204)
