"""The instance table: one row per instance, inline editing, actions, live status.

Rows subscribe to nothing themselves: the table listens to the service's instance events
once and updates only the row that changed, so a status change costs a few hundred bytes
on the websocket whatever the number of instances.
"""

from __future__ import annotations

import html
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import ui

from .. import lifecycle
from ..models import InstancePublic, InstanceStatus, InstanceUpdate, RestartPolicy
from ..services.catalog import validation
from ..services.catalog.instances import RESTART_FIELDS
from ..services.core import Core
from ..services.errors import Conflict, InvalidInput, ServiceError
from ..services.monitoring.sampler import InstanceStats, Sample
from ..services.net.urls import why_unreachable
from .feedback import attempt, confirm
from .row_actions import STYLE as ACTIONS_STYLE
from .row_actions import RowActions

log = logging.getLogger(__name__)

COLUMNS = '130px 110px 56px 40px 40px 104px 92px 168px 100px 104px auto'
ACCESS_LABELS = {'port': 'Host:port', 'subdomain': 'Subdomain', 'path': 'Path'}
HEADERS = ['Name', 'Blueprint', 'GPUs', 'Auto', 'Pers.', 'Status', 'PID · use', 'Port', 'Access', 'Restart', 'Actions']
# On a phone (< 600 px) the table shows name, status and actions; the other columns hide.
PHONE_COLUMNS = {'Name', 'Status', 'Actions'}
MINOR = 'aikore-minor'
PHONE_STYLE = f"""
@media (max-width: 599px) {{
  .aikore-table {{ grid-template-columns: minmax(80px, 1fr) auto auto !important; min-width: 0 !important; }}
  .aikore-table .{MINOR} {{ display: none !important; }}
  .aikore-table .aikore-actions {{ flex-wrap: wrap; max-width: 106px; }}
}}
"""
HEADER_TITLES = {
    'GPUs': 'CUDA_VISIBLE_DEVICES for the instance, e.g. 0 or 0,1 (empty: all)',
    'Auto': 'Start with the panel',
    'Pers.': 'Persistent desktop (Selkies): the app runs in a browser inside the server, streamed to Open and '
    'View, so its page survives closing yours; applies at the next start',
    'PID · use': 'Process ID; CPU, RAM and VRAM of its whole process tree',
    'Port': 'Public port, and whether it is mapped now (Activate)',
    'Restart': 'Restart policy when the app exits with an error',
}
STATUS_COLORS = {
    InstanceStatus.STOPPED: 'grey-7',
    InstanceStatus.STARTING: 'amber-8',
    InstanceStatus.STARTED: 'positive',
    InstanceStatus.STALLED: 'orange-9',
    InstanceStatus.STOPPING: 'amber-8',
    InstanceStatus.ERROR: 'negative',
}
GB = 1024**3
# How the fields that need a restart (``instances.RESTART_FIELDS``) are named in a message.
RESTART_LABELS = {'gpu_ids': 'GPUs', 'persistent': 'persistent mode', 'output_path': 'output folder'}

Select = Callable[[InstancePublic, str], Awaitable[None]]


def status_text(instance: InstancePublic) -> str:
    if instance.status == InstanceStatus.ERROR and instance.exit_code is not None:
        return f'error ({instance.exit_code})'
    return str(instance.status)


