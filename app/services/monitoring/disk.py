"""Disk usage: what each instance, the shared models folder and the trash take, and how full the
data volume is.

Sizes are counted as ``du -sb`` counts them: the apparent size (``st_size``) of every file,
folder and link under a folder, the folder itself included, links not followed, a file with
several hard links once. An instance is split into:

- ``environment``: the Python env its launch.sh declares (``aikore.venv_path``, else ``./env``);
- ``logs``: its ``logs/`` folder (the current log and the rotated ones);
- ``code``: the rest of its folder (the app's checkout, caches, its launch.sh and pins);
- ``outputs``: its output folder, ``<data>/outputs/<output_path>`` (outside its folder; a link
  there, as an upgrade from the original AiKore may leave, is followed).

Walking a tree of large installs takes seconds, so figures are computed in a worker thread,
kept, and computed again only on request (one computation at a time; requests that arrive
during one wait for it). The data volume's free space is a cheap ``statvfs``: checked on its own
every minute, and a low-disk sentence (below AIKORE_DISK_LOW_GB free) joins the panel's problems.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy.engine import Engine

from ...config import Settings
from ...models import Instance, iso_utc, utc_now
from ..catalog import store
from ..catalog.blueprints import BlueprintError, parse_metadata
from ..errors import NotFound
from ..runtime import launch
from ..tasks import BackgroundTasks

log = logging.getLogger(__name__)

LOW_DISK_PREFIX = 'Low disk space'
CHECK_INTERVAL = 60.0  # seconds between checks of the data volume's free space
STALE_AFTER = 300.0  # seconds after which a view that opens counts again
DEFAULT_ENV = 'env'


class InstanceDisk(BaseModel):
    id: int
    name: str
    code: int
    environment: int
    outputs: int
    logs: int
    total: int


class VolumeDisk(BaseModel):
    path: str
    total: int
    used: int
    free: int
    low_threshold: int  # bytes free under which the panel warns (0: never)
    low: bool


class TrashDisk(BaseModel):
    name: str
    size: int


class DiskReport(BaseModel):
    computed_at: str
    seconds: float  # how long the computation took
    volume: VolumeDisk
    models: int
    trash: int
    trash_entries: list[TrashDisk]
    instances: list[InstanceDisk]


# ---------------------------------------------------------------- counting


def tree_size(root: Path) -> int:
    """The bytes ``du -sb root`` reports (0 when it does not exist). Entries that vanish or
    cannot be read during the walk are skipped."""
    seen: set[tuple[int, int]] = set()
    try:
        top = root.lstat()
    except OSError:
        return 0
    total = _counted(top, seen)
    if not stat.S_ISDIR(top.st_mode):
        return total
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += _counted(info, seen)
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def _counted(info: os.stat_result, seen: set[tuple[int, int]]) -> int:
    if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
        key = (info.st_dev, info.st_ino)
        if key in seen:
            return 0
        seen.add(key)
    return info.st_size


def environment_dir(settings: Settings, instance: Instance) -> Path:
    """The env folder the instance's launch.sh declares (inside its folder), else ``<folder>/env``."""
    folder = launch.instance_dir(settings, instance.name)
    try:
        declared = parse_metadata(launch.script_path(settings, instance.name).read_text(errors='replace'), '').venv_path
    except (OSError, BlueprintError):
        declared = None
    path = Path(os.path.normpath(folder / (declared or DEFAULT_ENV)))
    return path if path != folder and path.is_relative_to(folder) else folder / DEFAULT_ENV


def instance_disk(settings: Settings, instance: Instance) -> InstanceDisk:
    folder = launch.instance_dir(settings, instance.name)
    whole = tree_size(folder)
    env = tree_size(environment_dir(settings, instance))
    logs = tree_size(folder / 'logs')
    outputs = launch.output_dir(settings, instance)
    output_size = tree_size(outputs.resolve()) if outputs.is_symlink() else tree_size(outputs)
    code = max(0, whole - env - logs)
    return InstanceDisk(
        id=instance.id or 0,
        name=instance.name,
        code=code,
        environment=env,
        outputs=output_size,
        logs=logs,
        total=code + env + logs + output_size,
    )


def volume(settings: Settings) -> VolumeDisk:
    usage = shutil.disk_usage(settings.data_dir)
    threshold = settings.disk_low_bytes
    return VolumeDisk(
        path=str(settings.data_dir),
        total=usage.total,
        used=usage.used,
        free=usage.free,
        low_threshold=threshold,
        low=bool(threshold) and usage.free < threshold,
    )


