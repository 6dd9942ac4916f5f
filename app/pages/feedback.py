"""Every action ends in a notification: what happened, or the service's own sentence."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nicegui import ui

from ..services.errors import InvalidInput, ServiceError

T = TypeVar('T')
# Messages go to a corner, away from the dialogs and buttons they would cover.
POSITION = 'bottom-right'


def notify(message: str, type: str = 'info', **options: Any) -> None:
    ui.notify(message, type=type, position=POSITION, **options)  # type: ignore[arg-type]


def confirm(
    question: str,
    action: str,
    then: Callable[[], Awaitable[object]],
    *,
    color: str = 'primary',
    cancel: str = 'Cancel',
    marker: str | None = None,
    parent: ui.element | None = None,
) -> None:
    """Ask before acting: ``then`` runs only when the person clicks ``action``. ``parent`` holds
    the dialog when the caller's own place may be rebuilt meanwhile. ``then`` runs in the
    caller's place, not the dialog's: the dialog is gone by the time ``then`` reports."""
    origin = ui.context.slot
    with parent or contextlib.nullcontext(), ui.dialog() as dialog, ui.card():
        ui.label(question)
        with ui.row():
            cancel_button = ui.button(cancel, on_click=dialog.close).props('flat')

            async def confirmed() -> None:
                dialog.close()
                with origin:
                    await then()

            action_button = ui.button(action, on_click=confirmed).props(f'color={color}')
        if marker:
            cancel_button.mark(f'{marker}-cancel')
            action_button.mark(marker)
    dialog.on('hide', dialog.delete)  # a closed dialog leaves nothing behind
    dialog.open()


async def _outcome(action: Awaitable[T], success: str | None) -> tuple[bool, T | None]:
    try:
        result = await action
    except ServiceError as exc:
        notify(exc.detail, type='negative', multi_line=True)
        return False, None
    if success:
        notify(success, type='positive')
    return True, result


async def succeeded(action: Awaitable[object], success: str | None = None) -> bool:
    """Await ``action``; notify ``success`` or the error's detail; True when it worked."""
    return (await _outcome(action, success))[0]


async def attempt(action: Awaitable[T], success: str | None = None) -> T | None:
    """Await ``action``; notify ``success`` or the error's detail. None when it failed."""
    return (await _outcome(action, success))[1]


def rule_error(rule: Callable[[str], object]) -> Callable[[str], str | None]:
    """An input's live check from a service validation rule: the same sentence as the API."""

    def check(value: str) -> str | None:
        try:
            rule(value)
        except InvalidInput as exc:
            return exc.detail
        return None

    return check
