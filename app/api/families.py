"""/api/instances/{id}/...: clone, satellites, environment rebuild, versions and pins (thin routes
over ``FamilyService`` and ``EnvironmentService``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse

from ..models import CloneRequest, InstancePublic, SatelliteCreate, VersionsReport
from ..services.core import Core
from .deps import get_core, read_limited_body, text_body
from .instances import shown

router = APIRouter(prefix='/instances', tags=['instances'])
CoreDep = Annotated[Core, Depends(get_core)]
BUSY: dict[int | str, dict[str, Any]] = {409: {'description': 'The instance is being copied (a clone in progress)'}}


@router.post('/{instance_id}/clone', status_code=201)
async def clone_instance(instance_id: int, data: CloneRequest, core: CoreDep, request: Request) -> InstancePublic:
    """A new instance copied from this one (status `installing` while its folder is copied; its
    environment is built by the blueprint at its first start). Delete it to cancel the copy."""
    return shown(core, request, await core.families.clone(instance_id, data))


@router.post('/{instance_id}/cancel', status_code=204)
async def cancel_clone(instance_id: int, core: CoreDep) -> Response:
    """Cancel a clone's copy: nothing of it is left (no folder, no instance); 409 when it is not being copied."""
    await core.instances.delete(instance_id, only_a_copy=True)
    return Response(status_code=204)


@router.post('/{instance_id}/satellites', status_code=201)
async def create_satellite(instance_id: int, data: SatelliteCreate, core: CoreDep, request: Request) -> InstancePublic:
    """A satellite: runs this instance's code and environment with its own GPUs, ports, logs and outputs."""
    return shown(core, request, await core.families.create_satellite(instance_id, data))


@router.get('/{instance_id}/satellites')
async def list_satellites(instance_id: int, core: CoreDep, request: Request) -> list[InstancePublic]:
    await core.instances.get(instance_id)  # 404 for an unknown id
    return [shown(core, request, public) for public in await core.families.satellites(instance_id)]


@router.post('/{instance_id}/rebuild-env')
async def rebuild_environment(
    instance_id: int, core: CoreDep, stop_satellites: Annotated[bool, Query()] = False
) -> dict[str, Any]:
    """Re-create the environment at the next start. Running satellites are stopped first:
    refused (409, `satellites` lists them) unless `stop_satellites=true`."""
    stopped = await core.environments.rebuild(instance_id, stop_satellites)
    return {'rebuild': True, 'stopped_satellites': stopped}


@router.get('/{instance_id}/versions', responses=BUSY)
async def read_versions(instance_id: int, core: CoreDep) -> VersionsReport:
    """Python, torch, its CUDA runtime, xformers, the NVIDIA driver and `pip check` problems of the
    instance's environment (null where absent)."""
    return await core.environments.versions(instance_id)


@router.get('/{instance_id}/pins', response_class=PlainTextResponse, responses=BUSY)
async def read_pins(instance_id: int, core: CoreDep) -> str:
    """The pip constraints (`pins.txt`) every pip install of the instance honours ('' when none)."""
    return await core.environments.read_pins(instance_id)


@router.put('/{instance_id}/pins', status_code=204)
@text_body
async def write_pins(instance_id: int, request: Request, core: CoreDep) -> Response:
    """Replace the pins: text, one requirement such as `torch==2.7.1` a line (422 otherwise); empty removes them."""
    await core.environments.write_pins(instance_id, await read_limited_body(request))
    return Response(status_code=204)