def low_disk_problem(found: VolumeDisk) -> str | None:
    """The sentence for the panel's problems while the data volume is nearly full."""
    if not found.low:
        return None
    return (
        f'{LOW_DISK_PREFIX}: {human_bytes(found.free)} free of {human_bytes(found.total)} on {found.path} '
        f'(warning below {human_bytes(found.low_threshold)}: AIKORE_DISK_LOW_GB); empty the trash or remove '
        'unused models'
    )


def human_bytes(value: float) -> str:
    for unit in ('B', 'KB', 'MB', 'GB', 'TB'):
        if abs(value) < 1000 or unit == 'TB':
            return f'{value:.0f} {unit}' if unit == 'B' else f'{value:.1f} {unit}'
        value /= 1000
    return f'{value:.1f} TB'


def compute(settings: Settings, engine: Engine) -> DiskReport:
    """Every figure, now (blocking: run in a worker thread)."""
    began = time.monotonic()
    rows = store.list_all(engine)
    entries = []
    if settings.trash_dir.is_dir():
        entries = [TrashDisk(name=p.name, size=tree_size(p)) for p in sorted(settings.trash_dir.iterdir())]
    return DiskReport(
        computed_at=iso_utc(utc_now()),
        seconds=0.0,
        volume=volume(settings),
        models=tree_size(settings.models_dir),
        trash=tree_size(settings.trash_dir),
        trash_entries=entries,
        instances=[instance_disk(settings, row) for row in rows],
    ).model_copy(update={'seconds': round(time.monotonic() - began, 3)})


# ---------------------------------------------------------------- the service


class DiskUsage:
    """The kept report, computed again on request; the periodic free-space check."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._report: DiskReport | None = None
        self._lock = asyncio.Lock()
        self._counted_from = 0.0  # when the kept report's count began (monotonic)
        self._background = BackgroundTasks('Disk usage')
        self.volume_checked: Callable[[VolumeDisk], object] | None = None

    async def report(self, refresh: bool = False) -> DiskReport:
        """The kept figures (counted the first time), or figures counted after this call (``refresh``):
        one count at a time; a request that waited for a count begun after it takes that one."""
        asked = time.monotonic()
        if self._report is not None and not refresh:
            return self._report
        async with self._lock:
            if self._report is not None and (not refresh or self._counted_from >= asked):
                return self._report
            self._counted_from = time.monotonic()
            report = await asyncio.to_thread(compute, self.settings, self.engine)
            self._report = report
        self._announce(report.volume)
        return report

    async def instance(self, instance_id: int, refresh: bool = False) -> InstanceDisk:
        if refresh or self._report is None or all(item.id != instance_id for item in self._report.instances):
            row = await asyncio.to_thread(store.get, self.engine, instance_id)  # NotFound for an unknown id
            return await asyncio.to_thread(instance_disk, self.settings, row)
        for item in self._report.instances:
            if item.id == instance_id:
                return item
        raise NotFound(f'No instance with id {instance_id}')  # pragma: no cover (checked above)

    async def check_volume(self) -> VolumeDisk:
        found = await asyncio.to_thread(volume, self.settings)
        self._announce(found)
        return found

    def _announce(self, found: VolumeDisk) -> None:
        if self.volume_checked is not None:
            self.volume_checked(found)

    def stale(self, instance_ids: set[int], max_age: float = STALE_AFTER) -> bool:
        """Whether the kept figures no longer describe the panel: none yet, other instances than
        ``instance_ids`` (created or deleted since), or counted more than ``max_age`` seconds ago."""
        report = self._report
        if report is None:
            return True
        if {item.id for item in report.instances} != instance_ids:
            return True
        return time.monotonic() - self._counted_from > max_age

    @property
    def kept(self) -> DiskReport | None:
        """The last figures, never computed here (None before the first count)."""
        return self._report

    def start(self) -> None:
        """The free-space check every minute, and a first count in the background."""
        self._background.spawn(self._watch())
        self._background.spawn(self._first_count())

    async def _first_count(self) -> None:
        try:
            await self.report()
        except OSError as exc:
            log.warning('Cannot count disk usage under %s: %s', self.settings.data_dir, exc)

    async def _watch(self) -> None:
        while True:
            try:
                await self.check_volume()
            except OSError as exc:
                log.warning('Cannot read the free space of %s: %s', self.settings.data_dir, exc)
            await asyncio.sleep(CHECK_INTERVAL)

    def stop(self) -> None:
        self._background.cancel_all()
