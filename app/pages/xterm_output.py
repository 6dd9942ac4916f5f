"""What the server writes into a terminal view (Logs, Terminal) before the browser has made it.

A tab's content is made when the tab is first shown, and on a slow browser (a phone, a busy
machine) the xterm is mounted after the server's first writes have arrived. NiceGUI drops a
method call for an element that is not mounted yet, so the log's replay or a shell's first
prompt was lost: a blank view until new output came. Text written before the mount is kept
here and written once the browser says the element is mounted (Vue's ``vnodeMounted``).
"""

from __future__ import annotations

from nicegui import ui

EARLY_KEEP = 1024 * 1024  # characters kept until the mount; older text goes first


class XtermOutput:
    def __init__(self, terminal: ui.xterm) -> None:
        self.terminal = terminal
        self.mounted = False
        self._early: list[str] = []
        self._early_size = 0
        terminal.on('vnodeMounted', self._on_mounted, args=[])

    def write(self, text: str) -> None:
        if self.mounted:
            self.terminal.write(text)
            return
        self._early.append(text)
        self._early_size += len(text)
        while self._early_size > EARLY_KEEP and len(self._early) > 1:
            self._early_size -= len(self._early.pop(0))

    def reset(self) -> None:
        """Clear the view (and what waits for it)."""
        self._early.clear()
        self._early_size = 0
        self.terminal.run_terminal_method('reset')

    def _on_mounted(self) -> None:
        self.mounted = True
        if self._early:
            text = ''.join(self._early)
            self._early.clear()
            self._early_size = 0
            self.terminal.write(text)
