"""An instance's Python environment: rebuild at the next start, what runs in it, package pins.

- Rebuild: a marker file ``.rebuild`` in the instance's folder; ``functions.sh`` (the venv and
  conda helpers, and ``aikore_rebuild_requested``) removes and re-creates the environment at the
  next start, then removes the marker. Satellites run the parent's environment, so a rebuild of
  a parent first stops its running satellites (refused with the list unless asked to).
- Versions: a short Python program run by the environment's own interpreter (off the event
  loop, with a timeout) reads the installed versions without importing torch (seconds
  otherwise), then ``pip check``.
- Pins: ``pins.txt`` in the instance's folder, pip constraints (``functions.sh`` exports
  ``PIP_CONSTRAINT`` to it, so every pip install of the blueprint honours it).
A satellite has none of these of its own: they are its parent's (answered, or refused for writes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from sqlalchemy.engine import Engine

from ...config import Settings
from ...lifecycle import RUNNING
from ...lifecycle import InstanceStatus as S
from ...models import Instance, VersionsReport
from ..errors import Conflict, InvalidInput
from ..files import write_atomic
from ..runtime import launch
from ..runtime.supervisor import Supervisor
from . import store
from .blueprints import BlueprintError
from .copies import is_environment

log = logging.getLogger(__name__)

PINS_FILE = 'pins.txt'
PINS_MAX = 64 * 1024
CHECK_TIMEOUT = 60.0
PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, platform, re
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
cuda = None
spec = importlib.util.find_spec('torch') if version('torch') else None
if spec is not None and spec.submodule_search_locations:
    path = os.path.join(list(spec.submodule_search_locations)[0], 'version.py')
    try:
        match = re.search(r"^cuda\s*(?::\s*\S+\s*)?=\s*'([^']+)'", open(path).read(), re.M)
        cuda = match.group(1) if match else None
    except OSError:
        pass
print(json.dumps({'python': platform.python_version(), 'torch': version('torch'), 'cuda': cuda,
                  'xformers': version('xformers'), 'pip': version('pip')}))
"""


class EnvironmentService:
    def __init__(self, settings: Settings, engine: Engine, supervisor: Supervisor) -> None:
        self.settings = settings
        self.engine = engine
        self.supervisor = supervisor

    def _owner(self, instance_id: int) -> tuple[Instance, Instance]:
        """The instance, and the one whose folder holds its environment (a satellite's parent)."""
        instance = store.get(self.engine, instance_id)
        if instance.status == S.INSTALLING:
            raise Conflict(f'{instance.name!r} is being copied: wait for the copy to end')
        owner = store.get(self.engine, instance.parent_id) if instance.parent_id is not None else instance
        return instance, owner

    def folder(self, instance: Instance) -> Path:
        return launch.instance_dir(self.settings, instance.name)

    # ------------------------------------------------------------------ rebuild

    async def rebuild(self, instance_id: int, stop_satellites: bool = False) -> list[str]:
        """Mark the environment for re-creation at the next start; answers the satellites stopped."""
        instance, owner = await asyncio.to_thread(self._owner, instance_id)
        if owner is not instance:
            raise Conflict(
                f'{instance.name!r} is a satellite: it runs the environment of {owner.name!r}; rebuild that one'
            )
        satellites = await asyncio.to_thread(store.satellites_of, self.engine, instance_id)
        running = [row for row in satellites if row.status in RUNNING]
        if running and not stop_satellites:
            names = [row.name for row in running]
            raise Conflict(
                f'The satellites {", ".join(names)} of {instance.name!r} run its environment: they are stopped '
                'first (confirm with stop_satellites=true)',
                satellites=names,
            )
        for row in running:
            if row.id is not None:
                await self.supervisor.stop(row.id)
                await self.supervisor.wait_stopped(row.id)
        marker = launch.rebuild_marker(self.settings, owner.name)
        await asyncio.to_thread(write_atomic, marker, 'requested by the panel\n')
        log.info('Environment of %s marked for a rebuild at its next start', instance.name)
        return [row.name for row in running]

    # ------------------------------------------------------------------ versions

    async def versions(self, instance_id: int) -> VersionsReport:
        _, owner = await asyncio.to_thread(self._owner, instance_id)
        return await asyncio.to_thread(self._versions, owner)

    def _versions(self, owner: Instance) -> VersionsReport:
        env = find_environment(self.settings, owner)
        python = str(env / 'bin' / 'python') if env is not None else 'python3'
        found = _run_json([python, '-I', '-c', PROBE])
        problems = _pip_check(python) if found.get('pip') else None
        return VersionsReport(
            environment=str(env) if env is not None else None,
            python=found.get('python'),
            torch=found.get('torch'),
            cuda=found.get('cuda'),
            xformers=found.get('xformers'),
            driver=nvidia_driver(),
            pip_check=problems,
        )

    # ------------------------------------------------------------------ pins

    async def read_pins(self, instance_id: int) -> str:
        _, owner = await asyncio.to_thread(self._owner, instance_id)
        try:
            return await asyncio.to_thread((self.folder(owner) / PINS_FILE).read_text, encoding='utf-8')
        except FileNotFoundError:
            return ''

    async def write_pins(self, instance_id: int, body: bytes) -> None:
        instance, owner = await asyncio.to_thread(self._owner, instance_id)
        if owner is not instance:
            raise Conflict(f'{instance.name!r} is a satellite: its packages are pinned by {owner.name!r}')
        text = validate_pins(body)
        path = self.folder(owner) / PINS_FILE
        if text.strip():
            await asyncio.to_thread(write_atomic, path, text if text.endswith('\n') else text + '\n')
        else:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        log.info('Pins of %s saved (%d lines)', owner.name, len(text.splitlines()))


