"""The panel's log never carries a client's control characters.

Request URLs, headers and names reach log lines (NiceGUI's "<url> not found", a refused
request, an exception about a path). A raw ESC, CR or newline in them would let a client
forge log lines or drive the terminal of whoever reads the log. A filter on every handler of
the panel escapes control characters in each record's message and arguments: the "whole class"
fix, whatever logger wrote the line.
"""

from __future__ import annotations

import logging
import re
from typing import Any

CONTROL = re.compile(r'[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]')  # all but TAB
NAMED = {'\n': '\\n', '\r': '\\r'}
PLAIN = (int, float, bool, type(None))


def escape(text: str) -> str:
    """``text`` with its control characters written as ``\\n``, ``\\r``, ``\\x1b``, ``\\u2028``..."""
    if not CONTROL.search(text):
        return text
    return CONTROL.sub(lambda m: NAMED.get(m.group(), repr(m.group())[1:-1]), text)


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, PLAIN):
        return value
    shown = str(value)
    return escape(shown) if CONTROL.search(shown) else value


class EscapeControlCharacters(logging.Filter):
    """Escapes the message and arguments of every record the handler writes (the tuple shape
    of the arguments is kept: uvicorn's access formatter unpacks it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = escape(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_safe(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _safe(value) for key, value in record.args.items()}
        return True


def install() -> None:
    """Put the filter on every handler configured now (the root's, uvicorn's); call again after
    a library configured more."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(existing, EscapeControlCharacters) for existing in handler.filters):
                handler.addFilter(EscapeControlCharacters())
