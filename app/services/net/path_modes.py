"""Which path mode (``aikore.path``: keep | strip | none) each instance's app declares.

The instance's own ``launch.sh`` metadata wins (a user can fix a custom app without a release),
then the blueprint it was made from, then ``keep``. Read at every route render and URL answer,
so the result is cached per script file (its size and modification time).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...config import Settings
from ..catalog.blueprints import DEFAULT_PATH_MODE, BlueprintError, BlueprintStore, parse_metadata
from ..errors import ServiceError
from ..runtime import launch

log = logging.getLogger(__name__)


class PathModes:
    def __init__(self, settings: Settings, blueprints: BlueprintStore) -> None:
        self.settings = settings
        self.blueprints = blueprints
        self._cache: dict[tuple[str, str], tuple[tuple[int, int] | None, str]] = {}

    def mode(self, name: str, blueprint: str) -> str:
        script = launch.script_path(self.settings, name)
        stamp = _stamp(script)
        cached = self._cache.get((name, blueprint))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = self._declared(script) or self._of_blueprint(blueprint) or DEFAULT_PATH_MODE
        self._cache[(name, blueprint)] = (stamp, found)
        return found

    @staticmethod
    def _declared(script: Path) -> str | None:
        try:
            return parse_metadata(script.read_text(encoding='utf-8', errors='replace'), script.stem).path_mode
        except (OSError, BlueprintError):
            return None

    def _of_blueprint(self, blueprint: str) -> str | None:
        try:
            return self.blueprints.get(blueprint).meta.path_mode
        except (ServiceError, OSError):
            return None


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