class InstanceRow:
    """The elements of one instance, kept so a change updates them in place."""

    def __init__(
        self,
        core: Core,
        instance: InstancePublic,
        categories: dict[str, str],
        select: Select,
        with_urls: Callable[[InstancePublic], InstancePublic],
    ) -> None:
        self.core = core
        self.with_urls = with_urls
        self.instance = instance
        self.select = select
        with ui.element('div').classes('contents') as self.container:
            self._build(categories)
        self.refresh(instance)

    def _build(self, categories: dict[str, str]) -> None:
        instance = self.instance
        self.name = ui.input(value=instance.name, on_change=self._mark_dirty).props('dense borderless')
        self.name.mark(f'name-{instance.id}')
        # One element, not a column of two labels: a 50-row table has 100 elements less to build.
        blueprint = html.escape(instance.blueprint)
        category = html.escape(categories.get(instance.blueprint, ''))
        cell = f'<div class="font-medium">{blueprint}</div><div class="text-xs opacity-60">{category}</div>'
        ui.html(cell, sanitize=False).classes(MINOR)  # both parts escaped above
        self.gpus = ui.input(value=_gpu_text(instance.gpu_ids), on_change=self._mark_dirty).props('dense borderless')
        self.autostart = ui.checkbox(value=instance.autostart, on_change=self._mark_dirty).props('dense')
        self.persistent = ui.checkbox(value=instance.persistent, on_change=self._mark_dirty).props('dense')
        for element in (self.gpus, self.autostart, self.persistent):
            element.classes(MINOR)
        with ui.row().classes('items-center gap-1 no-wrap'):
            self.spinner = ui.spinner(size='sm')
            self.status = ui.badge().mark(f'status-{instance.id}')
        with ui.column().classes(f'gap-0 {MINOR}'):
            self.pid = ui.label()
            self.usage = ui.label().classes('text-xs opacity-60 whitespace-nowrap').mark(f'usage-{instance.id}')
        with ui.row().classes(f'gap-1 no-wrap items-center {MINOR}'):
            self.port = ui.number(value=instance.public_port, format='%d', on_change=self._mark_dirty)
            self.port.props('dense borderless').classes('w-16')
            self.activate = ui.button(on_click=self.toggle_active).props('dense no-caps size=sm')
            self.activate.mark(f'activate-{instance.id}')
        # Not part of Update: the Open link follows the access pattern at once (seed protocol 6.1, step 5).
        self.access = ui.select(ACCESS_LABELS, value=instance.access_pattern.value, on_change=self.change_access)
        self.access.props('dense borderless').classes(MINOR).mark(f'access-{instance.id}')
        self.restart_policy = ui.select([p.value for p in RestartPolicy], value=instance.restart_policy.value,
                                        on_change=self._mark_dirty).props('dense borderless')  # fmt: skip
        self.restart_policy.classes(MINOR)
        with ui.row().classes('gap-0 no-wrap items-center'):
            self.update_button = ui.button('Update', on_click=self.save).props('dense color=primary size=sm')
            self.actions = RowActions(self.act).mark(f'actions-{instance.id}')

    # -- showing ---------------------------------------------------------------------

    def refresh(self, instance: InstancePublic) -> None:
        """Show a new state; fields the user is editing keep their edits."""
        previous, self.instance = self.instance, instance
        fields: list[tuple[Any, Any, Any]] = [
            (self.name, previous.name, instance.name),
            (self.gpus, _gpu_text(previous.gpu_ids), _gpu_text(instance.gpu_ids)),
            (self.autostart, previous.autostart, instance.autostart),
            (self.persistent, previous.persistent, instance.persistent),
            (self.port, previous.public_port, instance.public_port),
            (self.access, previous.access_pattern.value, instance.access_pattern.value),
            (self.restart_policy, previous.restart_policy.value, instance.restart_policy.value),
        ]
        for element, old, new in fields:
            if element.value == old:
                element.set_value(new)
        self.status.set_text(status_text(instance))
        self.status.props(f'color={STATUS_COLORS[instance.status]}')
        self.spinner.set_visibility(instance.status in lifecycle.BUSY)
        self.pid.set_text(str(instance.pid or '—'))
        # The row shows that the desktop is up (its X display), from the row data.
        desktop = instance.persistent_display
        title = f'Desktop up on display :{desktop}' if desktop is not None else 'Desktop not running'
        if self.persistent.props.get('title') != title:
            self.persistent.props(f'title="{title}"')
        self.actions.show(
            running=instance.status.is_running,
            open_title=instance.urls.open or why_unreachable(instance),
            open_enabled=instance.urls.open is not None,
            view_title=instance.urls.view or why_unreachable(instance, opening=False),
            view_enabled=instance.urls.view is not None,
        )
        self._show_activation(instance)
        self._mark_dirty()

    def show_usage(self, stats: InstanceStats | None) -> None:
        """CPU, RAM and VRAM of the instance's whole process tree (from the monitor)."""
        text = ''
        if stats is not None and self.instance.status.is_running:
            text = f'{stats.cpu_percent:.0f}% · {size(stats.memory_rss)}'
            if stats.gpu_memory:
                text += f' · {size(stats.gpu_memory)} VRAM'
        if self.usage.text != text:
            self.usage.set_text(text)

    def _show_activation(self, instance: InstancePublic) -> None:
        """Activate (grey) / Deactivate (green): the public port mapped now or not."""
        self.activate.set_text('Deactivate' if instance.active else 'Activate')
        self.activate.props(f'color={"positive" if instance.active else "grey-8"}')
        self.activate.set_enabled(instance.active or instance.status in lifecycle.ACTIVATABLE)

    def _mark_dirty(self, *_: Any) -> None:
        self.update_button.set_visibility(bool(self.changes()))

    def changes(self) -> dict[str, Any]:
        instance = self.instance
        current: dict[str, Any] = {
            'name': self.name.value,
            'autostart': self.autostart.value,
            'persistent': self.persistent.value,
            'public_port': int(self.port.value) if self.port.value is not None else None,
            'restart_policy': self.restart_policy.value,
        }
        if self.gpus.value != _gpu_text(instance.gpu_ids):
            current['gpu_ids'] = self.gpus.value
        original = instance.model_dump(mode='json')
        return {key: value for key, value in current.items() if key == 'gpu_ids' or original.get(key) != value}

    # -- actions ---------------------------------------------------------------------

    async def save(self, restart: bool = False) -> None:
        changes = self.changes()
        try:
            if 'gpu_ids' in changes:
                changes['gpu_ids'] = validation.gpu_id_text(changes['gpu_ids'])
        except InvalidInput as exc:
            ui.notify(exc.detail, type='negative')
            return
        result = await attempt(self.core.instances.update(self.instance.id, InstanceUpdate(**changes)))
        if result is None:
            return
        public, restart_required = result
        self.refresh(self.with_urls(public))
        if restart:
            await attempt(self.core.instances.restart(public.id), f'{public.name} saved and restarting')
        elif restart_required:
            self.offer_restart(public, [RESTART_LABELS[key] for key in changes if key in RESTART_FIELDS])
        else:
            ui.notify(f'{public.name} updated', type='positive')

    def offer_restart(self, public: InstancePublic, what: list[str]) -> None:
        confirm(
            f'{public.name} is running: {", ".join(what) or "this change"} applies at its next start.',
            'Restart now',
            lambda: attempt(self.core.instances.restart(public.id), f'Restarting {public.name}'),
            cancel='Later',
        )

    async def change_access(self, event: Any) -> None:
        if event.value == self.instance.access_pattern.value:
            return
        result = await attempt(self.core.instances.update(self.instance.id, InstanceUpdate(access_pattern=event.value)))
        if result is None:
            self.access.set_value(self.instance.access_pattern.value)
            return
        self.refresh(self.with_urls(result[0]))
        ui.notify(f'{self.instance.name}: access by {ACCESS_LABELS[event.value]}', type='positive')

    async def toggle_active(self, force: bool = False) -> None:
        instance, ports = self.instance, self.core.network.ports
        try:
            if instance.active:
                public = await ports.deactivate(instance.id)
                message = f'Public port {instance.public_port} of {instance.name} closed'
            else:
                public = await ports.activate(instance.id, force=force)
                message = f'{instance.name} is on public port {instance.public_port}'
        except Conflict as exc:
            if 'holder' in exc.extra and not force:
                self.confirm_takeover(exc.extra['holder']['name'])
            else:
                ui.notify(exc.detail, type='negative', multi_line=True)
            return
        except ServiceError as exc:
            ui.notify(exc.detail, type='negative', multi_line=True)
            return
        self.refresh(self.with_urls(public))
        ui.notify(message, type='positive')

    def confirm_takeover(self, holder: str) -> None:
        confirm(
            f'Public port {self.instance.public_port} is in use by {holder}. Take it over? {holder} will be '
            'deactivated and its open connections cut.',
            'Take over',
            lambda: self.toggle_active(force=True),
            marker='takeover',
        )

    async def act(self, name: str) -> None:
        """One of the row's action buttons (``RowActions``) was clicked."""
        handlers: dict[str, Callable[[], Any]] = {
            'start-stop': self.start_or_stop,
            'restart': self.restart_instance,
            'open': self.open_instance,
            'view': lambda: self.select(self.instance, 'View'),
            'logs': lambda: self.select(self.instance, 'Logs'),
            'script': lambda: self.select(self.instance, 'Script'),
            'terminal': lambda: self.select(self.instance, 'Terminal'),
            'delete': self.confirm_delete,
        }
        handler = handlers.get(name)
        if handler is None:
            log.warning('Unknown row action %r', name)
            return
        result = handler()
        if inspect.isawaitable(result):
            await result

    async def start_or_stop(self) -> None:
        instance = self.instance
        if instance.status.is_running:
            await attempt(self.core.instances.stop(instance.id), f'Stopping {instance.name}')
        else:
            await attempt(self.core.instances.start(instance.id), f'Starting {instance.name}')

    async def restart_instance(self) -> None:
        await attempt(self.core.instances.restart(self.instance.id), f'Restarting {self.instance.name}')

    def open_instance(self) -> None:
        if self.instance.urls.open:
            ui.navigate.to(self.instance.urls.open, new_tab=True)

    def confirm_delete(self) -> None:
        instance = self.instance
        confirm(
            f'Delete {instance.name}? Its folder moves to the trash, from where it can be restored.',
            'Delete',
            lambda: attempt(self.core.instances.delete(instance.id), f'{instance.name} moved to the trash'),
            color='negative',
            marker='confirm-delete',
        )

    def remove(self) -> None:
        self.container.delete()


