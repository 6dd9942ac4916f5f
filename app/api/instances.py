"""/api/instances: thin routes over ``InstanceService`` and the public ports (``Ports``).

Every instance answered carries its ``urls`` for the host the caller reached the panel at.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse

from ..models import InstanceCreate, InstancePublic, InstanceUpdate, LogChunk
from ..services.core import Core
from .deps import get_core, over_https, read_limited_body, text_body

router = APIRouter(prefix='/instances', tags=['instances'])
CoreDep = Annotated[Core, Depends(get_core)]


def shown(core: Core, request: Request, public: InstancePublic) -> InstancePublic:
    scheme = 'https' if over_https(request.scope) else 'http'  # the scheme the user came in with (nginx says)
    return core.network.with_urls(public, request.headers.get('host'), scheme)


@router.post('', status_code=201)
async def create_instance(data: InstanceCreate, core: CoreDep, request: Request) -> InstancePublic:
    return shown(core, request, await core.instances.create(data))


@router.get('')
async def list_instances(core: CoreDep, request: Request) -> list[InstancePublic]:
    return [shown(core, request, public) for public in await core.instances.list_all()]


@router.get('/{instance_id}')
async def get_instance(instance_id: int, core: CoreDep, request: Request) -> InstancePublic:
    return shown(core, request, await core.instances.get(instance_id))


@router.patch('/{instance_id}')
async def update_instance(instance_id: int, data: InstanceUpdate, core: CoreDep, request: Request) -> dict[str, Any]:
    public, restart_required = await core.instances.update(instance_id, data, request.headers.get('host'))
    return {**shown(core, request, public).model_dump(mode='json'), 'restart_required': restart_required}


@router.delete('/{instance_id}', status_code=204)
async def delete_instance(instance_id: int, core: CoreDep) -> Response:
    await core.instances.delete(instance_id)
    return Response(status_code=204)


@router.post('/{instance_id}/start', status_code=202)
async def start_instance(instance_id: int, core: CoreDep, request: Request) -> InstancePublic:
    return shown(core, request, await core.instances.start(instance_id))


@router.post('/{instance_id}/stop', status_code=202)
async def stop_instance(instance_id: int, core: CoreDep, request: Request) -> InstancePublic:
    return shown(core, request, await core.instances.stop(instance_id))


@router.post('/{instance_id}/restart', status_code=202)
async def restart_instance(instance_id: int, core: CoreDep, request: Request) -> InstancePublic:
    return shown(core, request, await core.instances.restart(instance_id))


@router.post(
    '/{instance_id}/activate',
    responses={409: {'description': 'Port held by another instance (`holder`), by another program, or not started'}},
)
async def activate_instance(
    instance_id: int, core: CoreDep, request: Request, force: Annotated[bool, Query()] = False
) -> InstancePublic:
    """Map the public port to the instance; ``force=true`` takes it over from the instance holding it."""
    return shown(core, request, await core.network.ports.activate(instance_id, force))


@router.post('/{instance_id}/deactivate')
async def deactivate_instance(instance_id: int, core: CoreDep, request: Request) -> InstancePublic:
    """Unmap the public port (its live connections are cut)."""
    return shown(core, request, await core.network.ports.deactivate(instance_id))


@router.get('/{instance_id}/logs')
async def read_logs(instance_id: int, core: CoreDep, offset: Annotated[int, Query(ge=0)] = 0) -> LogChunk:
    return await core.instances.read_log(instance_id, offset)


@router.get('/{instance_id}/script', response_class=PlainTextResponse)
async def read_script(instance_id: int, core: CoreDep) -> str:
    return await core.instances.read_script(instance_id)


@router.put('/{instance_id}/script', status_code=204)
@text_body
async def write_script(instance_id: int, request: Request, core: CoreDep) -> Response:
    await core.instances.write_script(instance_id, await read_limited_body(request))
    return Response(status_code=204)
