"""The cached ``expects_arguments`` answers exactly as NiceGUI's own, and is installed."""

from __future__ import annotations

import functools
from typing import Any

from nicegui import helpers
from nicegui.helpers import functions

from app.pages import speedups


class Handlers:
    def none(self) -> None: ...

    def one(self, event: Any) -> None: ...

    def optional(self, event: Any = None) -> None: ...

    def variadic(self, *args: Any, **kwargs: Any) -> None: ...


def plain(event: Any) -> None: ...


def test_same_answers_as_nicegui() -> None:
    first, second = Handlers(), Handlers()
    callables = [
        first.none, first.one, first.optional, first.variadic, second.none, second.one,
        plain, lambda: None, lambda e: None, functools.partial(plain, 1), print,
    ]  # fmt: skip
    for func in callables * 2:  # the second round is answered from the cache
        assert speedups.expects_arguments(func) == speedups._original(func), func


def test_installed_by_the_app() -> None:
    import app.main  # noqa: F401 - installs it at import

    # (the UI tests import app.pages afresh: compare by name, and check nothing wraps a wrapper)
    assert helpers.expects_arguments.__module__ == 'app.pages.speedups'
    assert speedups._original is functions.expects_arguments
