"""The launcher that idles Selkies' key timers (app/services/runtime/selkies_quiet.py), checked
against the Selkies the panel runs (the pinned one in its own venv): the patch must find what
it patches, or an upgrade silently brings the wake-ups back."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from app.config import Settings
from app.services.runtime import desktop

# Run by Selkies' own interpreter: the patched class answers the original intervals while a key
# (or a gamepad) is held and the idle ones otherwise.
PROBE = """
import json, runpy, sys
launcher = runpy.run_path(sys.argv[1])
assert launcher['quieten']()
from selkies.input_handler import WebRTCInput
handler = WebRTCInput.__new__(WebRTCInput)
handler.pressed_keys, handler.key_repeat_state, handler.key_suspended, handler.gamepad_heartbeats = {}, {}, {}, {}
handler.key_repeat_tick, handler.key_sweep_interval = 0.02, 0.1
seen = {'idle': [handler.key_repeat_tick, handler.key_sweep_interval]}
handler.pressed_keys[65] = 1.0
handler.key_repeat_state[65] = 1.5
seen['key held'] = [handler.key_repeat_tick, handler.key_sweep_interval]
handler.pressed_keys.clear(); handler.key_repeat_state.clear()
handler.gamepad_heartbeats[0] = 1.0
seen['gamepad'] = [handler.key_repeat_tick, handler.key_sweep_interval]
print(json.dumps(seen))
"""


def selkies_python(tmp_path: Path) -> str:
    programs = desktop.find_programs(Settings.from_env({'AIKORE_DATA_DIR': str(tmp_path / 'data')}))
    assert programs.selkies_python, f'no Python found for {programs.selkies}: run `make setup`'
    return programs.selkies_python


def test_key_timers_idle_only_while_nothing_is_held(tmp_path: Path) -> None:
    result = subprocess.run(
        [selkies_python(tmp_path), '-I', '-c', PROBE, str(desktop.QUIET_LAUNCHER)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {'idle': [0.25, 1.0], 'key held': [0.02, 0.1], 'gamepad': [0.25, 0.1]}


def test_interpreter_of_a_console_script(tmp_path: Path) -> None:
    """The launcher needs the console script's own Python: its #! line, or a python beside it."""
    bin_dir = tmp_path / 'venv' / 'bin'
    bin_dir.mkdir(parents=True)
    python = bin_dir / 'python'
    python.symlink_to('/usr/bin/python3')
    script = bin_dir / 'selkies'
    script.write_text(f'#!{python}\nimport sys\n')
    assert desktop.interpreter_of(script) == str(python)
    script.write_text("#!/bin/sh\n'''exec' /a/very/long/path/python \"$0\" \"$@\"\n' '''\n")  # pip's trampoline
    assert desktop.interpreter_of(script) == str(python)
    python.unlink()
    assert desktop.interpreter_of(script) == ''
    assert desktop.interpreter_of(tmp_path / 'missing') == ''
