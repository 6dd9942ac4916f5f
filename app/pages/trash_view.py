"""The Trash tab: deleted instances, with Restore and Delete forever."""

from __future__ import annotations

from datetime import datetime

from nicegui import background_tasks, ui

from ..services.core import Core
from .feedback import attempt, confirm


def shown_time(iso: str) -> str:
    """'2026-12-01T20:21:52Z' -> '2026-12-01 20:21' in the panel's local time (raw text if unreadable)."""
    try:
        moment = datetime.fromisoformat(iso.replace('Z', '+00:00'))
    except ValueError:
        return iso
    return moment.astimezone().strftime('%Y-%m-%d %H:%M')


class TrashView:
    def __init__(self, core: Core) -> None:
        self.core = core
        with ui.row().classes('items-center w-full'):
            ui.label('Deleted instances').classes('font-medium')
            ui.space()
            ui.button(icon='refresh', on_click=self.refresh).props('flat dense round').tooltip('Refresh')
        self.list = ui.column().classes('w-full gap-1').mark('trash-list')
        ui.timer(0, self.refresh, once=True)

    def refresh_soon(self) -> None:
        """Called from service events, outside any page context."""
        background_tasks.create(self.refresh(), name='trash refresh')

    async def refresh(self) -> None:
        entries = await self.core.instances.trash()
        self.list.clear()
        with self.list:
            if not entries:
                ui.label('The trash is empty.').classes('opacity-60')
            for entry in entries:
                with ui.row().classes('items-center w-full gap-2'):
                    ui.label(entry.name).classes('font-medium')
                    deleted = shown_time(entry.deleted_at)
                    ui.label(f'{entry.blueprint} · deleted {deleted}').classes('text-sm opacity-60')
                    ui.space()
                    ui.button('Restore', on_click=lambda e=entry.name: self.restore(e)).props('flat dense').mark(
                        f'restore-{entry.name}'
                    )
                    ui.button('Delete forever', on_click=lambda e=entry.name: self.purge(e)).props(
                        'flat dense color=negative'
                    )

    async def restore(self, name: str) -> None:
        if await attempt(self.core.instances.restore(name), f'{name} restored') is not None:
            await self.refresh()

    def purge(self, name: str) -> None:
        async def purge() -> None:
            await attempt(self.core.instances.purge(name), f'{name} deleted for good')
            await self.refresh()

        confirm(f'Delete {name} and its files for good? This cannot be undone.', 'Delete forever', purge,
                color='negative')  # fmt: skip
