"""The action buttons of one instance row (Start/Stop, Restart, Open, View, Logs, Script,
Terminal, Delete) as a single element; see ``row_actions.js`` for why."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nicegui import ui

STYLE = """
.aikore-actions { display: inline-flex; align-items: center; white-space: nowrap; }
.aikore-action {
  width: 26px; height: 26px; border: 0; border-radius: 50%; padding: 0; background: transparent;
  color: inherit; cursor: pointer; display: inline-flex; align-items: center; justify-content: center;
}
.aikore-action:hover:not(:disabled) { background: rgba(128, 128, 128, 0.2); }
.aikore-action:focus-visible { outline: 2px solid var(--q-primary); }
.aikore-action:disabled { opacity: 0.35; cursor: default; }
.aikore-action .material-icons { font-size: 18px; }
"""


class RowActions(ui.element, component='row_actions.js'):
    """Emits ``action`` with an action's name (``row_actions.js``: start-stop, restart, open, view,
    logs, script, terminal, delete); the row decides what each one does."""

    def __init__(self, on_action: Callable[[str], Awaitable[None] | None]) -> None:
        super().__init__()
        self.on('action', lambda event: on_action(str(event.args)))

    def show(self, *, running: bool, open_title: str, open_enabled: bool, view_title: str, view_enabled: bool) -> None:
        wanted = {
            'running': running,
            'open_title': open_title,
            'open_enabled': open_enabled,
            'view_title': view_title,
            'view_enabled': view_enabled,
        }
        if any(self.props.get(key) != value for key, value in wanted.items()):
            self.props.update(wanted)  # one update to the browser
