"""Terminal views (Logs, Terminal) fit their pane: as many columns and rows as the box holds, at
any window width and again whenever the box changes size (window resize, splitter drag, a tab
shown, a phone turned). Without it an xterm keeps 80 columns and overflows a phone's screen."""

from __future__ import annotations

from nicegui import ui

# Waits for the element to be mounted (the call may arrive with the element itself), then fits
# it on every size change of its box; a hidden box (an inactive tab, 0 px wide) is left alone.
FOLLOW_SIZE_JS = """
(function follow(id, tries) {
    const view = getElement(id);
    if (!view || !view.fit_addon || !view.$el) {
        if (tries > 0) setTimeout(() => follow(id, tries - 1), 50);
        return;
    }
    if (!view.aikoreResize) {
        view.aikoreResize = new ResizeObserver(() => { if (view.$el.offsetWidth > 0) view.fit(); });
        view.aikoreResize.observe(view.$el);
    }
    if (view.$el.offsetWidth > 0) view.fit();
})(%d, 200);
"""
# The xterm never makes its box wider than the pane (its canvas is sized by the fit, not the box by it).
FIT_CSS = '.aikore-xterm { min-width: 0; overflow: hidden; }'


def follow_size(terminal: ui.xterm) -> None:
    """Fit ``terminal`` to its box now and whenever the box changes size."""
    terminal.client.run_javascript(FOLLOW_SIZE_JS % terminal.id)
