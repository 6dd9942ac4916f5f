"""/api/orphans: instance folders that no instance row knows of (after a lost or replaced
database): list them, adopt one (a row made from the folder) or move it to the trash."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from ..models import InstancePublic, OrphanFolder
from ..services.core import Core
from .deps import get_core

router = APIRouter(prefix='/orphans', tags=['orphans'])
CoreDep = Annotated[Core, Depends(get_core)]


class Trashed(BaseModel):
    trash_entry: str  # its name in /api/trash (restorable from there)


@router.get('')
async def list_orphans(core: CoreDep) -> list[OrphanFolder]:
    return await core.orphans.find()


@router.post('/{name}/adopt', status_code=201)
async def adopt_orphan(name: str, core: CoreDep) -> InstancePublic:
    """A stopped instance for the folder: its name, and the blueprint its launch.sh names."""
    return await core.adopt_orphan(name)


@router.post('/{name}/trash')
async def trash_orphan(name: str, core: CoreDep) -> Trashed:
    return Trashed(trash_entry=await core.trash_orphan(name))
