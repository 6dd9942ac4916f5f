"""/api/instances: thin routes over ``InstanceService``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse

from ..models import InstanceCreate, InstancePublic, InstanceUpdate, LogChunk
from ..services.core import Core
from .deps import get_core, read_limited_body

router = APIRouter(prefix='/instances', tags=['instances'])
CoreDep = Annotated[Core, Depends(get_core)]


@router.post('', status_code=201)
async def create_instance(data: InstanceCreate, core: CoreDep) -> InstancePublic:
    return await core.instances.create(data)


@router.get('')
async def list_instances(core: CoreDep) -> list[InstancePublic]:
    return await core.instances.list_all()


@router.get('/{instance_id}')
async def get_instance(instance_id: int, core: CoreDep) -> InstancePublic:
    return await core.instances.get(instance_id)


@router.patch('/{instance_id}')
async def update_instance(instance_id: int, data: InstanceUpdate, core: CoreDep) -> dict[str, Any]:
    public, restart_required = await core.instances.update(instance_id, data)
    return {**public.model_dump(mode='json'), 'restart_required': restart_required}


@router.delete('/{instance_id}', status_code=204)
async def delete_instance(instance_id: int, core: CoreDep) -> Response:
    await core.instances.delete(instance_id)
    return Response(status_code=204)


@router.post('/{instance_id}/start', status_code=202)
async def start_instance(instance_id: int, core: CoreDep) -> InstancePublic:
    return await core.instances.start(instance_id)


@router.post('/{instance_id}/stop', status_code=202)
async def stop_instance(instance_id: int, core: CoreDep) -> InstancePublic:
    return await core.instances.stop(instance_id)


@router.post('/{instance_id}/restart', status_code=202)
async def restart_instance(instance_id: int, core: CoreDep) -> InstancePublic:
    return await core.instances.restart(instance_id)


@router.get('/{instance_id}/logs')
async def read_logs(instance_id: int, core: CoreDep, offset: Annotated[int, Query(ge=0)] = 0) -> LogChunk:
    return await core.instances.read_log(instance_id, offset)


@router.get('/{instance_id}/script', response_class=PlainTextResponse)
async def read_script(instance_id: int, core: CoreDep) -> str:
    return await core.instances.read_script(instance_id)


@router.put('/{instance_id}/script', status_code=204)
async def write_script(instance_id: int, request: Request, core: CoreDep) -> Response:
    await core.instances.write_script(instance_id, await read_limited_body(request))
    return Response(status_code=204)
