"""Every action ends in a notification: what happened, or the service's own sentence."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from nicegui import ui

from ..services.errors import ServiceError

log = logging.getLogger(__name__)
T = TypeVar('T')


async def succeeded(action: Awaitable[object], success: str | None = None) -> bool:
    """Await ``action``; notify ``success`` or the error's detail; True when it worked."""
    try:
        await action
    except ServiceError as exc:
        ui.notify(exc.detail, type='negative', multi_line=True)
        return False
    if success:
        ui.notify(success, type='positive')
    return True


async def attempt(action: Awaitable[T], success: str | None = None) -> T | None:
    """Await ``action``; notify ``success`` or the error's detail. None when it failed."""
    try:
        result = await action
    except ServiceError as exc:
        ui.notify(exc.detail, type='negative', multi_line=True)
        return None
    if success:
        ui.notify(success, type='positive')
    return result
