"""/api/slurm: the cluster the Slurm executor submits to, as the monitor shows it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from ..models import iso_utc
from ..services.core import Core
from ..services.runtime.slurm import SlurmUnreachable
from .deps import get_core

router = APIRouter(tags=['slurm'])
CoreDep = Annotated[Core, Depends(get_core)]


@router.get('/slurm/nodes')
async def slurm_nodes(core: CoreDep) -> dict[str, Any]:
    """``configured`` (AIKORE_SLURM), ``unreachable_since`` (null while Slurm answers) and its
    ``error``, and per node: ``state``, ``addr``, ``gpus``, ``gpus_used`` (allocated by Slurm,
    to any job) and ``instances`` (this panel's jobs running there)."""
    slurm = core.supervisor.slurm
    if slurm is None:
        return {'configured': False, 'unreachable_since': None, 'error': None, 'nodes': []}
    error: str | None = None
    try:
        nodes = [vars(node) | {'instances': list(node.jobs)} for node in await slurm.nodes()]
    except SlurmUnreachable as exc:
        nodes, error = [], exc.detail
    for node in nodes:
        node.pop('jobs', None)
    since = slurm.unreachable_since
    return {'configured': True, 'unreachable_since': iso_utc(since) if since else None, 'error': error, 'nodes': nodes}
