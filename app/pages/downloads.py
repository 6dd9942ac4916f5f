"""File downloads for logged-in browsers (behind the session gate)."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import StreamingResponse
from nicegui import app

from ..services import core as core_module
from ..services.errors import NotFound


@app.get('/download/logs/{instance_id}', include_in_schema=False)
async def download_log(instance_id: int) -> StreamingResponse:
    """The whole log of the instance's current run, rotated parts included."""
    core = core_module.current()
    try:
        instance = await core.instances.get(instance_id)
    except NotFound as exc:
        raise HTTPException(404, exc.detail) from None
    chunks = core.instances.whole_log(instance.name)
    headers = {'Content-Disposition': f'attachment; filename="{instance.name}.log"'}
    return StreamingResponse(chunks, media_type='text/plain; charset=utf-8', headers=headers)
