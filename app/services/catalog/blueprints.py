"""Blueprints: discovery of stock and custom scripts, the one metadata parser, custom CRUD.

A blueprint is ``<Name>.sh``; its API name is the file stem. The metadata block is::

    ### AIKORE-METADATA-START ###
    # aikore.name = ComfyUI
    # aikore.ready = http            (http | tcp | log:<regex> | none)
    # aikore.stall_timeout = 600
    # aikore.path = keep             (keep | strip | none: how the app lives under /instance/<slug>/)
    # aikore.gpu = required          (required | optional | none: what it needs; shown, not enforced)
    # aikore.disk = 20 GB            (about what an install takes; shown)
    ### AIKORE-METADATA-END ###
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Conflict, Forbidden, InvalidInput, NotFound
from ..files import SCRIPT, write_atomic
from . import validation

log = logging.getLogger(__name__)

START_MARKER = '### AIKORE-METADATA-START ###'
END_MARKER = '### AIKORE-METADATA-END ###'
META_LINE_RE = re.compile(r'#\s*aikore\.([A-Za-z0-9_]+)\s*=\s*(.*?)\s*')
DEFAULT_STALL_TIMEOUT = 180.0
FUNCTIONS_FILE = 'functions.sh'
# How an app lives under /instance/<slug>/ (DESIGN "Origins"): ``keep`` gets the full path (it knows
# its base path: SUBFOLDER, X-Forwarded-Prefix), ``strip`` gets the path without the prefix (it only
# uses relative URLs), ``none`` only works at a root (its subdomain or public port).
PATH_MODES = ('keep', 'strip', 'none')
DEFAULT_PATH_MODE = 'keep'


class BlueprintError(InvalidInput):
    """A blueprint's metadata block cannot be used."""


@dataclass(frozen=True)
class ReadyCheck:
    """How the supervisor decides an instance is ready: http, tcp, log (regex) or none."""

    kind: str = 'http'
    pattern: re.Pattern[str] | None = None

    def __str__(self) -> str:
        return f'log:{self.pattern.pattern}' if self.kind == 'log' and self.pattern else self.kind


@dataclass(frozen=True)
class BlueprintMeta:
    name: str
    category: str = ''
    description: str = ''
    venv_type: str | None = None
    venv_path: str | None = None
    ready: ReadyCheck = field(default_factory=ReadyCheck)
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    path_mode: str | None = None  # None: not declared here (the blueprint's, else keep)
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Blueprint:
    name: str
    source: str  # 'stock' | 'custom'
    path: Path
    meta: BlueprintMeta


def parse_metadata(text: str, default_name: str) -> BlueprintMeta:
    """Read the metadata block of a blueprint; a script without one gets the defaults."""
    values = _metadata_values(text)
    return BlueprintMeta(
        name=values.pop('name', '') or default_name,
        category=values.pop('category', ''),
        description=values.pop('description', ''),
        venv_type=values.pop('venv_type', None) or None,
        venv_path=values.pop('venv_path', None) or None,
        ready=parse_ready(values.pop('ready', 'http')),
        stall_timeout=_parse_stall_timeout(values.pop('stall_timeout', '')),
        path_mode=parse_path_mode(values.pop('path', '')),
        extra=values,
    )


def _metadata_values(text: str) -> dict[str, str]:
    lines = text.splitlines()
    stripped = [line.strip() for line in lines]
    if START_MARKER not in stripped:
        return {}
    start = stripped.index(START_MARKER)
    try:
        end = stripped.index(END_MARKER, start + 1)
    except ValueError:
        raise BlueprintError(f'Metadata block opened with {START_MARKER!r} is never closed') from None
    values: dict[str, str] = {}
    for line in stripped[start + 1 : end]:
        match = META_LINE_RE.fullmatch(line)
        if match:
            values[match.group(1).lower()] = match.group(2)
    return values


def parse_ready(raw: str) -> ReadyCheck:
    value = raw.strip()
    if value.lower() in {'http', 'tcp', 'none'}:
        return ReadyCheck(kind=value.lower())
    if value.lower().startswith('log:'):
        expression = value[4:]
        if not expression:
            raise BlueprintError('aikore.ready = log:<regex> needs a regular expression after "log:"')
        try:
            return ReadyCheck(kind='log', pattern=re.compile(expression))
        except re.error as exc:
            raise BlueprintError(f'aikore.ready regex {expression!r} is invalid: {exc}') from None
    raise BlueprintError(f'aikore.ready = {value!r} is not one of http, tcp, log:<regex>, none')


def parse_path_mode(raw: str) -> str | None:
    value = raw.strip().lower()
    if not value:
        return None
    if value not in PATH_MODES:
        raise BlueprintError(f'aikore.path = {raw!r} is not one of keep, strip, none')
    return value


def _parse_stall_timeout(raw: str) -> float:
    if not raw:
        return DEFAULT_STALL_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise BlueprintError(f'aikore.stall_timeout = {raw!r} is not a number of seconds') from None
    if not 0 < value <= 7 * 24 * 3600:
        raise BlueprintError(f'aikore.stall_timeout = {raw!r} must be between 0 and 604800 seconds')
    return value


