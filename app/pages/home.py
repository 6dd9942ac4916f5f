"""The landing page (the dashboard replaces it in its own issue)."""

from __future__ import annotations

from nicegui import ui


@ui.page('/')
def home() -> None:
    ui.dark_mode(True)
    with ui.column().classes('absolute-center items-center gap-4'):
        ui.label('AiKore').classes('text-4xl font-bold')
        ui.label('Control panel for AI WebUIs. The dashboard is on its way; the REST API is ready.')
        ui.link('API documentation (append ?token=<your API token>)', '/api/docs', new_tab=True)
