"""What one row of the instance table shows, as row data for ``instance_grid.js``: labels,
colours, the actions allowed now (from ``lifecycle``, with the reason when refused), usage.
Pure functions of an instance: the table element (``instance_table.py``) sends their output."""

from __future__ import annotations

from typing import Any

from .. import lifecycle
from ..models import InstancePublic, InstanceStatus
from ..services.monitoring.sampler import InstanceStats
from ..services.net.urls import NOT_STARTED, why_unreachable

# Said wherever GPUs are chosen on a machine where none is detected (create dialog, row edits).
NO_GPU = 'CUDA_VISIBLE_DEVICES will name a GPU this machine does not have'
ACCESS_LABELS = {'port': 'Host:port', 'subdomain': 'Subdomain', 'path': 'Path'}
DESKTOP_OFF = 'Run the app in a persistent desktop (applies at the next start)'


def status_color(status: InstanceStatus) -> str:
    """The status chip's colour, by the lifecycle's groups: a status added there (installing,
    queued, ...) gets its group's colour without a line here."""
    if status == InstanceStatus.ERROR:
        return 'negative'
    if status == InstanceStatus.STALLED:
        return 'orange-9'
    if status in lifecycle.READY:
        return 'positive'
    if status in lifecycle.BUSY:
        return 'amber-8'
    if status in lifecycle.RUNNING:
        return 'light-blue-8'
    return 'grey-7'


GB = 1024**3


def status_text(instance: InstancePublic) -> str:
    """The status, with what a queued job waits for and a cluster that does not answer."""
    if instance.status == InstanceStatus.ERROR and instance.exit_code is not None:
        text = f'error ({instance.exit_code})'
    elif instance.status in lifecycle.QUEUED and instance.status_detail:
        text = instance.status_detail
    elif instance.status == InstanceStatus.INSTALLING and instance.progress:
        text = f'installing · {instance.progress}'
    else:
        text = str(instance.status)
    if instance.cluster_unreachable_since is not None:
        text += f' · cluster unreachable since {instance.cluster_unreachable_since:%H:%M:%S} UTC'
    return text


def where_text(instance: InstancePublic) -> str:
    """The PID column: the runner's PID here, a Slurm run's job and node."""
    if instance.executor != 'slurm':
        return str(instance.pid or '—')
    if not instance.status.is_running or not instance.slurm_job_id:
        return 'slurm'
    return f'slurm job {instance.slurm_job_id}' + (f' on {instance.node}' if instance.node else '')


def size(nbytes: int) -> str:
    return f'{nbytes / GB:.1f} GB' if nbytes >= GB else f'{nbytes / 1024**2:.0f} MB'


def usage_text(instance: InstancePublic, stats: InstanceStats | None) -> str:
    """CPU, RAM and VRAM of the instance's whole process tree (from the monitor)."""
    if stats is None or not instance.status.is_running:
        return ''
    text = f'{stats.cpu_percent:.0f}% · {size(stats.memory_rss)}'
    if stats.gpu_memory:
        text += f' · {size(stats.gpu_memory)} VRAM'
    return text


def _gpu_text(gpu_ids: list[int]) -> str:
    return ','.join(str(gpu) for gpu in gpu_ids)


def actions(instance: InstancePublic, proxy_on: bool = True) -> dict[str, Any]:
    """What the row's eight actions may do now (``instance_grid.js`` draws them); an action
    that cannot run now comes with the reason, shown on hover. Empty titles: the action's name."""
    status = instance.status
    running = status in lifecycle.RUNNING
    stopping = status == InstanceStatus.STOPPING
    startable = status in lifecycle.STARTABLE
    deletable = status in lifecycle.DELETABLE or status in lifecycle.CANCELLABLE
    return {
        'running': running,
        'can_start_stop': not stopping if running else startable,
        'start_stop_title': 'Stopping…' if stopping else '' if running or startable else f'Cannot start while {status}',
        'can_restart': running and not stopping,
        'open_url': instance.urls.open or '',
        'open_title': instance.urls.open or why_unreachable(instance, proxy_on=proxy_on),
        'view_title': instance.urls.view or why_unreachable(instance, opening=False, proxy_on=proxy_on),
        'can_view': instance.urls.view is not None,
        'can_delete': deletable,
        'delete_title': '' if deletable else f'Stop {instance.name} before deleting it (it is {status})',
    }


def activation(instance: InstancePublic) -> dict[str, Any]:
    """Activate (primary; grey when it cannot be pressed) / Deactivate (green, or amber while the
    mapping waits for the app)."""
    if instance.active:
        serving = instance.status in lifecycle.SERVING
        port = instance.public_port
        title = f'Public port {port} is mapped to {instance.name}'
        if not serving:
            title = f'Public port {port} is reserved: it is mapped once {instance.name} serves'
        return {'activate_label': 'Deactivate', 'activate_color': 'positive' if serving else 'warning',
                'activate_enabled': True, 'activate_title': title}  # fmt: skip
    enabled = instance.status in lifecycle.ACTIVATABLE and instance.executor != 'slurm'
    title = f'Map public port {instance.public_port} to {instance.name}' if enabled else NOT_STARTED
    if instance.executor == 'slurm':
        title = 'A Slurm instance is reached through the proxy (no public port)'
    # In the panel's colour when it can be pressed: a grey one read as disabled next to the dimmed ones.
    return {'activate_label': 'Activate', 'activate_color': 'primary' if enabled else 'grey-8',
            'activate_enabled': enabled, 'activate_title': title}  # fmt: skip


