"""A cache for NiceGUI's ``helpers.expects_arguments`` (installed once, at import).

Every NiceGUI element creates three observables (classes, style, props) whose change handler
is the bound method ``_update``, and NiceGUI asks ``inspect.signature`` whether that handler
takes arguments each time. With py-spy, that was about half of the panel's time to build a
50-row instance table (NiceGUI 3.18; upstream's #6108 moved the call to registration time but
still makes it once per observable). The answer depends only on the function, so for bound
methods of plain functions it is kept per function: a bounded set (methods defined in
classes), answered once each. Anything else goes to NiceGUI's own function unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType, MethodType
from typing import Any

from nicegui import helpers
from nicegui.helpers import functions

# NiceGUI's own function from its defining module, which is never replaced (the package
# attribute is): so importing this module again (the UI tests do) never wraps a wrapper.
_original: Callable[[Callable[..., Any]], bool] = functions.expects_arguments
_answers: dict[FunctionType, bool] = {}


def expects_arguments(func: Callable[..., Any]) -> bool:
    if isinstance(func, MethodType) and isinstance(func.__func__, FunctionType):
        answer = _answers.get(func.__func__)
        if answer is None:
            answer = _answers[func.__func__] = _original(func)
        return answer
    return _original(func)


def install() -> None:
    """Idempotent: NiceGUI's modules call ``helpers.expects_arguments`` through the package."""
    helpers.expects_arguments = expects_arguments
