"""The Trash tab: deleted instances, with Restore and Delete forever; and instance folders that
no instance knows of (after a lost database), with Adopt and Move to trash."""

from __future__ import annotations

from datetime import datetime

from nicegui import background_tasks, ui

from ..services.core import Core
from ..services.monitoring.disk import human_bytes
from .disk_view import DiskView
from .feedback import attempt, confirm, notify


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
            ui.button('Empty trash', on_click=self.empty).props('flat dense color=negative').mark('empty-trash')
            ui.button(icon='refresh', on_click=self.refresh).props('flat dense round').tooltip('Refresh')
        self.disk = DiskView(core)
        self.orphans = ui.column().classes('w-full gap-1').mark('orphan-list')
        self.list = ui.column().classes('w-full gap-1').mark('trash-list')
        ui.timer(0, self.refresh, once=True)

    def shown(self) -> None:
        """The tab came into view: the disk figures are brought up to date (counted in a thread)."""
        background_tasks.create(self.disk.show_current(), name='disk figures')

    def refresh_soon(self) -> None:
        """Called from service events, outside any page context."""
        background_tasks.create(self.refresh(), name='trash refresh')

    async def refresh(self) -> None:
        await self.refresh_orphans()
        entries = await self.core.trash.entries()
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

    async def refresh_orphans(self) -> None:
        orphans = await self.core.orphans.find()
        self.orphans.clear()
        with self.orphans:
            if not orphans:
                return
            ui.label('Instance folders without an instance (the database does not know them)').classes(
                'font-medium text-orange-7'
            )
            for orphan in orphans:
                with ui.row().classes('items-center w-full gap-2'):
                    ui.label(orphan.name).classes('font-medium')
                    ui.label(orphan.blueprint or 'no blueprint named').classes('text-sm opacity-60')
                    ui.space()
                    adopt = ui.button('Adopt', on_click=lambda o=orphan.name: self.adopt(o)).props('flat dense')
                    adopt.mark(f'adopt-{orphan.name}')
                    if not orphan.adoptable:
                        adopt.disable()
                        adopt.tooltip('Not a valid instance name, or the name is taken: move it to the trash')
                    ui.button('Move to trash', on_click=lambda o=orphan.name: self.trash_orphan(o)).props(
                        'flat dense'
                    ).mark(f'trash-orphan-{orphan.name}')

    async def adopt(self, name: str) -> None:
        if await attempt(self.core.adopt_orphan(name), f'{name} adopted: it is an instance again') is not None:
            await self.refresh()

    async def trash_orphan(self, name: str) -> None:
        if await attempt(self.core.trash_orphan(name), f'{name} moved to the trash') is not None:
            await self.refresh()

    async def restore(self, name: str) -> None:
        if await attempt(self.core.trash.restore(name), f'{name} restored') is not None:
            await self.refresh()

    def purge(self, name: str) -> None:
        async def purge() -> None:
            freed = await attempt(self.core.trash.purge(name))
            if freed is not None:
                notify(f'{name} deleted for good: {human_bytes(freed)} freed', type='positive')
            await self.refresh()

        confirm(f'Delete {name} and its files for good? This cannot be undone.', 'Delete forever', purge,
                color='negative')  # fmt: skip

    def empty(self) -> None:
        async def empty() -> None:
            done = await attempt(self.core.trash.empty())
            if done is not None:
                names, freed = done
                notify(f'{len(names)} trash entries deleted for good: {human_bytes(freed)} freed', type='positive')
            await self.refresh()
            await self.disk.refresh()

        confirm('Delete everything in the trash for good? This cannot be undone.', 'Empty trash', empty,
                color='negative', marker='confirm-empty-trash')  # fmt: skip
