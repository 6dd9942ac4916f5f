from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Panel


@pytest.fixture
def panel(tmp_path: Path) -> Iterator[Panel]:
    """A running panel (subprocess) with its own data dir; stops its instances on exit."""
    running = Panel(tmp_path / 'data', AIKORE_STOP_ON_EXIT='1').start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope='module')
def shared_panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    """One panel for a module of tests that do not disturb each other (unique names)."""
    running = Panel(tmp_path_factory.mktemp('shared') / 'data', AIKORE_STOP_ON_EXIT='1').start()
    try:
        yield running
    finally:
        running.stop()
