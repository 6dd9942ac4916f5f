"""The instance table: one data-driven element (``instance_grid.js``, a Quasar table) fed with
one dict per instance.

Why a Quasar table and not AG Grid: Quasar is already on every page (no extra megabyte of
script to load), its body slot keeps the cells the panel had (badges, buttons, a select) as
plain Vue, and virtual scrolling renders only the rows on screen. The rows go out once with
the page; afterwards each change sends one row (``upsert``), so a status change costs a few
hundred bytes on the websocket whatever the number of instances. The states that allow an
action come from ``lifecycle``; this module only turns them into labels, colours and reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import events, helpers, ui

from .. import lifecycle
from ..models import AccessPattern, InstancePublic, InstanceUpdate, RestartPolicy
from ..services.catalog import validation
from ..services.catalog.instances import RESTART_FIELDS
from ..services.core import Core
from ..services.errors import Conflict, InvalidInput, ServiceError
from ..services.monitoring.sampler import Sample
from . import family_dialogs
from .feedback import attempt, confirm, notify
from .instance_rows import ACCESS_LABELS, NO_GPU, ROW_DEFAULTS, compact, row_data, usage_text

log = logging.getLogger(__name__)

# How the fields that need a restart (``instances.RESTART_FIELDS``) are named in a message.
RESTART_LABELS = {'gpu_ids': 'GPUs', 'persistent': 'persistent mode', 'output_path': 'output folder'}
# The browser's names of the editable fields -> the service's.
FIELDS = {
    'name': 'name',
    'gpus': 'gpu_ids',
    'autostart': 'autostart',
    'persistent': 'persistent',
    'port': 'public_port',
    'restart_policy': 'restart_policy',
}
STYLE = """
.aikore-grid { height: 100%; }
.aikore-grid .q-table__top { padding: 0 0 4px 0; }
.aikore-grid thead tr th { position: sticky; top: 0; z-index: 1; background: var(--aikore-cell-bg); }
.aikore-grid td, .aikore-grid th { padding: 2px 4px !important; height: 36px; }
.aikore-grid tr.aikore-selected td { background: rgba(25, 118, 210, 0.12); }
.aikore-filter { border: 1px solid rgba(128, 128, 128, 0.4); border-radius: 4px; padding: 2px 8px; width: 18rem;
  max-width: 60vw; background: transparent; color: inherit; }
