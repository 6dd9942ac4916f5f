"""The account menu of the page header: change the password, replace the API token, log out
every other session, log out. Thin over ``Sessions`` and ``Core.rotate_api_token`` (the same
services as /api/account)."""

from __future__ import annotations

import asyncio

from nicegui import ui

from ..api.deps import request_cookie
from ..services import core as core_module
from ..services.access.sessions import PASSWORD_MIN, SESSION_COOKIE
from ..services.errors import ServiceError


def own_session() -> str | None:
    """This browser's session cookie (kept when the others are logged out)."""
    return request_cookie(ui.context.client.request.scope, SESSION_COOKIE)


def account_menu() -> None:
    with (
        ui.button(icon='manage_accounts').props('flat round color=white').tooltip('Account') as button,
        ui.menu().props('auto-close') as menu,
    ):
        ui.menu_item('Change password…', on_click=open_password_dialog).mark('account-password')
        ui.menu_item('New API token…', on_click=open_token_dialog).mark('account-token')
        ui.menu_item('Log out other sessions', on_click=logout_others).mark('account-logout-others')
        ui.separator()
        ui.menu_item('Log out', on_click=lambda: ui.navigate.to('/logout')).mark('account-logout')
    button.on_click(menu.open)
    button.mark('account-menu')


async def logout_others() -> None:
    closed = await asyncio.to_thread(core_module.current().sessions.close_others, own_session())
    ui.notify(f'{closed} other session(s) logged out' if closed else 'No other session was open', type='positive')


def open_password_dialog() -> None:
    keep = own_session()
    with ui.dialog() as dialog, ui.card().classes('w-96'):
        ui.label('Change password').classes('text-lg font-bold')
        current = ui.input('Current password', password=True).props('autocomplete=current-password').classes('w-full')
        new = ui.input('New password', password=True).props('autocomplete=new-password').classes('w-full')
        again = ui.input('New password again', password=True).props('autocomplete=new-password').classes('w-full')
        ui.label(f'At least {PASSWORD_MIN} characters. Every other session is logged out.').classes('text-sm')
        error = ui.label().classes('text-negative')
        current.mark('password-current')
        new.mark('password-new')
        again.mark('password-again')
        error.mark('password-error')

        async def save() -> None:
            if new.value != again.value:
                error.set_text('The two new passwords differ')
                return
            sessions = core_module.current().sessions
            try:
                closed = await asyncio.to_thread(sessions.change_password, current.value, new.value, keep)
            except ServiceError as exc:
                error.set_text(exc.detail)
                return
            dialog.close()
            ui.notify(f'Password changed; {closed} other session(s) logged out', type='positive')

        with ui.row().classes('w-full justify-end'):
            ui.button('Cancel', on_click=dialog.close).props('flat')
            ui.button('Change', on_click=save).mark('password-save')
    dialog.open()


def open_token_dialog() -> None:
    with ui.dialog() as dialog, ui.card().classes('w-[32rem]'):
        ui.label('New API token').classes('text-lg font-bold')
        ui.label(
            'The current token stops working at once: scripts and tools that use it must get the new one.'
        ).classes('text-sm')
        shown = ui.input('New token').props('readonly').classes('w-full font-mono').mark('token-value')
        shown.set_visibility(False)
        error = ui.label().classes('text-negative').mark('token-error')

        async def rotate() -> None:
            try:
                token = await core_module.current().rotate_api_token()
            except ServiceError as exc:
                error.set_text(exc.detail)
                return
            shown.value = token
            shown.set_visibility(True)
            confirm.set_visibility(False)
            ui.notify('New API token made: copy it now, it is shown only here', type='positive')

        with ui.row().classes('w-full justify-end'):
            ui.button('Close', on_click=dialog.close).props('flat')
            confirm = ui.button('Replace the token', on_click=rotate, color='negative').mark('token-rotate')
    dialog.open()
