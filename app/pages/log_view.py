"""The Logs tab: the instance's recent output, then live text, in a real terminal view
(ANSI colours and ``\\r`` progress bars render as they would in a shell)."""

from __future__ import annotations

import json
from collections.abc import Callable

from nicegui import background_tasks, ui

from ..models import InstancePublic
from ..services.consoles.log_stream import LogText, skipped_marker
from ..services.core import Core
from .xterm_fit import FIT_CSS, follow_size
from .xterm_output import XtermOutput

PICK = 'Pick an instance (its Logs button)'
PAUSED_KEEP = 512 * 1024  # text held while paused; older text is dropped (and counted)
TERMINAL_OPTIONS = {'convertEol': True, 'scrollback': 20000, 'disableStdin': True, 'fontSize': 13}


class LogView:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.instance: InstancePublic | None = None
        self._unfollow: Callable[[], None] | None = None
        self.paused: list[str] = []
        self.paused_size = 0
        self.paused_dropped = 0  # lines dropped from the paused text
        self.following = True
        with ui.row().classes('items-center w-full gap-2'):
            self.title = ui.label(PICK).classes('font-medium')
            ui.space()
            self.follow = ui.button('Pause', icon='pause', on_click=self.toggle_follow).props('flat dense')
            self.search = ui.input(placeholder='Search').props('dense clearable').classes('w-40')
            self.search.on('keydown.enter', lambda: self.find(forward=True))
            ui.button(icon='keyboard_arrow_up', on_click=lambda: self.find(forward=False)).props('flat dense round')
            ui.button(icon='keyboard_arrow_down', on_click=lambda: self.find(forward=True)).props('flat dense round')
            self.download = ui.button(icon='download', on_click=self.download_log).props('flat dense round')
            self.download.tooltip('Download the full log')
            ui.button(icon='clear_all', on_click=self.clear).props('flat dense round').tooltip('Clear the view')
        self.terminal = ui.xterm(TERMINAL_OPTIONS).classes('w-full h-full min-h-[16rem] aikore-xterm')
        self.terminal.mark('log-terminal')
        self.output = XtermOutput(self.terminal)
        ui.add_css(FIT_CSS)
        self.fit()
        self.match_line = -1
        ui.context.client.on_delete(self.stop)

    async def show(self, instance: InstancePublic) -> None:
        if self.instance is not None and self.instance.id == instance.id:
            return
        self.stop()
        self.instance = instance
        self.title.set_text(f'Logs · {instance.name}')
        self.fit()
        self.output.reset()
        replay, unfollow = await self.core.log_streams.follow(
            self.core.instances.log_file(instance.name), self._received
        )
        if self.instance is not instance:  # another instance picked, or this one deleted, meanwhile
            unfollow()
            return
        self._unfollow = unfollow
        if replay:
            self.output.write(replay)

    def fit(self) -> None:
        """Fit the view to its pane and keep following it (its tab may have just been shown for the first time)."""
        follow_size(self.terminal)

    def changed(self, instance: InstancePublic) -> None:
        """A renamed instance: its log now lives under the new name, followed from there."""
        if self.instance is not None and self.instance.id == instance.id and self.instance.name != instance.name:
            self.stop()
            background_tasks.create(self.show(instance), name='logs follow a rename')

    def forget(self, instance_id: int) -> None:
        """The shown instance was deleted: stop following it, back to the empty view."""
        if self.instance is None or self.instance.id != instance_id:
            return
        self.stop()
        self.title.set_text(PICK)
        self.output.reset()

    def _received(self, item: LogText) -> None:
        if item.reset:
            self.clear_paused()
            self.output.reset()
        if not self.following:
            self.hold(item.text)
            return
        if item.text:
            self.output.write(item.text)

    def toggle_follow(self) -> None:
        self.following = not self.following
        self.follow.set_text('Pause' if self.following else 'Follow')
        self.follow.props(f'icon={"pause" if self.following else "play_arrow"}')
        if self.following and (self.paused or self.paused_dropped):
            marker = skipped_marker(self.paused_dropped) if self.paused_dropped else ''
            self.output.write(marker + ''.join(self.paused))
            self.clear_paused()

    def hold(self, text: str) -> None:
        """Keep ``text`` for when the user follows again; past PAUSED_KEEP the oldest goes."""
        self.paused.append(text)
        self.paused_size += len(text)
        while self.paused_size > PAUSED_KEEP and len(self.paused) > 1:
            dropped = self.paused.pop(0)
            self.paused_size -= len(dropped)
            self.paused_dropped += dropped.count('\n')

    def clear_paused(self) -> None:
        self.paused.clear()
        self.paused_size = self.paused_dropped = 0

    def clear(self) -> None:
        self.terminal.run_terminal_method('clear')

    async def find(self, forward: bool) -> None:
        """Select the next/previous line holding the search text in the terminal's buffer."""
        needle = (self.search.value or '').strip()
        if not needle:
            return
        script = f"""
        const term = getElement({self.terminal.id}).terminal;
        const buffer = term.buffer.active, needle = {json.dumps(needle.lower())};
        const total = buffer.length, forward = {json.dumps(forward)};
        let row = {self.match_line};
        for (let i = 0; i < total; i++) {{
            row = forward ? (row + 1) % total : (row - 1 + total) % total;
            const text = buffer.getLine(row)?.translateToString(true) ?? '';
            const col = text.toLowerCase().indexOf(needle);
            if (col >= 0) {{
                term.select(col, row, needle.length);
                term.scrollToLine(Math.max(0, row - 3));
                return row;
            }}
        }}
        return -1;
        """
        try:
            row = await ui.run_javascript(script)
        except TimeoutError:  # the browser left or is busy
            return
        if row is None or row < 0:
            ui.notify(f'"{needle}" is not in the view', type='warning')
            return
        self.match_line = int(row)

    def download_log(self) -> None:
        if self.instance is not None:
            ui.download.from_url(f'/download/logs/{self.instance.id}')

    def stop(self) -> None:
        if self._unfollow is not None:
            self._unfollow()
            self._unfollow = None
        self.instance = None
        self.clear_paused()
