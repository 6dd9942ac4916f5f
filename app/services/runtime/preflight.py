"""What a start checks and mends before it launches anything: a pending environment rebuild
that satellites run, and a launch script missing from an upgraded instance's folder."""

from __future__ import annotations

import logging
from collections.abc import Container

from sqlalchemy.engine import Engine

from ... import lifecycle
from ...config import Settings
from ...models import Instance
from ..catalog import store
from ..catalog.blueprints import BlueprintStore, write_script_atomic
from ..errors import Conflict, InvalidInput, NotFound
from . import launch

log = logging.getLogger(__name__)


def refuse_during_rebuild(
    settings: Settings, engine: Engine, instance: Instance, parent: Instance | None, live: Container[int]
) -> None:
    """A pending rebuild deletes the environment at the owner's next start: never while a
    satellite runs it, and no satellite starts until the owner has rebuilt it."""
    if parent is not None:
        if launch.rebuild_marker(settings, parent.name).exists():
            raise Conflict(
                f'{instance.name!r} runs the environment of {parent.name!r}, which is to be rebuilt: '
                f'start {parent.name!r} first'
            )
        return
    if not launch.rebuild_marker(settings, instance.name).exists():
        return
    satellites = store.satellites_of(engine, instance.id or 0)
    running = [row.name for row in satellites if row.status in lifecycle.RUNNING or row.id in live]
    if running:
        raise Conflict(
            f'The environment of {instance.name!r} is to be rebuilt at this start, and its satellites '
            f'{", ".join(running)} run it: stop them first',
            satellites=running,
        )


def restore_missing_script(settings: Settings, blueprints: BlueprintStore, instance: Instance) -> None:
    """An instance without a launch.sh (a row upgraded from an older panel's database, whose
    folder never had one) gets its blueprint's script, so it starts instead of failing."""
    script = launch.script_path(settings, instance.name)
    if script.is_file():
        return
    try:
        blueprint = blueprints.get(instance.blueprint)
    except (NotFound, InvalidInput):
        raise Conflict(
            f'{script} is missing and its blueprint {instance.blueprint!r} is unknown: '
            f'save a launch script for {instance.name!r} first'
        ) from None
    script.parent.mkdir(parents=True, exist_ok=True)
    write_script_atomic(script, blueprint.path.read_text(encoding='utf-8'))
    log.info('%s had no launch.sh: copied the %s blueprint %s', instance.name, blueprint.source, blueprint.name)