.aikore-cell { border: 0; background: transparent; color: inherit; font: inherit; width: 8rem; padding: 2px; }
.aikore-cell:focus { outline: 1px solid var(--q-primary); }
.aikore-cell:disabled { opacity: 0.6; }
.aikore-narrow { width: 4.5rem; }
.aikore-grid .aikore-name { width: calc((var(--chars, 8) + 2) * 1ch); }
select.aikore-cell { width: auto; }
.body--dark select.aikore-cell option { background: #1d1d1d; }
.aikore-shared { font-size: 16px; color: var(--q-warning); cursor: help; }
.aikore-url { display: flex; align-items: center; gap: 2px; font-size: 11px; max-width: 11rem; }
.aikore-url a { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: inherit; opacity: 0.75; }
.aikore-copy { width: 20px; height: 20px; flex: none; }
.aikore-copy .material-icons { font-size: 14px; }
select.aikore-access { width: auto; cursor: pointer; }
.aikore-activate { border: 0; border-radius: 3px; padding: 2px 8px; font-size: 12px; line-height: 18px; color: white;
  cursor: pointer; white-space: nowrap; box-shadow: 0 1px 3px rgba(0, 0, 0, 0.25); }
.aikore-activate:hover:not(:disabled) { filter: brightness(1.15); }
.aikore-activate:focus-visible { outline: 2px solid var(--q-primary); outline-offset: 1px; }
.aikore-activate:disabled { opacity: 0.45; cursor: not-allowed; box-shadow: none; }
.aikore-status, .aikore-port { display: inline-flex; align-items: center; gap: 4px; white-space: nowrap; }
.aikore-actions { display: inline-flex; align-items: center; white-space: nowrap; }
/* A row with unsaved changes: Update and Revert on a line under the icons (nothing moves or is covered). */
.aikore-edits { display: flex; flex-wrap: wrap; gap: 4px; padding: 2px 0; }
.aikore-update, .aikore-revert { border: 0; border-radius: 4px; font-size: 12px; padding: 2px 8px; cursor: pointer; }
.aikore-update { background: var(--q-primary); color: white; }
.aikore-revert { background: rgba(128, 128, 128, 0.25); color: inherit; }
/* Name and actions stay in view when a narrow window scrolls the table sideways (opaque, so
   the cells passing under them do not show through). */
.aikore-grid { --aikore-cell-bg: white; }
.body--dark .aikore-grid { --aikore-cell-bg: var(--q-dark, #1d1d1d); }  /* the table's own surface */
.aikore-grid .aikore-stick-left, .aikore-grid .aikore-stick-right { position: sticky; z-index: 1;
  background: var(--aikore-cell-bg); }
.aikore-grid .aikore-stick-left { left: 0; }
.aikore-grid .aikore-stick-right { right: 0; }
.aikore-grid thead th.aikore-stick-left, .aikore-grid thead th.aikore-stick-right { z-index: 2; }
.aikore-grid tr.aikore-selected td.aikore-stick-left, .aikore-grid tr.aikore-selected td.aikore-stick-right {
  background: linear-gradient(rgba(25, 118, 210, 0.12), rgba(25, 118, 210, 0.12)), var(--aikore-cell-bg); }
.aikore-action {
  width: 26px; height: 26px; border: 0; border-radius: 50%; padding: 0; background: transparent;
  color: inherit; cursor: pointer; display: inline-flex; align-items: center; justify-content: center;
}
.aikore-action:hover:not(:disabled) { background: rgba(128, 128, 128, 0.2); }
.aikore-action:focus-visible { outline: 2px solid var(--q-primary); }
/* Disabled: in the text's colour (a dimmed red or green vanished on dark), at 0.3 (Quasar's own
   [disabled] rule holds opacity at 0.6 with !important; the filter halves that). */
.aikore-action:disabled { filter: opacity(0.5); cursor: not-allowed; }
.aikore-action .material-icons { font-size: 18px; }
.aikore-grid td.aikore-satellite { padding-left: 1.2rem !important; }
@media (max-width: 599px) {
  .aikore-grid .aikore-minor { display: none; }
  .aikore-grid .aikore-actions { flex-wrap: wrap; max-width: 106px; white-space: normal; }
  .aikore-grid .aikore-cell { width: 5rem; }
  .aikore-grid .aikore-port { flex-direction: column; align-items: flex-start; gap: 2px; }  /* number over Activate */
  .aikore-grid td, .aikore-grid th { padding: 2px 3px !important; }
  .aikore-filter { width: 10rem; }
  /* A phone's dialogs fill the screen down to their buttons: messages go to the top corner there. */
  .q-notifications__list--bottom { top: 0; bottom: auto; justify-content: flex-start !important; }
}
"""

Select = Callable[[InstancePublic, str], Awaitable[None]]


class InstanceGrid(ui.element, component='instance_grid.js'):
    """The table element. Its ``rows`` prop is the page's first state; later changes go as
    method calls carrying one row, and the prop is kept in step without re-sending it. Rows
    travel without their default values (``instance_rows.compact``); ``self.rows`` holds them whole."""

    def __init__(self) -> None:
        super().__init__()
        self._props['rows'] = []
        self._props['defaults'] = ROW_DEFAULTS
        self._props['selected'] = None
        self._props['access_options'] = [{'label': label, 'value': value} for value, label in ACCESS_LABELS.items()]
        self._props['policies'] = [policy.value for policy in RestartPolicy]
        self.rows: dict[int, dict[str, Any]] = {}
        self._sent: dict[int, dict[str, Any]] = {}  # the rows as the browser got them

    def _displayed_contents(self, *, only_visible: bool) -> list[Any]:
        """Names and statuses, for the user simulation's ``should_see``."""
        return [text for row in self.rows.values() for text in (row['name'], row['status'], row['usage'])]

    def _keep(self, key: str, value: Any) -> None:
        """Keeps a prop in step with what the browser has been told, without sending it again
        (``Props`` sends the whole element on any change)."""
        with self._props.suspend_updates():
            self._props[key] = value

    def load(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {row['id']: row for row in rows}
        self._sent = {key: compact(row) for key, row in self.rows.items()}
        self._props['rows'] = list(self._sent.values())  # sends the element, rows and all

    def upsert(self, row: dict[str, Any]) -> None:
        if self.rows.get(row['id']) == row:
            return
        self.rows[row['id']] = row
        sent = self._sent[row['id']] = compact(row)
        self._keep_rows()
        self.run_method('upsert', sent)

    def drop(self, instance_id: int) -> None:
        if self.rows.pop(instance_id, None) is not None:
            self._sent.pop(instance_id, None)
            self._keep_rows()
            self.run_method('remove', instance_id)

    def _keep_rows(self) -> None:
        self._keep('rows', list(self._sent.values()))

    def sent(self, instance_id: int) -> dict[str, Any]:
        return self._sent[instance_id]

    def show_usage(self, texts: dict[int, str]) -> None:
        changed = {key: text for key, text in texts.items() if key in self.rows and self.rows[key]['usage'] != text}
        for key, text in changed.items():
            self.rows[key]['usage'] = text
            self._sent[key] = compact(self.rows[key])
        if changed:
            self._keep_rows()
            self.run_method('usage', changed)

    def select(self, instance_id: int) -> None:
        if self._props['selected'] != instance_id:
            self._keep('selected', instance_id)
            self.run_method('select', instance_id)


class InstanceTable:
    """All rows, kept in step with the service's events; the row actions' handlers."""

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
        self.instances: dict[int, InstancePublic] = {}
        self.usage: dict[int, str] = {}
        self.categories: dict[str, str] = {}
        self.by_port: dict[int, set[int]] = {}  # public port -> instances assigned it
        ui.add_css(STYLE)
        self.grid = InstanceGrid().classes('w-full grow min-h-0').mark('instances')
        self.grid.on('action', self._on_action)
        self.grid.on('save', self._on_save)
        self.grid.on('access', self._on_access)
        self.grid.on('activate', self._on_activate)
        self.grid.on('pick', self._on_pick)
        self._shown = asyncio.Event()
        self.grid.on('shown', self._shown.set)

    # -- showing ---------------------------------------------------------------------

    def _on_port(self, port: int | None) -> list[tuple[str, int]]:
        """The instances assigned a public port, as (name, id) in name order."""
        return sorted((self.instances[key].name, key) for key in self.by_port.get(port, ())) if port else []

    def _row(self, instance: InstancePublic, on_port: list[tuple[str, int]] | None = None) -> dict[str, Any]:
        """``on_port``: ``_on_port`` of the instance's port, when the caller has it already."""
        on_port = self._on_port(instance.public_port) if on_port is None else on_port
        # The first four others are all that the row says of them (three names, "and more").
        sharing = [name for name, key in on_port[:5] if key != instance.id][:4]
        category = self.categories.get(instance.blueprint, '')
        parent = self.instances.get(instance.parent_id) if instance.parent_id is not None else None
        usage, parent_name = self.usage.get(instance.id, ''), parent.name if parent else ''
        return row_data(instance, category, usage, sharing, parent_name, self.core.network.proxy_on)

    def _index_port(self, instance_id: int, old: int | None, new: int | None) -> set[int]:
        """Moves an instance in the port index; answers the other instances whose sharing changed."""
        if old == new:
            return set()
        touched: set[int] = set()
        if old:
            self.by_port.get(old, set()).discard(instance_id)
            touched |= self.by_port.get(old, set())
        if new:
            touched |= self.by_port.setdefault(new, set())
            self.by_port[new].add(instance_id)
        return touched - {instance_id}

    def load(self, instances: list[InstancePublic], categories: dict[str, str]) -> None:
        """The first rows; ``categories``: blueprint name -> category, shown under the blueprint."""
        self.categories = categories
        self.instances = {instance.id: self.with_urls(instance) for instance in instances}
        for instance in self.instances.values():
            self._index_port(instance.id, None, instance.public_port)
        on_port = {port: self._on_port(port) for port in self.by_port}  # once a port, not once a row
        self.grid.load([self._row(i, on_port.get(i.public_port or 0, [])) for i in self.instances.values()])
        self.on_empty_change(not self.instances)

    def refresh_urls(self) -> None:
        """Routes changed (proxy reloaded): Open/View may have become reachable."""
        for instance in list(self.instances.values()):
            self.apply(instance)

    def apply(self, instance: InstancePublic) -> InstancePublic:
        """Show the instance (a new row or an update); answers it with its URLs for this browser."""
        instance = self.with_urls(instance)
        previous = self.instances.get(instance.id)
        new = previous is None
        self.instances[instance.id] = instance
        touched = self._index_port(instance.id, previous.public_port if previous else None, instance.public_port)
        self.grid.upsert(self._row(instance))
        for other in touched:
            self.grid.upsert(self._row(self.instances[other]))
        if new:
            self.on_empty_change(False)
        return instance

    def show_usage(self, sample: Sample) -> None:
        texts = {key: usage_text(instance, sample.instances.get(key)) for key, instance in self.instances.items()}
        self.usage = texts
        self.grid.show_usage(texts)

    def removed(self, instance_id: int) -> None:
        gone = self.instances.pop(instance_id, None)
        if gone is not None:
            for other in self._index_port(instance_id, gone.public_port, None):
                self.grid.upsert(self._row(self.instances[other]))
        self.usage.pop(instance_id, None)
        self.grid.drop(instance_id)
        self.on_empty_change(not self.instances)

    async def shown(self, timeout: float) -> None:
        """Until the browser has painted the first rows, ``timeout`` at most; at once where no
        browser draws (NiceGUI's user simulation)."""
        if helpers.is_user_simulation():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._shown.wait(), timeout)

    def highlight(self, instance_id: int) -> None:
        self.grid.select(instance_id)

    @property
    def selected(self) -> InstancePublic | None:
        """The highlighted instance (as it is now: a rename is followed), if it still exists."""
        chosen = self.grid.props['selected']
        return self.instances.get(chosen) if isinstance(chosen, int) else None

    # -- events from the browser -------------------------------------------------------

    def _instance(self, event: events.GenericEventArguments) -> InstancePublic | None:
        args = event.args if isinstance(event.args, dict) else {}
        return self.instances.get(int(args.get('id', -1)))

    async def _on_action(self, event: events.GenericEventArguments) -> None:
        instance = self._instance(event)
        if instance is not None:
            await self.act(instance, str(event.args.get('name')))

    async def _on_save(self, event: events.GenericEventArguments) -> None:
        instance = self._instance(event)
        if instance is not None:
            await self.save(instance, dict(event.args.get('changes') or {}))

    async def _on_access(self, event: events.GenericEventArguments) -> None:
        instance = self._instance(event)
        if instance is not None:
            await self.change_access(instance, str(event.args.get('value')))

    async def _on_activate(self, event: events.GenericEventArguments) -> None:
        instance = self._instance(event)
        if instance is not None:
            await self.toggle_active(instance)

    async def _on_pick(self, event: events.GenericEventArguments) -> None:
        instance = self._instance(event)
        if instance is not None:
            await self.select(instance, '')

    # -- actions ---------------------------------------------------------------------

    async def save(self, instance: InstancePublic, edits: dict[str, Any], restart: bool = False) -> None:
        """Update with the row's edited fields (browser names, see ``FIELDS``)."""
        changes = {FIELDS[key]: value for key, value in edits.items() if key in FIELDS}
        try:
            if 'gpu_ids' in changes:
                changes['gpu_ids'] = validation.gpu_id_text(str(changes['gpu_ids'] or ''))
            if 'public_port' in changes and changes['public_port'] is not None:
                changes['public_port'] = int(changes['public_port'])
            update = InstanceUpdate(**changes)
        except (InvalidInput, ValueError) as exc:
            notify(exc.detail if isinstance(exc, InvalidInput) else f'Invalid value: {exc}', type='negative')
            return
        result = await attempt(self.core.instances.update(instance.id, update))
        if result is None:
            return
        public, restart_required = result
        shown = self.apply(public)
        self.grid.run_method('saved', public.id)
        if restart:
            await attempt(self.core.instances.restart(public.id), f'{public.name} saved and restarting')
        elif restart_required:
            self.offer_restart(public, [RESTART_LABELS[key] for key in changes if key in RESTART_FIELDS])
        elif instance.active and not shown.active:
            notify(f'{public.name} updated; its public port changed, so it was deactivated', type='warning')
        elif public.gpu_ids and 'gpu_ids' in changes and not await asyncio.to_thread(self.core.instances.gpu_count):
            notify(f'{public.name} updated; no GPU is detected here: {NO_GPU}', type='warning', multi_line=True)
        else:
            notify(f'{public.name} updated', type='positive')

    def offer_restart(self, public: InstancePublic, what: list[str]) -> None:
        confirm(
            f'{public.name} is running: {", ".join(what) or "this change"} applies at its next start.',
            'Restart now',
            lambda: attempt(self.core.instances.restart(public.id), f'Restarting {public.name}'),
            cancel='Later',
        )

    async def change_access(self, instance: InstancePublic, value: str) -> None:
        if value == instance.access_pattern.value or value not in ACCESS_LABELS:
            return
        result = await attempt(
            self.core.instances.update(instance.id, InstanceUpdate(access_pattern=AccessPattern(value)))
        )
        if result is None:
            self.grid.run_method('upsert', self.grid.sent(instance.id))  # back to the stored pattern
            return
        self.apply(result[0])
        notify(f'{instance.name}: access by {ACCESS_LABELS[value]}', type='positive')

    async def toggle_active(self, instance: InstancePublic, force: bool = False) -> None:
        ports = self.core.network.ports
        try:
            if instance.active:
                public = await ports.deactivate(instance.id)
                message = f'Public port {instance.public_port} of {instance.name} closed'
            else:
                before = {key: other.active for key, other in self.instances.items()}
                public = await ports.activate(instance.id, force=force)
                message = f'{instance.name} is on public port {instance.public_port}'
                if force:
                    port = instance.public_port
                    taken = [other.name for key, other in self.instances.items()
                             if before.get(key) and key != instance.id and other.public_port == port]  # fmt: skip
                    if taken:
                        message += f'; {", ".join(taken)} was deactivated'
        except Conflict as exc:
            if 'holder' in exc.extra and not force:
                self.confirm_takeover(instance, exc.extra['holder']['name'])
            else:
                notify(exc.detail, type='negative', multi_line=True)
            return
        except ServiceError as exc:
            notify(exc.detail, type='negative', multi_line=True)
            return
        self.apply(public)
        notify(message, type='positive')

    def confirm_takeover(self, instance: InstancePublic, holder: str) -> None:
        confirm(
            f'Public port {instance.public_port} is in use by {holder}. Take it over? {holder} will be '
            'deactivated and its open connections cut.',
            'Take over',
            lambda: self.toggle_active(self.instances.get(instance.id, instance), force=True),
            marker='takeover',
        )

    async def act(self, instance: InstancePublic, name: str) -> None:
        """One of the row's action buttons was clicked."""
        tabs = {'view': 'View', 'logs': 'Logs', 'script': 'Script', 'terminal': 'Terminal'}
        if name in tabs:
            await self.select(instance, tabs[name])
        elif name == 'start-stop':
            await self.start_or_stop(instance)
        elif name == 'restart':
            await attempt(self.core.instances.restart(instance.id), f'Restarting {instance.name}')
        elif name == 'open':
            if instance.urls.open:
                ui.navigate.to(instance.urls.open, new_tab=True)
        elif name == 'delete':
            self.confirm_delete(instance)
        elif name in family_dialogs.ACTIONS:
            await family_dialogs.ACTIONS[name](self.core, instance, list(self.instances.values()))
        else:
            log.warning('Unknown row action %r', name)

    async def start_or_stop(self, instance: InstancePublic) -> None:
        if instance.status.is_running:
            await attempt(self.core.instances.stop(instance.id), f'Stopping {instance.name}')
        else:
            await attempt(self.core.instances.start(instance.id), f'Starting {instance.name}')

    def confirm_delete(self, instance: InstancePublic) -> None:
        if instance.status in lifecycle.CANCELLABLE:
            confirm(
                f'Cancel the copy of {instance.name}? Nothing of it is kept.',
                'Cancel the copy',
                lambda: attempt(self.core.instances.delete(instance.id), f'The copy of {instance.name} was cancelled'),
                color='negative',
                cancel='Go on copying',
                marker='confirm-delete',
            )
            return
        if instance.status not in lifecycle.DELETABLE:  # the button is disabled; a stale page may still ask
            notify(f'Stop {instance.name} before deleting it (it is {instance.status})', type='warning')
            return
        confirm(
            f'Delete {instance.name}? Its folder moves to the trash, from where it can be restored.',
            'Delete',
            lambda: attempt(self.core.instances.delete(instance.id), f'{instance.name} moved to the trash'),
            color='negative',
            marker='confirm-delete',
        )
