"""Starts Selkies with its key timers asleep while no key is held.

Run by Selkies' own interpreter (its venv), never imported by the panel: ``python -I
selkies_quiet.py <selkies arguments>``. Selkies 2.1.0's input handler wakes every 20 ms to
auto-repeat held keys and every 100 ms to release keys whose heartbeats stopped, whether or
not a key is held and whether or not anybody watches: about 60 event-loop wake-ups a second,
most of an idle desktop's CPU (no flag turns them off). Both loops read their interval from
an attribute before each sleep, so here that attribute answers the original interval while a
key is held and a longer one while none is. Nothing changes for a user: a key's first repeat
is due 0.5 s after its press and a stale key is released after 2 s without heartbeats, both
longer than the idle intervals. With another Selkies version (the attributes differ) it runs
unchanged and says so in its log.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

IDLE_REPEAT_TICK = 0.25  # s between auto-repeat checks while no key is held
IDLE_SWEEP_INTERVAL = 1.0  # s between stale-key sweeps while no key is held
NEEDED = ('_key_repeat_loop', '_key_stale_sweep')

log = logging.getLogger('aikore.selkies')


def _held_keys(handler: Any) -> bool:
    return bool(handler.pressed_keys or handler.key_repeat_state or handler.key_suspended)


def _held_keys_or_gamepads(handler: Any) -> bool:
    return bool(handler.pressed_keys or handler.gamepad_heartbeats)


def _interval(name: str, idle: float, busy: Callable[[Any], bool]) -> property:
    """An instance attribute ``name`` that reads as set while ``busy`` and at least ``idle`` otherwise."""
    slot = f'_aikore_{name}'

    def get(handler: Any) -> float:
        value: float = handler.__dict__.get(slot, idle)
        try:
            return value if busy(handler) else max(value, idle)
        except AttributeError:  # read before the handler made its key tables
            return value

    def set_(handler: Any, value: float) -> None:
        handler.__dict__[slot] = value

    return property(get, set_)


def quieten() -> bool:
    """Patches Selkies' input handler class; False (and nothing changed) if it is not the one expected."""
    try:
        from selkies import input_handler
    except ImportError:
        return False
    handler_class = getattr(input_handler, 'WebRTCInput', None)
    if handler_class is None or not all(hasattr(handler_class, method) for method in NEEDED):
        return False
    handler_class.key_repeat_tick = _interval('key_repeat_tick', IDLE_REPEAT_TICK, _held_keys)
    handler_class.key_sweep_interval = _interval('key_sweep_interval', IDLE_SWEEP_INTERVAL, _held_keys_or_gamepads)
    return True


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or '.') != here]  # no panel module shadows
    quiet = quieten()
    from selkies.__main__ import main as selkies_main

    if not quiet:
        log.warning('this Selkies is not the one expected: its key timers run unchanged')
    sys.argv[0] = 'selkies'
    selkies_main()


if __name__ == '__main__':
    main()
