"""The Script tab: the instance's launch.sh in a code editor, saved with Save, Save &
Restart, Ctrl/Cmd-S, or kept as a new custom blueprint."""

from __future__ import annotations

import asyncio

from nicegui import ui

from ..models import InstancePublic
from ..services.catalog import validation
from ..services.core import Core
from .feedback import attempt, confirm, notify, rule_error, succeeded

PICK = 'Pick an instance (its Script button)'


class ScriptView:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.instance: InstancePublic | None = None
        self.saved_text = ''
        self.orphaned: str | None = None  # the deleted instance whose unsaved edit the editor still holds
        with ui.row().classes('items-center w-full gap-2'):
            self.title = ui.label(PICK).classes('font-medium')
            self.dirty_mark = ui.badge('unsaved', color='warning')
            ui.space()
            self.save_button = ui.button('Save', icon='save', on_click=self.save).props('flat dense')
            self.restart_button = ui.button('Save & Restart', icon='restart_alt', on_click=self.save_and_restart)
            self.restart_button.props('flat dense')
            self.save_as_button = ui.button('Save as blueprint…', icon='library_add', on_click=self.save_as_blueprint)
            self.save_as_button.props('flat dense')
        self.notice = ui.label().classes('text-sm text-warning').mark('script-notice')
        self.notice.set_visibility(False)
        self.editor = ui.codemirror('', language='Shell', theme='basicDark', on_change=self._changed)
        self.editor.classes('w-full h-full min-h-[16rem]').mark('script-editor')
        self.editor.map_key('Mod-s', self.save)
        self._changed()

    @property
    def dirty(self) -> bool:
        held = self.instance is not None or self.orphaned is not None
        return held and self.editor.value != self.saved_text

    def _changed(self, *_: object) -> None:
        self.dirty_mark.set_visibility(self.dirty)
        self.save_button.set_enabled(self.instance is not None)
        self.restart_button.set_enabled(self.instance is not None)
        self.save_as_button.set_enabled(bool(self.editor.value.strip()))  # a script to keep: shown or typed

    async def show(self, instance: InstancePublic) -> None:
        if self.instance is not None and self.instance.id == instance.id:
            return
        if self.dirty:
            owner = self.instance.name if self.instance else f'{self.orphaned} (deleted)'
            confirm(f'Discard the unsaved changes to {owner}?', 'Discard', lambda: self._load(instance))
            return
        await self._load(instance)

    def changed(self, instance: InstancePublic) -> None:
        """A rename: the title follows (the script is read and written by the instance's id)."""
        if self.instance is not None and self.instance.id == instance.id:
            self.instance = instance
            self.title.set_text(f'Script · {instance.name} · launch.sh')

    def forget(self, instance_id: int) -> None:
        """The shown instance was deleted. Without edits the editor empties; an unsaved edit stays on
        screen (to copy, or to keep with Save as blueprint…) but can no longer be saved to the instance."""
        if self.instance is None or self.instance.id != instance_id:
            return
        name, unsaved = self.instance.name, self.dirty
        self.instance = None
        if unsaved:
            self.orphaned = name
            self.title.set_text(f'Script · {name} (deleted)')
            self.notice.set_text(
                f'{name} was moved to the trash: these unsaved changes can no longer be saved to it. '
                'Copy them, keep them with Save as blueprint…, or pick another instance to discard them.'
            )
            self.notice.set_visibility(True)
        else:
            self._clear()
        self._changed()

    def _clear(self) -> None:
        self.orphaned, self.saved_text = None, ''
        self.title.set_text(PICK)
        self.editor.set_value('')
        self.notice.set_visibility(False)

    async def _load(self, instance: InstancePublic) -> None:
        text = await attempt(self.core.instances.read_script(instance.id))
        if text is None:
            return
        self.instance, self.saved_text, self.orphaned = instance, text, None
        self.notice.set_visibility(False)
        self.title.set_text(f'Script · {instance.name} · launch.sh')
        self.editor.set_value(text)
        self._changed()

    async def save(self) -> bool:
        if self.instance is None:
            if self.orphaned is not None:  # Ctrl/Cmd-S on the edit of a deleted instance
                notify(f'{self.orphaned} was moved to the trash: this script cannot be saved to it', type='warning')
            return False
        text = self.editor.value
        if not await succeeded(self.core.instances.write_script(self.instance.id, text.encode()), 'Script saved'):
            return False
        self.saved_text = text
        self._changed()
        return True

    async def save_and_restart(self) -> None:
        instance = self.instance
        if instance is None:
            return
        current = await self.core.instances.get(instance.id)

        async def go() -> None:
            if await self.save():
                await attempt(self.core.instances.restart(instance.id), f'Restarting {instance.name}')

        if current.status.is_running:
            confirm(f'{instance.name} is running: save and restart it now?', 'Save & Restart', go)
        else:
            await go()

    def save_as_blueprint(self) -> None:
        with ui.dialog() as dialog, ui.card():
            ui.label('Save as a custom blueprint').classes('font-bold')
            name = ui.input('Blueprint name', validation=_blueprint_name_error).mark('blueprint-name')

            async def create() -> None:
                if _blueprint_name_error(name.value or ''):
                    return
                text = self.editor.value.encode()
                saving = asyncio.to_thread(self.core.blueprints.put_custom, name.value, text)
                if await succeeded(saving, f'Blueprint {name.value} saved'):
                    dialog.close()

            with ui.row():
                ui.button('Cancel', on_click=dialog.close).props('flat')
                ui.button('Save', on_click=create).props('color=primary').mark('blueprint-save')
        dialog.open()


_blueprint_name_error = rule_error(validation.blueprint_name)
