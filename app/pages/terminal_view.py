"""The Terminal tab: a bash in the instance's folder and environment, in a real terminal.

Keystrokes go to the shell's PTY, its output comes back to the xterm, and the PTY follows
the pane's size. The shell ends when the page closes or another instance is picked.
Shells are counted per browser (NiceGUI's browser id, which also keys ``app.storage.user``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nicegui import app, background_tasks, events, ui

from ..models import InstancePublic
from ..services.consoles import terminals
from ..services.consoles.terminals import Terminal
from ..services.core import Core
from .feedback import attempt
from .xterm_fit import FIT_CSS, follow_size
from .xterm_output import XtermOutput

PICK = 'Pick an instance (its Terminal button)'
TERMINAL_OPTIONS = {'cursorBlink': True, 'scrollback': 5000, 'fontSize': 13, 'convertEol': False}
SLOW_START = 3.0  # seconds without a prompt before the tab says what the shell is doing
SLOW_START_NOTICE = (
    'Starting the shell: your ~/.bashrc runs first, then the instance environment is set up; '
    'the prompt comes when both are done'
)


class TerminalView:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.owner = str(app.storage.browser.get('id', 'anonymous'))
        self.instance: InstancePublic | None = None
        self.shell: Terminal | None = None
        self.size = (80, 24)
        self._generation = 0
        self._heard = False  # the current shell has written something
        self._decoder = terminals.utf8_decoder()
        with ui.row().classes('items-center w-full gap-2'):
            self.title = ui.label(PICK).classes('font-medium')
            ui.space()
            self.restart = ui.button('New shell', icon='restart_alt', on_click=self.reopen).props('flat dense')
            self.restart.mark('terminal-new-shell')
            self.end = ui.button('End shell', icon='close', on_click=self.end_shell).props('flat dense')
            self.end.mark('terminal-end-shell')
        self.terminal = ui.xterm(TERMINAL_OPTIONS, on_data=self._typed, on_resize=self._resized)
        self.terminal.classes('w-full h-full min-h-[16rem] aikore-xterm').mark('terminal')
        self.output = XtermOutput(self.terminal)
        ui.add_css(FIT_CSS)
        follow_size(self.terminal)  # also before any shell: the pane's size is the PTY's first size
        self._buttons()
        ui.context.client.on_delete(self.close)  # tab or page closed: the shell ends

    async def show(self, instance: InstancePublic) -> None:
        """Open a shell for ``instance`` (the running one stays when it is already its shell)."""
        if self.instance is not None and self.instance.id == instance.id and self.shell is not None:
            self.fit()
            return
        self.end_quietly()
        self.instance = instance
        self.title.set_text(f'Terminal · {instance.name}')
        await self._open()

    def changed(self, instance: InstancePublic) -> None:
        """A rename: the title follows; an open shell says that it still has the old name."""
        if self.instance is not None and self.instance.id == instance.id:
            renamed = self.instance.name != instance.name
            self.instance = instance
            self.title.set_text(f'Terminal · {instance.name}')
            if renamed and self.shell is not None:
                self._notice(f'Renamed to {instance.name}: this shell keeps the old name and folder path; '
                             'End shell, then New shell, for the new ones')  # fmt: skip

    def forget(self, instance_id: int) -> None:
        """The shown instance was deleted: its shell ends, back to the empty view."""
        if self.instance is None or self.instance.id != instance_id:
            return
        self.close()
        self.instance = None
        self.title.set_text(PICK)
        self.output.reset()
        self._buttons()

    async def reopen(self) -> None:
        if self.instance is not None:
            self.end_quietly()
            await self._open()

    def end_shell(self) -> None:
        if self.shell is not None:
            self.end_quietly()
            self._notice('Shell ended.')

    async def _open(self) -> None:
        instance, generation = self.instance, self._generation
        if instance is None:
            return
        spec = await attempt(self.core.instances.shell_spec(instance.id))
        if spec is None:
            return
        self.output.reset()
        self._decoder = terminals.utf8_decoder()
        self._heard = False
        cols, rows = self.size
        ended = self._ended_callback(generation)
        shell = await attempt(self.core.terminals.open(self.owner, spec, self._output, ended, cols, rows))
        if shell is None:
            return
        if generation != self._generation or self.terminal.is_deleted:  # switched or closed meanwhile
            shell.close()
            return
        self.shell = shell
        self._buttons()
        self.fit()
        background_tasks.create(self._say_if_slow(generation), name='terminal slow start')

    async def _say_if_slow(self, generation: int) -> None:
        """A slow ~/.bashrc (pyenv, conda init) leaves a blank terminal: say what it waits for."""
        await asyncio.sleep(SLOW_START)
        waiting = generation == self._generation and self.shell is not None and not self._heard
        if waiting and not self.terminal.is_deleted:
            self._notice(SLOW_START_NOTICE)

    def fit(self) -> None:
        """Size the terminal to its pane and keep following the pane."""
        follow_size(self.terminal)

    def _typed(self, event: events.XtermDataEventArguments) -> None:
        if self.shell is not None:
            self.shell.write(event.data)

    def _resized(self, event: events.XtermResizeEventArguments) -> None:
        self.size = (event.cols, event.rows)
        if self.shell is not None:
            self.shell.resize(event.cols, event.rows)

    def _output(self, data: bytes) -> None:
        self._heard = True
        text = self._decoder.decode(data)
        if text:
            self.output.write(text)

    def _ended_callback(self, generation: int) -> Callable[[str], None]:
        """What to do when the shell of ``generation`` ends on its own (exit, or closed as the oldest)."""

        def ended(reason: str) -> None:
            if generation == self._generation:
                self.shell = None
                self._notice(reason)
                self._buttons()

        return ended

    def _notice(self, text: str) -> None:
        self.output.write(f'\r\n\x1b[33m[{text}]\x1b[0m\r\n')

    def _buttons(self) -> None:
        self.restart.set_visibility(self.instance is not None and self.shell is None)
        self.end.set_visibility(self.shell is not None)

    def end_quietly(self) -> None:
        """End the shell (another instance was picked, or the user asked)."""
        self.close()
        self._buttons()

    def close(self) -> None:
        """End the shell without touching the page (it may be gone)."""
        self._generation += 1  # a shell still being opened is closed as soon as it exists
        shell, self.shell = self.shell, None
        if shell is not None:
            shell.close()
