"""Settings read from AIKORE_* environment variables.

Every setting has a default that works on a bare host; invalid values stop the panel at
start with a sentence naming the variable instead of failing later in a strange place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar('T', int, float)

REPO_ROOT = Path(__file__).resolve().parent.parent
# Installed (not editable, as in the image) the repository's folders ship inside the package
# as ``app/bundled/...`` (pyproject's package-dir); from a checkout they are read in place.
BUNDLED = Path(__file__).resolve().parent / 'bundled'


def shipped_folder(in_repository: str, bundled: str) -> Path:
    """A folder of the repository (``blueprints``, ``container/nginx``) wherever this copy of the
    panel keeps it: in the checkout it runs from, else inside the installed package."""
    checkout = REPO_ROOT / in_repository
    return checkout if checkout.is_dir() else BUNDLED / bundled


STOCK_BLUEPRINTS_DIR = shipped_folder('blueprints', 'blueprints')
NGINX_TEMPLATES_DIR = shipped_folder('container/nginx', 'nginx')
NGINX_MODES = ('auto', 'managed', 'external', 'off')
SLURM_EXCLUSIVE = ('user', 'none')  # sbatch --exclusive=user: no other user's job on the node

# The sampler's interval range (seconds): for AIKORE_MONITOR_INTERVAL and for changes at run time.
MONITOR_INTERVALS = (0.25, 10.0)


class ConfigError(ValueError):
    """An AIKORE_* variable holds a value the panel cannot use."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = '127.0.0.1'
    port: int = 9000
    port_range: tuple[int, int] = (9001, 9020)
    password: str | None = None
    api_token: str | None = None
    public_host: str | None = None
    stop_on_exit: bool = False
    stock_blueprints_dir: Path = STOCK_BLUEPRINTS_DIR
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    stop_grace: float = 10.0
    restart_max: int = 5
    restart_backoff: float = 1.0
    monitor_interval: float = 1.0
    # --- networking (README "Networking") ---
    nginx: str = 'off'  # auto | managed | external | off; AIKORE_NGINX unset means auto (settings built in code: off)
    panel_port: int | None = None  # the panel's loopback port behind nginx; None: a free one at start
    nginx_pid: Path | None = None  # external mode: the supervised master's pid file; None: <data>/nginx/nginx.pid
    nginx_templates: Path = NGINX_TEMPLATES_DIR
    # HTTPS on a port of its own (nginx): the user's certificate, else a self-signed one made
    # once into <data>/tls (app.services.net.tls). None: no HTTPS (settings built in code).
    https_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    https_only: bool = False  # plain HTTP on AIKORE_PORT redirects to HTTPS
    # The dashboard and /api/health warn while the data volume has less free (AIKORE_DISK_LOW_GB; 0: never).
    disk_low_bytes: int = 5 * 10**9
    # --- the Slurm executor (README "Slurm"); off unless AIKORE_SLURM=1 or AIKORE_SLURM_CONF ---
    slurm: bool = False
    slurm_conf: Path | None = None  # SLURM_CONF for the cluster's commands (None: theirs)
    slurm_bin: Path | None = None  # the folder of sbatch, squeue, scontrol, scancel (None: PATH)
    slurm_partition: str | None = None  # the default partition (None: the cluster's default)
    slurm_data_dir: Path | None = None  # the data directory as the nodes see it (None: the same path)
    slurm_python: str | None = None  # the nodes' Python 3 for the job's gate (None: this panel's)
    slurm_poll: float = 2.0  # seconds between two looks at the queue
    slurm_exclusive: str = 'user'  # 'user': jobs share a node with this user's jobs only; 'none'
    # The persistent desktop's `selkies` program (a venv of its own); None: looked for (runtime.desktop).
    selkies: Path | None = None

    # --- the data directory layout (DESIGN "Data directory") ---
    @property
    def db_path(self) -> Path:
        return self.data_dir / 'aikore.db'

    @property
    def secrets_path(self) -> Path:
        return self.data_dir / 'secrets.json'

    @property
    def custom_blueprints_dir(self) -> Path:
        return self.data_dir / 'blueprints'

    @property
    def instances_dir(self) -> Path:
        return self.data_dir / 'instances'

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / 'outputs'

    @property
    def models_dir(self) -> Path:
        return self.data_dir / 'models'

    @property
    def trash_dir(self) -> Path:
        return self.data_dir / 'trash'

    @property
    def nginx_dir(self) -> Path:
        return self.data_dir / 'nginx'

    def ensure_layout(self) -> None:
        """Create the data directory and its fixed sub-folders."""
        for folder in (
            self.data_dir,
            self.custom_blueprints_dir,
            self.instances_dir,
            self.outputs_dir,
            self.models_dir,
            self.trash_dir,
            self.nginx_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        return cls(
            data_dir=Path(env.get('AIKORE_DATA_DIR') or './data').expanduser().resolve(),
            host=env.get('AIKORE_HOST') or '127.0.0.1',
            port=_port(env, 'AIKORE_PORT', 9000),
            port_range=_port_range(env.get('AIKORE_PORT_RANGE') or '9001-9020'),
            password=env.get('AIKORE_PASSWORD') or None,
            api_token=env.get('AIKORE_API_TOKEN') or None,
            public_host=env.get('AIKORE_PUBLIC_HOST') or None,
            stop_on_exit=_flag(env, 'AIKORE_STOP_ON_EXIT'),
            stock_blueprints_dir=Path(env.get('AIKORE_STOCK_BLUEPRINTS') or STOCK_BLUEPRINTS_DIR).resolve(),
            log_max_bytes=_number(env, 'AIKORE_LOG_MAX_BYTES', 10 * 1024 * 1024, int, minimum=4096),
            log_backups=_number(env, 'AIKORE_LOG_BACKUPS', 3, int, minimum=1),
            stop_grace=_number(env, 'AIKORE_STOP_GRACE', 10.0, float, minimum=0.1),
            restart_max=_number(env, 'AIKORE_RESTART_MAX', 5, int, minimum=0),
            restart_backoff=_number(env, 'AIKORE_RESTART_BACKOFF', 1.0, float, minimum=0.0),
            monitor_interval=_seconds_between(env, 'AIKORE_MONITOR_INTERVAL', 1.0, *MONITOR_INTERVALS),
            nginx=_choice(env, 'AIKORE_NGINX', NGINX_MODES),
            panel_port=_port(env, 'AIKORE_PANEL_PORT', 0) or None,
            nginx_pid=Path(env['AIKORE_NGINX_PID']).resolve() if env.get('AIKORE_NGINX_PID') else None,
            nginx_templates=Path(env.get('AIKORE_NGINX_TEMPLATES') or NGINX_TEMPLATES_DIR).resolve(),
            https_port=_https_port(env),
            tls_cert=Path(env['AIKORE_TLS_CERT']).resolve() if env.get('AIKORE_TLS_CERT') else None,
            tls_key=Path(env['AIKORE_TLS_KEY']).resolve() if env.get('AIKORE_TLS_KEY') else None,
            https_only=_flag(env, 'AIKORE_HTTPS_ONLY'),
            disk_low_bytes=int(_number(env, 'AIKORE_DISK_LOW_GB', 5.0, float, minimum=0.0) * 10**9),
            slurm=_flag(env, 'AIKORE_SLURM') or bool(env.get('AIKORE_SLURM_CONF')),
            slurm_conf=_path(env, 'AIKORE_SLURM_CONF'),
            slurm_bin=_path(env, 'AIKORE_SLURM_BIN'),
            slurm_partition=env.get('AIKORE_SLURM_PARTITION') or None,
            slurm_data_dir=Path(env['AIKORE_SLURM_DATA_DIR']) if env.get('AIKORE_SLURM_DATA_DIR') else None,
            slurm_python=env.get('AIKORE_SLURM_PYTHON') or None,
            slurm_poll=_seconds_between(env, 'AIKORE_SLURM_POLL', 2.0, 0.05, 60.0),
            slurm_exclusive=_choice(env, 'AIKORE_SLURM_EXCLUSIVE', SLURM_EXCLUSIVE),
            selkies=Path(env['AIKORE_SELKIES']).expanduser() if env.get('AIKORE_SELKIES') else None,
        )


def _path(env: dict[str, str], name: str) -> Path | None:
    return Path(env[name]).expanduser().resolve() if env.get(name) else None


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or choices[0]).strip().lower()
    if value not in choices:
        raise ConfigError(f'{name}={env.get(name)!r} must be one of: {", ".join(choices)}')
    return value


