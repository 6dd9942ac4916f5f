"""/api/trash: deleted instances, restorable until deleted for good."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from ..models import InstancePublic, TrashEntry
from ..services.core import Core
from .deps import get_core

router = APIRouter(prefix='/trash', tags=['trash'])
CoreDep = Annotated[Core, Depends(get_core)]
FREED_HEADER = 'X-AiKore-Freed-Bytes'


@router.get('')
async def list_trash(core: CoreDep) -> list[TrashEntry]:
    return await core.trash.entries()


@router.post('/{name}/restore', status_code=201)
async def restore(name: str, core: CoreDep) -> InstancePublic:
    return await core.trash.restore(name)


class TrashEmptied(BaseModel):
    deleted: list[str]  # the entries deleted for good
    freed_bytes: int


@router.delete('', responses={200: {'description': 'Every entry deleted for good, and the bytes freed'}})
async def empty_trash(core: CoreDep) -> TrashEmptied:
    deleted, freed = await core.trash.empty()
    return TrashEmptied(deleted=deleted, freed_bytes=freed)


@router.delete(
    '/{name}',
    status_code=204,
    responses={204: {'description': 'Deleted for good', 'headers': {FREED_HEADER: {'schema': {'type': 'integer'}}}}},
)
async def purge(name: str, core: CoreDep) -> Response:
    """Deleted for good; the bytes it freed are in the X-AiKore-Freed-Bytes header (204 has no body)."""
    freed = await core.trash.purge(name)
    return Response(status_code=204, headers={FREED_HEADER: str(freed)})
