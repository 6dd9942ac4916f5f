"""/api/network: how the panel is reached (nginx mode, the proxy's state and last error)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from ..services.core import Core
from .deps import get_core

router = APIRouter(tags=['network'])
CoreDep = Annotated[Core, Depends(get_core)]


@router.get('/network')
async def network_status(core: CoreDep) -> dict[str, Any]:
    """``nginx`` (managed | external | off), the panel's own address, and ``proxy``: whether
    nginx runs, its config file, reloads so far and ``last_error`` (a render nginx refused;
    null once a later one applied)."""
    return core.network.status()
