"""The frame shared by every page: header with navigation, theme toggle and the account menu."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nicegui import app, ui

from .account_menu import account_menu


@contextmanager
def frame(title: str) -> Iterator[None]:
    dark = ui.dark_mode(value=app.storage.user.get('dark', True))

    def toggle_theme() -> None:
        dark.value = not dark.value
        app.storage.user['dark'] = dark.value

    ui.page_title(f'AiKore · {title}')
    with ui.header(elevated=True).classes('items-center gap-4 py-1 px-4 bg-slate-900 text-white'):
        ui.label('AiKore').classes('text-xl font-bold')
        ui.link('Dashboard', '/').classes('text-white no-underline')
        ui.link('Blueprints', '/blueprints').classes('text-white no-underline')
        ui.space()
        theme = ui.button(on_click=toggle_theme).props('flat round color=white').tooltip('Dark / light')
        # The icon shows what a click gives: a sun in the dark theme, a moon in the light one.
        theme.bind_icon_from(dark, 'value', backward=lambda on: 'light_mode' if on else 'dark_mode')
        account_menu()  # password, API token, other sessions, log out
    yield
