"""Everything a run of an instance needs before its process starts: folders, the parsed
metadata of its launch.sh, a free internal port, and its environment (DESIGN
"Environment passed to a blueprint")."""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ...config import Settings
from ...models import Instance, InstancePublic
from ..catalog.blueprints import BlueprintMeta, parse_metadata
from ..errors import Conflict
from ..files import write_atomic
from . import logs

LAUNCH_SCRIPT = 'launch.sh'
EXIT_FILE = 'exit'
# Due time (Unix) of a pending on-failure restart, so one survives a panel restart.
RESTART_FILE = 'restart-due'
# Never handed to a blueprint: the panel's own credentials.
REBUILD_MARKER = '.rebuild'
SECRET_VARIABLES = ('AIKORE_API_TOKEN', 'AIKORE_PASSWORD')


@dataclass(frozen=True)
class Launch:
    instance_dir: Path  # where the script runs (a satellite's: its parent's folder)
    script: Path
    log_path: Path
    log_run_base: int  # the log cursor position where this run's output starts
    exit_file: Path
    port: int
    meta: BlueprintMeta
    env: dict[str, str]
    log_run: int = 0  # the run's number, counted in the log's cursor
    log_banner: str = ''  # the run's first log line (``logs.run_banner``), written by the runner


def instance_dir(settings: Settings, name: str) -> Path:
    return settings.instances_dir / name


def exit_file(settings: Settings, name: str) -> Path:
    return instance_dir(settings, name) / 'run' / EXIT_FILE


def notes_fifo(settings: Settings, name: str) -> Path:
    """The FIFO through which the panel adds lines to a running instance's log (``runner.py``
    makes it, copies its lines into the log, removes it at the end). Outside the instance's
    folder: a folder copy must never meet a FIFO."""
    return settings.data_dir / 'notes' / f'{name}.fifo'


def rebuild_marker(settings: Settings, name: str) -> Path:
    """Present while the instance's environment is to be re-created at its next start
    (``functions.sh`` removes it then); satellites run that environment."""
    return instance_dir(settings, name) / REBUILD_MARKER


def restart_marker(settings: Settings, name: str) -> Path:
    return instance_dir(settings, name) / 'run' / RESTART_FILE


def write_restart_due(path: Path, due: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, f'{due:.3f}\n')


def read_restart_due(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def script_path(settings: Settings, name: str) -> Path:
    return instance_dir(settings, name) / LAUNCH_SCRIPT


def log_path(settings: Settings, name: str) -> Path:
    return logs.log_path(instance_dir(settings, name))


def output_dir(settings: Settings, instance: Instance | InstancePublic) -> Path:
    return settings.outputs_dir / (instance.output_path or instance.name)


def read_meta(settings: Settings, instance: Instance, parent: Instance | None = None) -> BlueprintMeta:
    """The metadata of the script the instance runs (a satellite runs its parent's)."""
    owner = parent or instance
    script = script_path(settings, owner.name)
    if not script.is_file():
        raise Conflict(f'{script} is missing: save a launch script for {owner.name!r} first')
    return parse_metadata(script.read_text(encoding='utf-8', errors='replace'), owner.blueprint)


def prepare(
    settings: Settings, instance: Instance, functions_path: Path, port: int, parent: Instance | None = None
) -> Launch:
    """Create the run's folders and rotate the previous log (blocking: run in a thread).

    ``parent``: the instance is its satellite. It runs the parent's launch.sh in the parent's
    folder (code and environment), while its logs, run state, temp files and outputs live in
    its own folder, created here if missing (rows upgraded from the original AiKore carry
    only ``parent_id``); ``AIKORE_SATELLITE_DIR`` tells the script and functions.sh so."""
    folder = instance_dir(settings, instance.name)
    meta = read_meta(settings, instance, parent)
    for sub in ('logs', 'run', 'tmp'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    output = output_dir(settings, instance)
    output.mkdir(parents=True, exist_ok=True)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    log_file = logs.log_path(folder)
    after_partial_line = logs.ends_mid_line(log_file)
    cursor = logs.begin_run(log_file, settings.log_backups)
    banner = logs.run_banner(cursor.run, time.time(), after_partial_line)
    code_dir = instance_dir(settings, parent.name) if parent is not None else folder
    env = environment(settings, instance, port, code_dir, output, functions_path)
    if parent is not None:
        env.update(AIKORE_SATELLITE_DIR=str(folder), AIKORE_PARENT_NAME=parent.name, TMPDIR=str(folder / 'tmp'))
    script, exit_path = code_dir / LAUNCH_SCRIPT, exit_file(settings, instance.name)
    return Launch(code_dir, script, log_file, cursor.run_base, exit_path, port, meta, env, cursor.run, banner)


def free_port(excluded: set[int], preferred: int | None = None) -> int:
    """A TCP port free on 127.0.0.1 now: ``preferred`` if it is, else one the kernel chooses,
    outside ``excluded``."""
    if preferred is not None and preferred not in excluded and not port_in_use('127.0.0.1', preferred):
        return preferred
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(('127.0.0.1', 0))
            port = int(probe.getsockname()[1])
        if port not in excluded:
            return port
    raise Conflict('Could not find a free internal port on 127.0.0.1')


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on ``host:port`` (a bind with SO_REUSEADDR fails only then)."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip('[]'), port))
        except OSError:
            return True
    return False


def without_secrets() -> dict[str, str]:
    """The panel's environment less its secrets: the base of every environment instance code runs in."""
    return {key: value for key, value in os.environ.items() if key not in SECRET_VARIABLES}


def environment(
    settings: Settings, instance: Instance, port: int, folder: Path, output_dir: Path, functions_path: Path
) -> dict[str, str]:
    env = without_secrets()
    env.update(
        WEBUI_PORT=str(port),
        INSTANCE_NAME=instance.name,
        INSTANCE_SLUG=instance.slug,
        INSTANCE_DIR=str(folder),
        INSTANCE_OUTPUT_DIR=str(output_dir),
        MODELS_DIR=str(settings.models_dir),
        CUDA_DEVICE_ORDER='PCI_BUS_ID',
        SUBFOLDER=f'/instance/{instance.slug}/',
        AIKORE_DATA_DIR=str(settings.data_dir),
        AIKORE_FUNCTIONS=str(functions_path),
        BLUEPRINT=instance.blueprint,
        TMPDIR=str(folder / 'tmp'),
        PYTHONUNBUFFERED='1',
    )
    if instance.gpu_ids:
        env['CUDA_VISIBLE_DEVICES'] = ','.join(str(gpu) for gpu in instance.gpu_ids)
    return env


def bash() -> str:
    return shutil.which('bash') or '/bin/bash'
