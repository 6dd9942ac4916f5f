"""Persistent desktops: an instance's app kept open in a browser inside the server, streamed.

With ``persistent`` on, a started instance also gets one :class:`units.Unit` of four processes
that live and die together (restart policy ``always``, with the unit's back-off):

- ``Xvfb`` on a display of its own (``:100`` and up, never one whose lock a live process holds),
- ``openbox`` (a window manager, so the kiosk window fills the screen),
- ``chromium`` in kiosk/app mode on the app's internal URL, with a profile of its own,
- ``selkies`` (2.1.0, websockets mode) streaming that display under ``/desktop/<slug>/``.

The last three wait for the X socket before they exec (the unit spawns all four at once).

Cost: Selkies captures the whole screen at the stream's frame rate while somebody watches, even
a still one (Xvfb copies each frame out, Selkies compares it), so the screen is sized by the
viewer (Selkies resizes it through RandR to the viewer's window, up to :data:`SCREEN`, the
framebuffer Xvfb is given) rather than fixed at a large size, and the rate is 15 fps (a viewer
may pick 8-60 in Selkies' side panel). With no viewer nothing is captured, and Selkies runs
through ``selkies_quiet.py``, which idles its key timers while no key is held.

Access: Selkies listens on a **unix socket** in ``<data>/desktops/<id>/`` (mode 0700, owned by
the panel's user, which is also the user of nginx's workers), with its own basic auth off:
only the panel's user (and root) can connect, and nginx puts its ``auth_request`` in front.
A socket path is fixed per instance id, so nginx's route is there before the desktop starts
and after it stops (502 -> "not running") and starting or stopping needs no reload. X itself
listens only on its unix socket (``-nolisten tcp``) with an MIT cookie (``-auth``), so another
local user cannot drive the display either.

The unit's state file (``unit.json`` in that folder) lets a panel killed with SIGKILL take the
four processes back (:meth:`Desktops.resume`).

Status and errors go to the instance's own log as ``[desktop] ...`` lines (``on_note``: the
supervisor hands them to the instance's runner, the one writer of that log); the four programs'
own output stays in ``desktop.log`` in the desktop's folder, which those lines name on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from ...config import Settings
from ...models import Instance
from . import units

log = logging.getLogger(__name__)

FIRST_DISPLAY = 100
LAST_DISPLAY = 499
# Xvfb's framebuffer, the largest screen a viewer's window can ask for, in physical pixels: 5K
# wide, and a 4K screen turned upright (a window beyond it gets no picture: Selkies then needs a
# manual resolution in its side panel). Xvfb keeps the memory of the whole framebuffer (~80 MB)
# whatever size the screen has.
SCREEN = '5120x3840x24'
FIRST_SIZE = '1920x1080'  # the screen until a viewer's window sizes it (set by Selkies' own resize tool)
FRAMERATE = 15  # capture and encode rate: a still screen with a viewer costs this many captures/s
FRAMERATE_RANGE = '8-60'  # what the viewer's own setting may pick instead
X_WAIT = 15.0  # how long a member waits for the X socket before it gives up
START_TIMEOUT = 40.0
STOP_GRACE = 10.0  # Selkies takes 1-5 s to end on SIGTERM
SOCKET_MAX = 100  # sun_path holds 108 bytes
X_SOCKETS = Path('/tmp/.X11-unix')  # noqa: S108 - where X servers put their sockets
POLICY = units.RestartPolicy(units.RestartMode.ALWAYS, backoff=0.5, max_backoff=30.0, start_retries=8)
MEMBERS = ('xvfb', 'openbox', 'chromium', 'selkies')
DISPLAY_TRIES = 3
# Selkies' start line: "Selkies 2.1.0 starting: websockets transport, ..., encoder h264enc at 8-240 fps, ..."
ENCODER_LINE = re.compile(rb'Selkies \S+ starting:.*?encoder (\S+)')
ENCODER_SCAN = 256 * 1024  # the end of desktop.log where the latest start line is looked for


class DesktopError(RuntimeError):
    """A desktop cannot be started on this machine (a program is missing, a path too long)."""


@dataclass(frozen=True)
class Programs:
    xvfb: str
    openbox: str
    chromium: str
    selkies: str
    web_root: str
    selkies_python: str = ''  # Selkies' own interpreter, when found: it then runs through QUIET_LAUNCHER
    selkies_resize: str = ''  # Selkies' resize tool, when found: it sizes the screen before a viewer does


QUIET_LAUNCHER = Path(__file__).with_name('selkies_quiet.py')


REPO_SELKIES = Path(__file__).resolve().parents[3] / '.venv-selkies' / 'bin' / 'selkies'  # `make setup` makes it


def find_selkies(settings: Settings) -> Path | None:
    """Selkies lives in a venv of its own (its ~20 dependencies stay out of the panel's):
    AIKORE_SELKIES, else the checkout's ``.venv-selkies``, else one beside the panel's Python
    (an older install), else on PATH."""
    beside = Path(sys.executable).with_name('selkies')
    on_path = shutil.which('selkies')
    for candidate in (settings.selkies, REPO_SELKIES, beside, Path(on_path) if on_path else None):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def web_client(selkies: Path) -> Path | None:
    """Selkies' web client in the venv of ``selkies`` (given to it as ``--web-root``: else each
    start copies 11 MB to /tmp)."""
    venv = selkies.parent.parent
    for found in sorted(venv.glob('lib/python3*/site-packages/selkies/selkies_web')):
        if found.is_dir():
            return found
    return None


def interpreter_of(program: Path) -> str:
    """The Python a console script runs with (its ``#!`` line), or '' when it is not a plain one."""
    try:
        with program.open('rb') as handle:
            first = handle.readline(512).decode(errors='replace')
    except OSError:
        return ''
    words = first[2:].split() if first.startswith('#!') else []
    if len(words) == 1 and Path(words[0]).name.startswith('python') and os.access(words[0], os.X_OK):
        return words[0]
    beside = program.with_name('python')  # a long path gets pip's `#!/bin/sh` trampoline instead
    return str(beside) if os.access(beside, os.X_OK) else ''


def find_programs(settings: Settings) -> Programs:
    """The four programs and Selkies' web client; DesktopError names what is missing."""
    found = {name: shutil.which(name) for name in ('Xvfb', 'openbox', 'xauth')}
    found['chromium'] = shutil.which('chromium') or shutil.which('chromium-browser')
    selkies = find_selkies(settings)
    found['selkies'] = str(selkies) if selkies else None
    web_root = web_client(selkies) if selkies else None
    missing = [name for name, path in found.items() if not path]
    if selkies is not None and web_root is None:
        missing.append(f'selkies web client (beside {selkies})')
    if missing:
        raise DesktopError(f'persistent desktop unavailable: {", ".join(missing)} not installed')
    resize = selkies.resolve().with_name('selkies-resize') if selkies else None
    if resize is not None and not resize.is_file():
        log.info('no %s: a desktop starts at %s until a viewer sizes it', resize, SCREEN)
        resize = None
    return Programs(found['Xvfb'] or '', found['openbox'] or '', found['chromium'] or '', found['selkies'] or '',
                    str(web_root), interpreter_of(selkies) if selkies else '', str(resize or ''))  # fmt: skip


def folder(settings: Settings, instance_id: int) -> Path:
    return settings.data_dir / 'desktops' / str(instance_id)


def socket_path(settings: Settings, instance_id: int) -> Path:
    """Where the instance's Selkies listens (nginx routes /desktop/<slug>/ to it)."""
    return folder(settings, instance_id) / 'selkies.sock'


def x_lock(display: int) -> Path:
    return Path(f'/tmp/.X{display}-lock')  # noqa: S108 - the X server's own lock file


def _lock_owner(display: int) -> int | None:
    """The live PID that holds display ``display``'s lock, None if nobody does."""
    try:
        pid = int(x_lock(display).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None


def choose_display(taken: set[int], preferred: int | None) -> int:
    """A display no live X server holds and no other desktop of this panel uses."""
    candidates = ([preferred] if preferred else []) + list(range(FIRST_DISPLAY, LAST_DISPLAY + 1))
    for display in candidates:
        if display not in taken and _lock_owner(display) is None:
            return display
    raise DesktopError('no free X display')


def clean_stale(display: int, base: Path) -> None:
    """Before a start: the X lock and socket a dead server left, Chromium's profile locks and
    Selkies' socket (a stale socket would make its bind fail)."""
    if _lock_owner(display) is None:
        x_lock(display).unlink(missing_ok=True)
        (X_SOCKETS / f'X{display}').unlink(missing_ok=True)
    (base / 'selkies.sock').unlink(missing_ok=True)
    for link in (base / 'profile').glob('Singleton*'):
        link.unlink(missing_ok=True)


def _wait_for_x(display: int, argv: list[str], first: list[str] | None = None) -> list[str]:
    """``argv`` run once the X socket exists (exec: same PID, so the unit watches the program);
    ``first``, a command run before it (its failure is only logged)."""
    script = (
        f'i=0; while [ ! -S {X_SOCKETS}/X{display} ]; do i=$((i+1)); '
        f'[ $i -gt {int(X_WAIT * 10)} ] && exit 70; sleep 0.1; done; '
        f'[ -z "$1" ] || eval "$1" || echo "wait-for-x: $1 failed"; shift; exec "$@"'
    )
    return ['/bin/sh', '-c', script, 'wait-for-x', shlex.join(first or []), *argv]


def specs(programs: Programs, base: Path, display: int, slug: str, app_url: str) -> list[units.ProcessSpec]:
    """The four members. Each gets a clean environment (Selkies reads PASSWORD, USER,
    SUBFOLDER, CUSTOM_WS_PORT... from it) with its own HOME, XDG_RUNTIME_DIR and X cookie."""
    env = {
        'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
        'HOME': str(base / 'home'),
        'XDG_RUNTIME_DIR': str(base / 'run'),
        'DISPLAY': f':{display}',
        'XAUTHORITY': str(base / 'Xauthority'),
        'LANG': 'C.UTF-8',
    }
    log_file = base / 'desktop.log'
    xvfb = [programs.xvfb, f':{display}', '-screen', '0', SCREEN, '-nolisten', 'tcp', '-noreset', '-s', '0',
            '-dpms', '-auth', str(base / 'Xauthority')]  # fmt: skip
    openbox = [programs.openbox, '--sm-disable']
    chromium = [
        programs.chromium, '--no-sandbox', '--test-type', '--disable-gpu', '--disable-dev-shm-usage',
        '--no-first-run', '--no-default-browser-check', '--password-store=basic', '--noerrdialogs',
        '--disable-features=Translate,MediaRouter,OptimizationHints', '--window-position=0,0', '--start-fullscreen',
        # Nothing in the background: no component updates, sync, pings or field trials waking it up.
        '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-default-apps',
        '--disable-extensions', '--no-pings', '--metrics-recording-only', '--disable-breakpad',
        f'--user-data-dir={base / "profile"}', '--kiosk', f'--app={app_url}',
    ]  # fmt: skip
    # Through the launcher that idles Selkies' key timers while no key is held (selkies_quiet.py).
    python = [programs.selkies_python, '-I', '-u', str(QUIET_LAUNCHER)]  # -I: no panel module, no PYTHON* variable
    program = python if programs.selkies_python else [programs.selkies]
    # Xvfb starts at its whole framebuffer: the screen is made FIRST_SIZE until a viewer sizes it.
    first_size = [programs.selkies_resize, FIRST_SIZE] if programs.selkies_resize else None
    selkies = [
        *program, '--mode', 'websockets', '--unix-socket', str(base / 'selkies.sock'),
        '--enable-basic-auth', 'false', '--subfolder', f'/desktop/{slug}/',
        '--audio-enabled', 'false', '--microphone-enabled', 'false', '--gamepad-enabled', 'false',
        '--webcam-enabled', 'false', '--file-transfers', 'none', '--framerate', f'{FRAMERATE},{FRAMERATE_RANGE}',
        '--video-streaming-mode', 'false', '--enable-resize', 'true', '--web-root', programs.web_root,
    ]  # fmt: skip
    return [
        units.ProcessSpec('xvfb', xvfb, cwd=base, env=env, output=log_file),
        units.ProcessSpec('openbox', _wait_for_x(display, openbox, first_size), cwd=base, env=env, output=log_file),
        units.ProcessSpec('chromium', _wait_for_x(display, chromium), cwd=base, env=env, output=log_file),
        units.ProcessSpec('selkies', _wait_for_x(display, selkies), cwd=base, env=env, output=log_file),
    ]


def _identify(member: str, pid: int) -> bool:
    """At adoption: the recorded PID still runs the member's program."""
    try:
        command = ' '.join(psutil.Process(pid).cmdline()).lower()
    except psutil.Error:
        return False
    return member in command


def encoder_in_log(log_file: Path) -> str | None:
    """The encoder Selkies said it picked at its latest start (the end of ``desktop.log``)."""
    try:
        with log_file.open('rb') as handle:
            handle.seek(max(0, log_file.stat().st_size - ENCODER_SCAN))
            found = ENCODER_LINE.findall(handle.read())
    except OSError:
        return None
    return found[-1].decode(errors='replace').rstrip(',;.') if found else None


def write_cookie(base: Path, display: int) -> None:
    """A fresh MIT-MAGIC-COOKIE for the display: X clients need it (Xvfb's ``-auth``)."""
    cookie = secrets.token_hex(16)
    subprocess.run(
        [shutil.which('xauth') or 'xauth', '-q', '-f', str(base / 'Xauthority'), 'add', f':{display}', '.', cookie],
        check=True,
        capture_output=True,
        timeout=10,
    )


@dataclass(eq=False)
class Desktop:
    instance_id: int
    slug: str
    display: int
    unit: units.Unit


OnChange = Callable[[int, int | None], object]  # (instance id, display while up else None)
OnNote = Callable[[int, str], object]  # (instance id, a line for the instance's log)


class Desktops:
    """Every persistent instance's desktop unit, keyed by instance id. The supervisor calls
    ``start`` once the app is ready, ``stop`` when the run ends, ``resume`` at panel start."""

    def __init__(self, settings: Settings, on_change: OnChange | None = None, on_note: OnNote | None = None) -> None:
        self.settings = settings
        self.on_change = on_change
        self.on_note = on_note
        self._desktops: dict[int, Desktop] = {}
        self._programs: Programs | None = None

    def get(self, instance_id: int) -> Desktop | None:
        return self._desktops.get(instance_id)

    def is_up(self, instance_id: int) -> bool:
        desktop = self._desktops.get(instance_id)
        return desktop is not None and desktop.unit.state == units.UnitState.RUNNING

    def pids(self, instance_id: int) -> list[int]:
        desktop = self._desktops.get(instance_id)
        return desktop.unit.pids if desktop is not None else []

    def _build(self, instance: Instance, display: int, app_url: str) -> Desktop:
        assert instance.id is not None
        if self._programs is None:
            self._programs = find_programs(self.settings)
        base = folder(self.settings, instance.id)
        if len(str(socket_path(self.settings, instance.id))) > SOCKET_MAX:
            raise DesktopError(f'the desktop socket path under {base} is too long: choose a shorter AIKORE_DATA_DIR')
        instance_id = instance.id
        sock = socket_path(self.settings, instance_id)

        async def before_start() -> None:
            await asyncio.to_thread(self._prepare, base, display)

        unit = units.Unit(
            f'desktop of {instance.name}',
            specs(self._programs, base, display, instance.slug, app_url),
            policy=POLICY,
            state_file=base / 'unit.json',
            extra={'display': display, 'slug': instance.slug, 'url': app_url},
            ready=lambda _pids: (X_SOCKETS / f'X{display}').exists() and sock.exists(),
            start_timeout=START_TIMEOUT,
            stop_grace=STOP_GRACE,
            poll=0.1,
            before_start=before_start,
            identify=_identify,
            on_running=lambda _unit: self._running(instance_id, instance.slug, display),
            on_exit=lambda _unit, ended: self._exited(instance_id, ended),
            on_fatal=lambda _unit, exc: self._gave_up(instance_id, exc),
        )
        return Desktop(instance_id, instance.slug, display, unit)

    @staticmethod
    def _prepare(base: Path, display: int) -> None:
        for sub in ('', 'home', 'run', 'profile'):
            (base / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            (base / sub).chmod(0o700)
        clean_stale(display, base)
        write_cookie(base, display)

    def _changed(self, instance_id: int, display: int | None) -> None:
        if self.on_change is not None:
            self.on_change(instance_id, display)

    def _note(self, instance_id: int, text: str) -> None:
        """A ``[desktop]`` line in the instance's log."""
        if self.on_note is not None:
            self.on_note(instance_id, f'[desktop] {text}')

    def _details(self, instance_id: int) -> str:
        return f'details in {folder(self.settings, instance_id) / "desktop.log"}'

    def _running(self, instance_id: int, slug: str, display: int) -> None:
        encoder = encoder_in_log(folder(self.settings, instance_id) / 'desktop.log') or 'unknown'
        log.info('Desktop of instance %s up on display :%s, encoder %s', instance_id, display, encoder)
        self._note(instance_id, f'up on display :{display}, encoder {encoder}, streamed at /desktop/{slug}/')
        self._changed(instance_id, display)

    def _exited(self, instance_id: int, ended: units.UnitExit) -> None:
        delay = ended.restart_in
        again = 'not restarting' if delay is None else f'restarting the desktop in {delay:.1f} s'
        log.warning('Desktop of instance %s: %s ended (code %s); %s', instance_id, ended.member, ended.code, again)
        self._note(instance_id, f'{ended.member} ended (code {ended.code}); {again}')
        self._changed(instance_id, None)

    def _gave_up(self, instance_id: int, exc: BaseException) -> None:
        log.warning('Desktop of instance %s gave up: %s', instance_id, exc)
        self._note(instance_id, f'gave up: {exc} ({self._details(instance_id)})')

    def _taken(self) -> set[int]:
        return {desktop.display for desktop in self._desktops.values()}

    async def start(self, instance: Instance, app_url: str) -> None:
        """Start the instance's desktop (no-op when it has one); failures are logged as warnings.
        A display another program took between the choice and Xvfb's start (another panel's
        desktop) is left for the next free one, up to DISPLAY_TRIES times."""
        assert instance.id is not None
        if instance.id in self._desktops:
            return
        refused: set[int] = set()
        for _ in range(DISPLAY_TRIES):
            try:
                display = choose_display(self._taken() | refused, None if refused else instance.persistent_display)
                desktop = self._build(instance, display, app_url)
            except DesktopError as exc:
                log.warning('%s: %s', instance.name, exc)
                self._note(instance.id, f'not started: {exc}')
                return
            self._desktops[instance.id] = desktop
            try:
                await desktop.unit.start()
            except units.StartFailed as exc:
                await desktop.unit.stop()
                self._desktops.pop(instance.id, None)
                log.warning('Desktop of %s did not start: %s (see %s)', instance.name, exc,
                            folder(self.settings, instance.id) / 'desktop.log')  # fmt: skip
                self._note(instance.id, f'did not start on display :{display}: {exc} ({self._details(instance.id)})')
                if exc.member != 'xvfb':
                    return
                refused.add(display)
                continue
            return

    async def stop(self, instance_id: int) -> None:
        """Tear the four processes down; returns once none is left."""
        desktop = self._desktops.pop(instance_id, None)
        if desktop is None:
            await self._stop_recorded(instance_id)
            return
        await desktop.unit.stop()
        await asyncio.to_thread(clean_stale, desktop.display, folder(self.settings, instance_id))
        self._changed(instance_id, None)
        log.info('Desktop of instance %s stopped', instance_id)

    async def _stop_recorded(self, instance_id: int) -> None:
        """A desktop an earlier panel left (its instance is no longer running): end it."""
        state = folder(self.settings, instance_id) / 'unit.json'
        record = await asyncio.to_thread(units.read_state, state)
        if record is None:
            with contextlib.suppress(OSError):
                state.unlink(missing_ok=True)
            return
        unit = units.Unit(f'desktop of instance {instance_id}', _placeholder_specs(), state_file=state,
                          identify=_identify, stop_grace=STOP_GRACE)  # fmt: skip
        if await unit.adopt(record):
            await unit.stop()
        display = record.extra.get('display')
        if isinstance(display, int):
            await asyncio.to_thread(clean_stale, display, folder(self.settings, instance_id))

    async def resume(self, instance: Instance, app_url: str, ready: bool) -> None:
        """Panel start: take back the desktop an earlier panel left; start one if it is gone and
        the app is ready (else the supervisor starts it once the app is)."""
        assert instance.id is not None
        state = folder(self.settings, instance.id) / 'unit.json'
        record = await asyncio.to_thread(units.read_state, state)
        display = record.extra.get('display') if record is not None else None
        if record is not None and isinstance(display, int) and record.extra.get('slug') == instance.slug:
            try:
                desktop = self._build(instance, display, str(record.extra.get('url') or app_url))
            except DesktopError as exc:
                log.warning('%s: %s', instance.name, exc)
                return
            if await desktop.unit.adopt(record):
                self._desktops[instance.id] = desktop
                return
        elif record is not None:
            await self._stop_recorded(instance.id)
        if ready:
            await self.start(instance, app_url)

    def release_all(self) -> None:
        """Panel exit: leave the desktops running for the next panel."""
        for desktop in self._desktops.values():
            desktop.unit.release()
        self._desktops.clear()

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(instance_id) for instance_id in list(self._desktops)))


def _placeholder_specs() -> list[units.ProcessSpec]:
    """Specs of an adopted unit that is only ever stopped (never spawned)."""
    return [units.ProcessSpec(name, ['true']) for name in MEMBERS]