class BlueprintStore:
    """Stock blueprints (read-only, shipped) and custom ones (``<data>/blueprints``)."""

    def __init__(self, stock_dir: Path, custom_dir: Path) -> None:
        self.stock_dir = stock_dir
        self.custom_dir = custom_dir

    @property
    def functions_path(self) -> Path:
        return self.stock_dir / FUNCTIONS_FILE

    def all(self) -> list[Blueprint]:
        stock = self._scan(self.stock_dir, 'stock')
        stock_names = {bp.name.lower() for bp in stock}
        custom = [bp for bp in self._scan(self.custom_dir, 'custom') if bp.name.lower() not in stock_names]
        return stock + custom

    def get(self, name: str) -> Blueprint:
        """Exact name first, else the one blueprint whose name matches ignoring case."""
        validation.blueprint_name(name)
        found = self._find(name)
        if found is None:
            raise NotFound(f'Unknown blueprint {name!r}')
        return found

    def read(self, name: str) -> str:
        return self.open(name)[1]

    def open(self, name: str) -> tuple[Blueprint, str]:
        """The blueprint and its script text, found once."""
        blueprint = self.get(name)
        return blueprint, blueprint.path.read_text(encoding='utf-8')

    def put_custom(self, name: str, body: bytes) -> bool:
        """Create or replace a custom blueprint; True when it was created."""
        validation.blueprint_name(name)
        text = validation.script_text(body)
        parse_metadata(text, name)
        existing = self._find(name)
        if existing is not None and existing.source == 'stock':
            raise Conflict(f'{existing.name!r} is a stock blueprint; choose another name for a custom one')
        if existing is not None and existing.name != name:
            raise Conflict(f'A custom blueprint named {existing.name!r} already exists (names ignore case)')
        self._write_custom(name, text)
        return existing is None

    def delete_custom(self, name: str) -> None:
        blueprint = self.get(name)
        if blueprint.source == 'stock':
            raise Forbidden(f'{blueprint.name!r} is a stock blueprint and cannot be deleted')
        blueprint.path.unlink()

    def create_custom(self, name: str, body: bytes) -> Blueprint:
        """A new custom blueprint; refuses a name any blueprint already has (ignoring case)."""
        validation.blueprint_name(name)
        existing = self._find(name)
        if existing is not None:
            raise Conflict(f'A {existing.source} blueprint named {existing.name!r} already exists')
        return self._write_custom(name, validation.script_text(body))

    def _write_custom(self, name: str, text: str) -> Blueprint:
        meta = parse_metadata(text, name)  # refused before anything is written
        self.custom_dir.mkdir(parents=True, exist_ok=True)
        path = self.custom_dir / f'{name}.sh'
        write_script_atomic(path, text)
        return Blueprint(name=name, source='custom', path=path, meta=meta)

    def rename_custom(self, old: str, new: str) -> Blueprint:
        """Rename a custom blueprint (its file); stock names and taken names are refused."""
        validation.blueprint_name(new)
        blueprint = self.get(old)
        if blueprint.source == 'stock':
            raise Forbidden(f'{blueprint.name!r} is a stock blueprint and cannot be renamed; copy it instead')
        taken = self._find(new)
        if taken is not None and taken.path != blueprint.path:
            raise Conflict(f'A {taken.source} blueprint named {taken.name!r} already exists; choose another name')
        target = self.custom_dir / f'{new}.sh'
        if target.exists() and not target.samefile(blueprint.path):
            raise Conflict(f'{target} already exists; choose another name')
        if new != blueprint.name:
            blueprint.path.rename(target)  # same folder: atomic, and case-only renames work too
            log.info('Renamed custom blueprint %s to %s', blueprint.name, new)
        return self.get(new)

    def _find(self, name: str) -> Blueprint | None:
        every = self.all()
        for blueprint in every:
            if blueprint.name == name:
                return blueprint
        matches = [bp for bp in every if bp.name.lower() == name.lower()]
        return matches[0] if len(matches) == 1 else None

    @staticmethod
    def _scan(folder: Path, source: str) -> list[Blueprint]:
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.glob('*.sh'), key=lambda p: p.name.lower()):
            stem = path.stem
            if path.name == FUNCTIONS_FILE or not validation.BLUEPRINT_NAME_RE.fullmatch(stem):
                continue
            try:
                meta = parse_metadata(path.read_text(encoding='utf-8'), stem)
            except (OSError, UnicodeDecodeError, BlueprintError) as exc:
                log.warning('Skipping blueprint %s: %s', path, exc)
                continue
            found.append(Blueprint(name=stem, source=source, path=path, meta=meta))
        return found


def write_script_atomic(target: Path, text: str) -> None:
    """Write a script (blueprint or launch.sh), executable, through a temporary file and a rename."""
    write_atomic(target, text, SCRIPT)