def _flag(env: dict[str, str], name: str) -> bool:
    return env.get(name, '').strip().lower() in {'1', 'true', 'yes', 'on'}


def _number(env: dict[str, str], name: str, default: T, kind: type[T], *, minimum: T) -> T:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f'{name}={raw!r} is not a number') from None
    if value < minimum:
        raise ConfigError(f'{name}={raw!r} must be at least {minimum}')
    return value


def _seconds_between(env: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    value = _number(env, name, default, float, minimum=low)
    if not value <= high:  # also refuses nan
        raise ConfigError(f'{name}={env.get(name)!r} must be between {low} and {high} seconds')
    return value


def _https_port(env: dict[str, str]) -> int | None:
    """AIKORE_HTTPS_PORT: 9443 by default; ``off`` (or 0) serves no HTTPS."""
    if (env.get('AIKORE_HTTPS_PORT') or '').strip().lower() in ('off', '0'):
        return None
    return _port(env, 'AIKORE_HTTPS_PORT', 9443)


def _port(env: dict[str, str], name: str, default: int) -> int:
    value = _number(env, name, default, int, minimum=1)
    if value > 65535:
        raise ConfigError(f'{name}={value} is not a TCP port (1-65535)')
    return value


def _port_range(raw: str) -> tuple[int, int]:
    first, sep, last = raw.partition('-')
    try:
        low, high = int(first), int(last if sep else first)
    except ValueError:
        raise ConfigError(f'AIKORE_PORT_RANGE={raw!r} must look like 9001-9020') from None
    if not 1 <= low <= high <= 65535:
        raise ConfigError(f'AIKORE_PORT_RANGE={raw!r} must be two ports, low-high, within 1-65535')
    return low, high
