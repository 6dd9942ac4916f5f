"""The utility classes the pages use (``w-full``, ``text-lg``, ``dark:...``), as a stylesheet made
ahead of time (``utilities.css``, by ``python -m tests.utility_css``) instead of NiceGUI's UnoCSS
runtime, which generated it in every browser on every page load: about half of the main thread's
time before a dashboard showed its table, and the page stayed hidden until it was done.

The file is made by the same UnoCSS generator and preset (wind3) with NiceGUI's settings, from the
panel's source and NiceGUI's elements; ``tests/test_utility_css.py`` fails when it is out of date.
"""

from __future__ import annotations

from pathlib import Path

from nicegui import Client, ui

CSS_FILE = Path(__file__).with_name('utilities.css')
MARKER = 'id="aikore-utilities"'


def install() -> None:
    """Into every page's head, once (the UI tests import the app again for each test)."""
    if MARKER not in Client.shared_head_html:
        ui.add_head_html(f'<style {MARKER}>\n{CSS_FILE.read_text(encoding="utf-8")}</style>', shared=True)
