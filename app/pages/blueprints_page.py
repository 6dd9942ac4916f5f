"""The blueprint library: stock blueprints to read (and copy), custom ones to create, edit,
rename and delete. Every change goes through ``BlueprintStore``, like the API's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nicegui import ui

from ..models import InstancePublic
from ..services import core as core_module
from ..services.catalog import validation
from ..services.catalog.blueprints import Blueprint
from ..services.core import Core
from .create_dialog import open_create_dialog
from .dashboard import show_on_dashboard
from .feedback import attempt, confirm, rule_error, succeeded
from .frame import frame

TEMPLATE = """#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = {name}
# aikore.category = Custom
# aikore.description = Describe what this blueprint runs
# aikore.ready = http
# aikore.stall_timeout = 180
### AIKORE-METADATA-END ###
#
# Runs in the instance's folder ($INSTANCE_DIR) with WEBUI_PORT, INSTANCE_NAME, MODELS_DIR,
# INSTANCE_OUTPUT_DIR, CUDA_VISIBLE_DEVICES, SUBFOLDER, ... set by AiKore.
# The app must listen on 127.0.0.1:$WEBUI_PORT; its output goes to the Logs tab.
set -euo pipefail
source "$AIKORE_FUNCTIONS"

aikore_log "Starting $INSTANCE_NAME on port $WEBUI_PORT"
exec python3 -m http.server "$WEBUI_PORT" --bind 127.0.0.1
"""
STOCK_NOTE = 'Stock blueprints are read-only. Copy this one to make a custom blueprint you can edit.'


blueprint_rule = rule_error(validation.blueprint_name)


def name_error(value: str, taken: Callable[[str], Blueprint | None]) -> str | None:
    """Why ``value`` cannot name a new blueprint, or None."""
    error = blueprint_rule(value)
    if error:
        return error
    existing = taken(value)
    if existing is not None:
        return f'A {existing.source} blueprint named {existing.name!r} already exists'
    return None


class BlueprintLibrary:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.blueprints: list[Blueprint] = []
        self.current: Blueprint | None = None
        self.saved_text = ''
        with ui.row().classes('w-full no-wrap max-sm:flex-wrap gap-4 p-2 items-start'):
            with ui.column().classes('w-80 max-sm:w-full gap-1'):
                with ui.row().classes('items-center w-full'):
                    ui.label('Blueprints').classes('text-lg font-bold')
                    ui.space()
                    ui.button('New blueprint', icon='add', on_click=self.new_dialog).mark('blueprint-new')
                self.catalog = ui.list().props('dense separator').classes('w-full').mark('blueprint-list')
            with ui.column().classes('grow min-w-0 gap-1 w-full'):
                self._toolbar()
                self.note = ui.label(STOCK_NOTE).classes('text-sm opacity-70').mark('blueprint-stock-note')
                self.editor = ui.codemirror('', language='Shell', theme='basicDark', on_change=self._changed)
                self.editor.classes('w-full h-[calc(100vh-170px)] min-h-[16rem]').mark('blueprint-editor')
                self.editor.map_key('Mod-s', self.save)
        self.dialogs = ui.element('div')  # dialogs live here, never inside the list that gets rebuilt
        self._render_selection()

    def _toolbar(self) -> None:
        with ui.row().classes('items-center w-full gap-2'):
            self.title = ui.label('Pick a blueprint').classes('font-medium').mark('blueprint-title')
            self.source = ui.badge()
            self.dirty_mark = ui.badge('unsaved', color='warning')
            ui.space()
            self.save_button = ui.button('Save', icon='save', on_click=self.save).props('flat dense')
            self.save_button.mark('blueprint-save')
            self.create_button = ui.button('New instance…', icon='add', on_click=self.create_instance)
            self.create_button.props('flat dense').mark('blueprint-create-instance')
            self.copy_button = ui.button('Copy…', icon='content_copy', on_click=self.copy_dialog).props('flat dense')
            self.copy_button.mark('blueprint-copy')
            self.rename_button = ui.button('Rename…', icon='drive_file_rename_outline', on_click=self.rename_dialog)
            self.rename_button.props('flat dense').mark('blueprint-rename')
            self.delete_button = ui.button('Delete', icon='delete', on_click=self.confirm_delete)
            self.delete_button.props('flat dense color=negative').mark('blueprint-delete')

    # ------------------------------------------------------------------ the list

    async def load(self) -> None:
        found = await attempt(asyncio.to_thread(self.core.blueprints.all))
        self.blueprints = found if found is not None else []
        self._render_list()
        if self.current is None and self.blueprints:  # never an empty editor: the first (stock Demo if there)
            await self.open(next((bp.name for bp in self.blueprints if bp.name == 'Demo'), self.blueprints[0].name))

    def _render_list(self) -> None:
        self.catalog.clear()
        with self.catalog:
            for source, heading in (('stock', 'Stock'), ('custom', 'Custom')):
                ui.item_label(heading).props('header').classes('font-bold')
                group = [bp for bp in self.blueprints if bp.source == source]
                for blueprint in group:
                    self._item(blueprint)
                if not group:
                    ui.item_label('None yet: New blueprint, or copy a stock one').props('caption')

    def _item(self, blueprint: Blueprint) -> None:
        meta = blueprint.meta
        with ui.item(on_click=lambda: self.pick(blueprint.name)).mark(f'blueprint-{blueprint.name}') as item:
            with ui.item_section():
                ui.item_label(blueprint.name)
                ui.item_label(' · '.join(part for part in (meta.category, meta.description) if part)).props(
                    'caption lines=2'
                )
            with ui.item_section().props('side'):
                stock = blueprint.source == 'stock'
                ui.badge('Stock' if stock else 'Custom', color='grey-7' if stock else 'primary')
        if self.current is not None and self.current.name == blueprint.name:
            item.props('active')

    def _find(self, name: str) -> Blueprint | None:
        return next((bp for bp in self.blueprints if bp.name.lower() == name.lower()), None)

    # ------------------------------------------------------------------ selection

    @property
    def editable(self) -> bool:
        return self.current is not None and self.current.source == 'custom'

    @property
    def dirty(self) -> bool:
        return self.editable and self.editor.value != self.saved_text

    def _changed(self, *_: object) -> None:
        self.dirty_mark.set_visibility(self.dirty)

    async def pick(self, name: str) -> None:
        """Open a blueprint, asking first when the one open has unsaved changes."""
        if self.current is not None and self.current.name == name:
            return
        if self.dirty and self.current is not None:
            confirm(f'Discard the unsaved changes to {self.current.name}?', 'Discard', lambda: self.open(name),
                    marker='confirm', parent=self.dialogs)  # fmt: skip
            return
        await self.open(name)

    async def open(self, name: str) -> None:
        opened = await attempt(asyncio.to_thread(self.core.blueprints.open, name))
        if opened is None:
            return
        self.current, self.saved_text = opened
        self.editor.set_value(self.saved_text)
        self._render_selection()
        self._render_list()

    def _render_selection(self) -> None:
        blueprint = self.current
        self.title.set_text(_title(blueprint))
        self.source.set_text('Stock' if blueprint and blueprint.source == 'stock' else 'Custom')
        self.source.set_visibility(blueprint is not None)
        self.note.set_visibility(blueprint is not None and blueprint.source == 'stock')
        self.editor.set_enabled(self.editable)
        for button in (self.save_button, self.rename_button, self.delete_button):
            button.set_visibility(self.editable)
        self.copy_button.set_visibility(blueprint is not None)
        self.create_button.set_visibility(blueprint is not None)
        self._changed()

    async def create_instance(self) -> None:
        """A new instance from the blueprint on screen (the create dialog, preselected); once
        created, the dashboard opens on it (unless this page holds unsaved edits)."""
        if self.current is not None:
            await open_create_dialog(self.core, self.current.name, on_created=self._created)

    def _created(self, instance: InstancePublic) -> None:
        if not self.dirty:
            show_on_dashboard(instance)

    # ------------------------------------------------------------------ actions

    async def save(self) -> bool:
        blueprint = self.current
        if blueprint is None or not self.editable:
            return False
        text = self.editor.value
        saving = asyncio.to_thread(self.core.blueprints.put_custom, blueprint.name, text.encode())
        if not await succeeded(saving, f'Blueprint {blueprint.name} saved'):
            return False
        self.saved_text = text
        await self.load()
        self.current = self._find(blueprint.name) or blueprint
        self._render_selection()
        return True

    def new_dialog(self) -> None:
        self._name_dialog('New custom blueprint', '', 'Create', self._create_from_template, self.pick)

    def copy_dialog(self) -> None:
        if self.current is not None:
            name = self.current.name
            self._name_dialog(
                f'Copy {name} as a custom blueprint', f'{name}-custom', 'Copy', self._create_copy, self.pick
            )

    def rename_dialog(self) -> None:
        if self.current is not None and self.editable:
            self._name_dialog(f'Rename {self.current.name}', self.current.name, 'Rename', self._rename)

    async def _create_from_template(self, name: str) -> bool:
        return await self._create(name, TEMPLATE.format(name=name))

    async def _create_copy(self, name: str) -> bool:
        return await self._create(name, self.editor.value)

    async def _create(self, name: str, text: str) -> bool:
        creating = asyncio.to_thread(self.core.blueprints.create_custom, name, text.encode())
        if await attempt(creating, f'Blueprint {name} created') is None:
            return False
        await self.load()
        return True

    async def _rename(self, new: str) -> bool:
        old = self.current
        if old is None:
            return False
        renamed = await attempt(
            asyncio.to_thread(self.core.blueprints.rename_custom, old.name, new), f'Renamed {old.name} to {new}'
        )
        if renamed is None:
            return False
        self.current = renamed
        await self.load()
        self._render_selection()
        return True

    async def confirm_delete(self) -> None:
        blueprint = self.current
        if blueprint is None or not self.editable:
            return

        async def delete() -> None:
            deleting = asyncio.to_thread(self.core.blueprints.delete_custom, blueprint.name)
            if await succeeded(deleting, f'Blueprint {blueprint.name} deleted'):
                self.current, self.saved_text = None, ''
                self.editor.set_value('')
                self._render_selection()
                await self.load()

        question = f'Delete the custom blueprint {blueprint.name}? Instances made from it keep their own launch.sh.'
        confirm(question, 'Delete', delete, marker='confirm', parent=self.dialogs)

    # ------------------------------------------------------------------ dialogs

    def _name_dialog(
        self,
        heading: str,
        value: str,
        action: str,
        then: Callable[[str], Awaitable[bool]],
        after: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """Ask for a blueprint name (checked as it is typed); ``then`` acts, ``after`` follows
        once the dialog is closed."""
        renaming = action == 'Rename'

        def error(text: str) -> str | None:
            found = self._find(text or '')
            same = renaming and found is not None and self.current is not None and found.name == self.current.name
            return name_error(text or '', lambda _: None if same else found)

        with self.dialogs, ui.dialog() as dialog, ui.card().classes('w-96'):
            ui.label(heading).classes('font-bold')
            name = ui.input('Blueprint name', value=value, validation=error).classes('w-full')
            name.mark('blueprint-name').props('autofocus')

            async def submit() -> None:
                problem = error(name.value or '')
                if problem:
                    ui.notify(problem, type='negative', multi_line=True)
                    return
                chosen = name.value
                if await then(chosen):
                    dialog.close()
                    if after is not None:
                        await after(chosen)

            name.on('keydown.enter', submit)
            with ui.row().classes('w-full justify-end'):
                ui.button('Cancel', on_click=dialog.close).props('flat')
                ui.button(action, on_click=submit).props('color=primary').mark('blueprint-name-ok')
        dialog.on_value_change(lambda e: None if e.value else dialog.delete())  # closed: gone
        dialog.open()


def _title(blueprint: Blueprint | None) -> str:
    if blueprint is None:
        return 'Pick a blueprint'
    shown = blueprint.meta.name
    return blueprint.name if shown == blueprint.name else f'{blueprint.name} · {shown}'


@ui.page('/blueprints')
async def blueprints_page() -> None:
    with frame('Blueprints'):
        library = BlueprintLibrary(core_module.current())
    await library.load()