def shared_text(others: list[str]) -> str:
    """The other instances assigned the same public port (only one can be active at a time)."""
    if not others:
        return ''
    # No count: a row's text then stops changing once its port has a few holders, so one more
    # instance on a crowded port does not re-send every row on it.
    names = ', '.join(sorted(others)[:3]) + (' and more' if len(others) > 3 else '')
    return f'Public port shared with {names}: only one of them can be active at a time'


def family(instance: InstancePublic, parent: str) -> dict[str, Any]:
    """What the row's menu may do (clone, satellite, environment), with the reason when not."""
    installing = instance.status in lifecycle.CANCELLABLE
    satellite = instance.parent_id is not None
    busy = f'{instance.name} is being copied' if installing else ''
    return {
        'can_clone': not installing and not satellite,
        'clone_title': busy or (f'A satellite has no folder of its own: clone {parent}' if satellite else ''),
        'can_satellite': not installing and not satellite,
        'satellite_title': busy or ('A satellite cannot have satellites' if satellite else ''),
        'own_env': not installing and not satellite,
        'env_title': busy or (f'A satellite runs the environment of {parent}' if satellite else ''),
        'can_check': not installing,
    }


def row_data(
    instance: InstancePublic,
    category: str,
    usage: str = '',
    sharing: list[str] | None = None,
    parent: str = '',
    proxy_on: bool = True,
) -> dict[str, Any]:
    """One row as the browser shows it; ``sharing``: the other instances on its public port;
    ``parent``: the name of the instance a satellite runs from; ``proxy_on``: whether the panel
    has a reverse proxy (the reasons Open and View give)."""
    renamable = instance.status in lifecycle.DELETABLE
    return {
        'id': instance.id,
        'name': instance.name,
        'blueprint': instance.blueprint,
        'category': category,
        'gpus': _gpu_text(instance.gpu_ids),
        'autostart': instance.autostart,
        'persistent': instance.persistent,
        'persistent_title': desktop_text(instance),
        'status': status_text(instance),
        'color': status_color(instance.status),
        'busy': instance.status in lifecycle.BUSY,
        'pid': where_text(instance),
        'executor': instance.executor.value,
        'usage': usage,
        'port': instance.public_port,
        'port_title': f'Public port {instance.public_port}' if instance.public_port else 'No public port',
        'port_shared': shared_text(sharing or []),
        'access': instance.access_pattern.value,
        'access_label': ACCESS_LABELS[instance.access_pattern.value],
        'restart_policy': instance.restart_policy.value,
        'renamable': renamable,
        'rename_title': '' if renamable else f'Stop {instance.name} to rename it',
        'parent': parent,
        'family': family(instance, parent),
        **actions(instance, proxy_on),
        **activation(instance),
    }


def desktop_text(instance: InstancePublic) -> str:
    """Whether the persistent desktop is up (its X display), shown on the Pers. checkbox."""
    if instance.persistent_display is not None:
        return f'Desktop up on display :{instance.persistent_display}'
    if instance.persistent:
        return 'Desktop not running (it starts once the app is ready)'
    return DESKTOP_OFF


# The values most rows have (a stopped instance on its own port): a row goes to the browser
# without them (``compact``) and ``instance_grid.js`` fills them back in. With 1,000 instances
# that is most of the page's size, and of the bytes of each status change.
ROW_DEFAULTS: dict[str, Any] = {
    'category': '',
    'gpus': '',
    'autostart': False,
    'persistent': False,
    'persistent_title': DESKTOP_OFF,
    'status': 'stopped',
    'color': 'grey-7',
    'busy': False,
    'pid': '—',
    'executor': 'local',
    'usage': '',
    'port_shared': '',
    'access': 'port',
    'access_label': ACCESS_LABELS['port'],
    'restart_policy': 'never',
    'renamable': True,
    'rename_title': '',
    'parent': '',
    'family': {
        'can_clone': True,
        'clone_title': '',
        'can_satellite': True,
        'satellite_title': '',
        'own_env': True,
        'env_title': '',
        'can_check': True,
    },
    'running': False,
    'can_start_stop': True,
    'start_stop_title': '',
    'can_restart': False,
    'open_url': '',
    'open_title': NOT_STARTED,
    'view_title': NOT_STARTED,
    'can_view': False,
    'can_delete': True,
    'delete_title': '',
    'activate_label': 'Activate',
    'activate_color': 'grey-8',
    'activate_enabled': False,
    'activate_title': NOT_STARTED,
}
_ABSENT = object()


def compact(row: dict[str, Any]) -> dict[str, Any]:
    """The row without the fields that have their default value (same type and value)."""
    return {
        key: value
        for key, value in row.items()
        if not (type(default := ROW_DEFAULTS.get(key, _ABSENT)) is type(value) and default == value)
    }