def size(nbytes: int) -> str:
    return f'{nbytes / GB:.1f} GB' if nbytes >= GB else f'{nbytes / 1024**2:.0f} MB'


def _gpu_text(gpu_ids: list[int]) -> str:
    return ','.join(str(gpu) for gpu in gpu_ids)


class InstanceTable:
    """All rows, kept in step with the service's events."""

    def __init__(
        self,
        core: Core,
        select: Select,
        on_empty_change: Callable[[bool], object],
        with_urls: Callable[[InstancePublic], InstancePublic],
    ) -> None:
        self.core = core
        self.with_urls = with_urls
        self.select = select
        self.on_empty_change = on_empty_change
        self.rows: dict[int, InstanceRow] = {}
        self.categories: dict[str, str] = {}
        grid_style = f'grid-template-columns: {COLUMNS}'
        ui.add_css(ACTIONS_STYLE + PHONE_STYLE)
        with (
            ui.element('div').classes('w-full overflow-x-auto'),
            ui.grid().style(grid_style).classes('aikore-table items-center gap-x-2 gap-y-1 min-w-max'),
        ):
            for header in HEADERS:
                label = ui.label(header).classes('text-xs uppercase opacity-60')
                if header not in PHONE_COLUMNS:
                    label.classes(MINOR)
                if header in HEADER_TITLES:
                    label.props(f'title="{HEADER_TITLES[header]}"')
            self.grid = ui.element('div').classes('contents')

    def load(self, instances: list[InstancePublic], categories: dict[str, str]) -> None:
        """The first rows; ``categories``: blueprint name -> category, shown under the blueprint."""
        self.categories = categories
        for instance in instances:
            self.apply(instance)
        self.on_empty_change(not self.rows)

    def refresh_urls(self) -> None:
        """Routes changed (proxy reloaded): Open/View may have become reachable."""
        for row in self.rows.values():
            row.refresh(self.with_urls(row.instance))

    def apply(self, instance: InstancePublic) -> InstancePublic:
        """Show the instance (a new row or an update); answers it with its URLs for this browser."""
        instance = self.with_urls(instance)
        row = self.rows.get(instance.id)
        if row is not None:
            row.refresh(instance)
            return instance
        with self.grid:
            self.rows[instance.id] = InstanceRow(self.core, instance, self.categories, self.select, self.with_urls)
        self.on_empty_change(False)
        return instance

    def show_usage(self, sample: Sample) -> None:
        for instance_id, row in self.rows.items():
            row.show_usage(sample.instances.get(instance_id))

    def removed(self, instance_id: int) -> None:
        row = self.rows.pop(instance_id, None)
        if row is not None:
            row.remove()
        self.on_empty_change(not self.rows)
