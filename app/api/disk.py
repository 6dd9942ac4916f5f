"""/api/disk: what each instance, the shared models folder and the trash take on disk, and the
data volume's free space. Figures are kept; ``?refresh=1`` (or POST /api/disk/refresh) counts again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from ..services.core import Core
from ..services.monitoring.disk import DiskReport, InstanceDisk
from .deps import get_core

router = APIRouter(tags=['disk'])
CoreDep = Annotated[Core, Depends(get_core)]


@router.get('/disk')
async def disk(core: CoreDep, refresh: bool = False) -> DiskReport:
    """Sizes in bytes, as ``du -sb`` counts them; computed once, then kept until a refresh."""
    return await core.disk.report(refresh=refresh)


@router.post('/disk/refresh')
async def refresh_disk(core: CoreDep) -> DiskReport:
    return await core.disk.report(refresh=True)


@router.get('/instances/{instance_id}/disk')
async def instance_disk(instance_id: int, core: CoreDep, refresh: bool = False) -> InstanceDisk:
    """One instance: code, environment, outputs and logs (see GET /api/disk)."""
    return await core.disk.instance(instance_id, refresh=refresh)