def validate_pins(body: bytes) -> str:
    """The text of a constraints file whose every line (comments and blanks aside) is one requirement."""
    if len(body) > PINS_MAX:
        raise InvalidInput(f'Pins are limited to {PINS_MAX} bytes')
    try:
        text = body.decode('utf-8')
    except UnicodeDecodeError:
        raise InvalidInput('Pins must be UTF-8 text') from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(' #', 1)[0].strip()
        if not line or line.startswith('#'):
            continue
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise InvalidInput(
                f'Line {number} is not a requirement such as torch==2.7.1: {raw.strip()!r} ({exc})'
            ) from None
    return text


def find_environment(settings: Settings, owner: Instance) -> Path | None:
    """The instance's venv or conda env: the one its launch.sh metadata names, else the first
    one found in its folder (two levels deep)."""
    folder = launch.instance_dir(settings, owner.name)
    try:
        meta = launch.read_meta(settings, owner)
        if meta.venv_path and is_environment(folder / meta.venv_path):
            return (folder / meta.venv_path).resolve()
    except (Conflict, OSError, BlueprintError):
        pass
    candidates = [folder, *sorted(p for p in folder.glob('*') if p.is_dir()), *sorted(folder.glob('*/*'))]
    return next((path for path in candidates if path.is_dir() and is_environment(path)), None)


def _run_json(command: list[str]) -> dict[str, str | None]:
    """The last line of the command's output as JSON; the command is instance code: no panel secrets."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False, env=launch.without_secrets()
        )
        found = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout else {}
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        log.warning('The version check with %s failed: %s', command[0], exc)
        return {}
    return found if isinstance(found, dict) else {}


def _pip_check(python: str) -> list[str] | None:
    try:
        done = subprocess.run(
            [python, '-m', 'pip', 'check', '--disable-pip-version-check'],
            capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False,
            env={**launch.without_secrets(), 'PIP_NO_INPUT': '1'},
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning('pip check with %s failed: %s', python, exc)
        return None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return [] if done.returncode == 0 else lines


def nvidia_driver() -> str | None:
    """The loaded NVIDIA driver's version (from the kernel module), else None."""
    try:
        text = Path('/proc/driver/nvidia/version').read_text()
    except OSError:
        return None
    match = re.search(r'Kernel Module\s+(?:for \S+\s+)?([0-9][0-9.]+)', text)
    return match.group(1) if match else None
