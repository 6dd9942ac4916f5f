"""The rules for every value a user types. Nothing reaches a shell, a path or a config
without passing one of these (DESIGN "Concepts")."""

from __future__ import annotations

import re
import socket

from ...config import Settings
from ...models import INSTANCE_NAME_RE, NAME_MAX, OUTPUT_SEGMENT_RE
from ..errors import InvalidInput, TooLarge
from ..net.urls import panel_hosts, routable_alias, split_entry

BLUEPRINT_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')
MAX_SCRIPT_BYTES = 256 * 1024
MAX_GPU_IDS = 64
MAX_GPU_INDEX = 1023
RESERVED_BLUEPRINT_NAMES = frozenset({'functions'})
NAME_REQUIRED = 'A name is required'


def instance_name(value: str) -> str:
    if isinstance(value, str) and not value.strip():
        raise InvalidInput(NAME_REQUIRED)
    if not isinstance(value, str) or not INSTANCE_NAME_RE.fullmatch(value):
        raise InvalidInput(
            f'Invalid instance name {_shown(value)}: use 1-{NAME_MAX} characters, letters A-Z/a-z, digits, '
            "'-' or '_', starting with a letter or digit"
        )
    return value


def blueprint_name(value: str) -> str:
    if not isinstance(value, str) or value.endswith('.sh') or not BLUEPRINT_NAME_RE.fullmatch(value):
        raise InvalidInput(
            f'Invalid blueprint name {_shown(value)}: use 1-64 characters, letters, digits, '
            "'.', '-' or '_', starting with a letter or digit, without the .sh suffix"
        )
    if value.lower() in RESERVED_BLUEPRINT_NAMES:
        raise InvalidInput(f'{value!r} is reserved (the shared helpers file); choose another blueprint name')
    return value


def gpu_ids(values: list[int], gpu_count: int | None) -> list[int]:
    """Distinct non-negative GPU indexes, below ``gpu_count`` when GPUs were detected."""
    if len(values) > MAX_GPU_IDS:
        raise InvalidInput(f'Too many GPU ids ({len(values)}); at most {MAX_GPU_IDS}')
    for gpu in values:
        if isinstance(gpu, bool) or not isinstance(gpu, int) or not 0 <= gpu <= MAX_GPU_INDEX:
            raise InvalidInput(f'Invalid GPU id {gpu!r}: GPU ids are integers from 0 to {MAX_GPU_INDEX}')
        if gpu_count is not None and gpu >= gpu_count:
            raise InvalidInput(f'GPU {gpu} does not exist: {gpu_count} GPU(s) detected (ids 0-{gpu_count - 1})')
    if len(set(values)) != len(values):
        raise InvalidInput(f'GPU ids {values} contain duplicates')
    return sorted(values)


def gpu_id_text(text: str) -> list[int]:
    """GPU ids typed as text ("0,1" or "0 1"); their rules are then those of ``gpu_ids``."""
    parts = [part.strip() for part in text.replace(' ', ',').split(',') if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise InvalidInput(f'GPUs must be a list of numbers such as "0,1", not {text!r}')
    return [int(part) for part in parts]


def public_port(value: int | None, port_range: tuple[int, int]) -> int | None:
    if value is None:
        return None
    low, high = port_range
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f'Public port {value!r} is outside the exposed range {low}-{high} (AIKORE_PORT_RANGE)')
    return value


def output_path(value: str) -> str:
    """A relative folder under <data>/outputs: safe segments joined by '/', no '..'."""
    segments = value.split('/') if isinstance(value, str) else []
    if not segments or len(value) > 200 or not all(OUTPUT_SEGMENT_RE.fullmatch(s) and s != '..' for s in segments):
        raise InvalidInput(
            f'Invalid output path {_shown(value)}: a relative folder made of letters, digits, '
            "'.', '-' and '_' segments separated by '/'"
        )
    return value


def script_text(body: bytes) -> str:
    """A launch script or blueprint body: UTF-8 text, no NUL bytes, at most 256 KiB."""
    if len(body) > MAX_SCRIPT_BYTES:
        raise TooLarge(f'Script is {len(body)} bytes; the limit is {MAX_SCRIPT_BYTES} bytes')
    try:
        text = body.decode('utf-8')
    except UnicodeDecodeError:
        raise InvalidInput('Script is not UTF-8 text') from None
    if '\x00' in text:
        raise InvalidInput('Script contains NUL bytes; it must be plain text')
    if not text.strip():
        raise InvalidInput('Script is empty')
    return text


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def custom_hostname(value: str | None, settings: Settings, panel_host: str | None = None) -> str | None:
    """An instance's own host name (nginx serves it there too), lower case; None clears it.
    Never a name the panel is reached on (an exact nginx server name would take the panel's
    requests there) nor one under it (``<x>.<panel host>`` is an instance's subdomain route).
    Runs in a worker thread: the machine's full name may need a DNS lookup."""
    text = (value or '').strip().lower().rstrip('.')
    if not text:
        return None
    if routable_alias(text) is None:
        raise InvalidInput(f'Invalid host name {_shown(text)}: letters, digits, dashes and dots (comfy.example.lan)')
    panel = panel_hosts(settings) | {socket.getfqdn().lower()}
    if panel_host:
        panel.add(split_entry(panel_host.lower())[0])
    if text in panel or text.endswith('.localhost'):
        raise InvalidInput(f'{_shown(text)} is a name of the panel itself: choose another host name')
    under = next((name for name in panel if '.' in name and text.endswith(f'.{name}')), None)
    if under is not None:
        raise InvalidInput(f"{_shown(text)} is under the panel's name {under!r}, where instances have their own routes")
    return text
