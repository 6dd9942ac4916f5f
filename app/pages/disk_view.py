"""A small disk pane (in the Trash tab): the data volume's free space, the models folder, the
trash and each instance's size (code, environment, outputs, logs), with a Refresh button."""

from __future__ import annotations

from nicegui import ui

from ..services.core import Core
from ..services.monitoring.disk import DiskReport, human_bytes
from .feedback import attempt

COLUMNS = [
    {'name': 'name', 'label': 'Instance', 'field': 'name', 'align': 'left'},
    {'name': 'code', 'label': 'Code', 'field': 'code'},
    {'name': 'environment', 'label': 'Environment', 'field': 'environment'},
    {'name': 'outputs', 'label': 'Outputs', 'field': 'outputs'},
    {'name': 'logs', 'label': 'Logs', 'field': 'logs'},
    {'name': 'total', 'label': 'Total', 'field': 'total'},
]


class DiskView:
    def __init__(self, core: Core) -> None:
        self.core = core
        with ui.row().classes('items-center w-full gap-2'):
            ui.label('Disk').classes('font-medium')
            self.summary = ui.label('not counted yet').classes('text-sm opacity-70').mark('disk-summary')
            ui.space()
            ui.button(icon='refresh', on_click=self.refresh).props('flat dense round').tooltip(
                'Count the sizes again'
            ).mark('disk-refresh')
        self.table = ui.table(columns=COLUMNS, rows=[], row_key='name').props('dense flat').classes('w-full')
        self.table.mark('disk-table')
        self.counting = False

    async def show_current(self) -> None:
        """When the pane comes into view: the figures counted last at once, then, when they are stale
        (none yet, instances created or deleted since, or old), counted again in a worker thread."""
        report = self.core.disk.kept
        if report is not None:
            self.show(report)
        if self.counting:
            return
        ids = {instance.id for instance in await self.core.instances.list_all()}
        if not self.core.disk.stale(ids):
            return
        self.counting = True
        if report is None:
            self.summary.set_text('counting…')
        try:
            report = await self.core.disk.report(refresh=True)
        except OSError as exc:  # an unreadable data folder: the service logged it at start
            self.summary.set_text(f'cannot count: {exc.strerror or exc}')
            return
        finally:
            self.counting = False
        if not self.table.is_deleted:
            self.show(report)

    async def refresh(self) -> None:
        report = await attempt(self.core.disk.report(refresh=True))
        if report is not None:
            self.show(report)

    def show(self, report: DiskReport) -> None:
        volume = report.volume
        self.summary.set_text(
            f'{human_bytes(volume.free)} free of {human_bytes(volume.total)}'
            f'{" (low)" if volume.low else ""} · models {human_bytes(report.models)}'
            f' · trash {human_bytes(report.trash)}'
        )
        self.summary.classes(replace='text-sm ' + ('text-negative font-bold' if volume.low else 'opacity-70'))
        self.table.rows = [
            {'name': item.name, **{key: human_bytes(getattr(item, key)) for key in ('code', 'environment', 'outputs',
                                                                                   'logs', 'total')}}
            for item in report.instances
        ]  # fmt: skip
        self.table.update()
