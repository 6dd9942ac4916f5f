"""Interactive shells on pseudo-terminals: one bash per open Terminal tab.

A shell runs in its own session with the PTY as controlling terminal (job control works,
resizes reach the foreground program as SIGWINCH). Output is read without blocking through
the event loop; input is written the same way. Closing ends the whole session: SIGHUP to
the shell's process group and every process it started, SIGKILL after a short grace.

At most ``per_owner`` shells live per owner (a browser); opening one more closes the oldest
and tells it why. Nothing here knows about pages: callers hand in plain callbacks.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import fcntl
import logging
import os
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ...config import Settings
from ...models import Instance, InstancePublic
from ..catalog.blueprints import BlueprintError
from ..errors import Conflict
from ..runtime import launch, processes

log = logging.getLogger(__name__)

PER_OWNER = 5
CLOSE_GRACE = 1.0  # seconds between SIGHUP and SIGKILL
READ_SIZE = 65536
RC_FILE = 'terminal.rc'
EVICTED = f'Closed: at most {PER_OWNER} terminals per user, and this was the oldest.'

# Runs in the child: the PTY on stdin becomes the controlling terminal of the new session,
# then the shell replaces this interpreter (no preexec_fn: the panel has threads).
_TAKE_CONTROLLING_TTY = (
    'import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])'
)

RC_TEXT = r"""# Written by AiKore for its Terminal tab: the user's bashrc, then the instance's setup.
if [[ -f ~/.bashrc ]]; then source ~/.bashrc; fi
PS1='\[\e[1;36m\]${INSTANCE_NAME}\[\e[0m\]:\w\$ '
case "${AIKORE_VENV_TYPE:-}" in
  venv)
    if [[ -f "${AIKORE_VENV}/bin/activate" ]]; then
      source "${AIKORE_VENV}/bin/activate"
    else
      printf 'AiKore: no venv at %s yet (start the instance once to create it)\n' "${AIKORE_VENV}"
    fi ;;
  conda)
    if command -v conda >/dev/null 2>&1 && [[ -d "${AIKORE_VENV}" ]]; then
      eval "$(conda shell.bash hook)" && conda activate "${AIKORE_VENV}"
    elif command -v micromamba >/dev/null 2>&1 && [[ -d "${AIKORE_VENV}" ]]; then
      eval "$(micromamba shell hook -s bash)" && micromamba activate "${AIKORE_VENV}"
    else
      printf 'AiKore: conda env %s is not available here\n' "${AIKORE_VENV}"
    fi ;;
esac
cd "${INSTANCE_DIR}" 2>/dev/null || true
"""


@dataclass(frozen=True)
class ShellSpec:
    """What to run, where, with which environment."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]


def instance_shell(settings: Settings, instance: Instance | InstancePublic, functions_path: Path) -> ShellSpec:
    """An interactive bash in the instance's folder with the environment of a run (blocking)."""
    folder = launch.instance_dir(settings, instance.name)
    for sub in ('run', 'tmp'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    row = Instance(name=instance.name, slug=instance.slug, blueprint=instance.blueprint, gpu_ids=instance.gpu_ids)
    port = instance.internal_port if instance.status.is_running else None
    env = launch.environment(settings, row, port or 0, folder, launch.output_dir(settings, instance), functions_path)
    if not port:
        env.pop('WEBUI_PORT', None)  # not running: no port was allocated
    env.pop('BASH_ENV', None)
    env.update(TERM='xterm-256color', COLORTERM='truecolor', AIKORE_TERMINAL='1')
    env.update(_venv_variables(settings, row, folder))
    rc_file = folder / 'run' / RC_FILE
    rc_file.write_text(RC_TEXT, encoding='utf-8')
    return ShellSpec(argv=[launch.bash(), '--rcfile', str(rc_file), '-i'], cwd=folder, env=env)


def _venv_variables(settings: Settings, instance: Instance, folder: Path) -> dict[str, str]:
    """AIKORE_VENV_TYPE/AIKORE_VENV when the launch script's metadata declares an env."""
    try:
        meta = launch.read_meta(settings, instance)
    except (Conflict, OSError, BlueprintError) as exc:
        log.info('No environment to activate for %s: %s', folder.name, exc)
        return {}
    if meta.venv_type not in {'venv', 'conda'} or not meta.venv_path:
        return {}
    return {'AIKORE_VENV_TYPE': meta.venv_type, 'AIKORE_VENV': str(folder / meta.venv_path)}


OutputCallback = Callable[[bytes], Any]
EndedCallback = Callable[[str], Any]


class Terminal:
    """One shell on one PTY. Create with :meth:`Terminals.open`."""

    def __init__(
        self, owner: str, process: subprocess.Popen[bytes], master: int, output: OutputCallback, ended: EndedCallback
    ) -> None:
        self.owner = owner
        self.process = process
        self._master = master
        self._output = output
        self._ended = ended
        self._pending = b''
        self._loop = asyncio.get_running_loop()
        self._finished: asyncio.Task[None] | None = None
        self._on_gone: Callable[[Terminal], None] = lambda _: None
        self.closed = False
        os.set_blocking(master, False)
        self._loop.add_reader(master, self._readable)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return not self.closed and self.process.poll() is None

    # ------------------------------------------------------------------ input / output

    def write(self, data: bytes | str) -> None:
        """Send keystrokes (or pasted text) to the shell."""
        if self.closed:
            return
        self._pending += data.encode('utf-8') if isinstance(data, str) else data
        self._flush()

    def _flush(self) -> None:
        while self._pending:
            try:
                written = os.write(self._master, self._pending)
            except BlockingIOError:
                self._loop.add_writer(self._master, self._flush)
                return
            except OSError as exc:
                log.info('Terminal %s no longer takes input: %s', self.pid, exc)
                self._pending = b''
                break
            self._pending = self._pending[written:]
        self._loop.remove_writer(self._master)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: every slave end is closed, the shell is gone
                log.warning('Terminal %s read failed: %s', self.pid, exc)
            data = b''
        if not data:
            self._stop_io()
            self._finished = self._loop.create_task(self._shell_exited())
            return
        try:
            self._output(data)
        except Exception:
            log.exception('Terminal %s output callback failed', self.pid)

    def resize(self, cols: int, rows: int) -> None:
        if not self.closed:
            set_size(self._master, cols, rows)

    # ------------------------------------------------------------------ ending

    async def _shell_exited(self) -> None:
        code = await asyncio.to_thread(self.process.wait)
        if self.closed:
            return
        self._release()
        self._tell_ended(f'Shell exited with code {code}.')

    def close(self, reason: str | None = None) -> None:
        """End the shell and everything it started; ``reason`` is shown in the terminal."""
        if self.closed:
            return
        others = processes.descendants(self.pid)
        self._release()
        processes.signal_group(self.pid, signal.SIGHUP, others)
        self._finished = self._loop.create_task(self._reap(others))
        if reason:
            self._tell_ended(reason)

    async def _reap(self, others: list[psutil.Process]) -> None:
        try:
            await asyncio.to_thread(self.process.wait, CLOSE_GRACE)
        except subprocess.TimeoutExpired:
            log.info('Terminal shell %s ignored SIGHUP; killing it', self.pid)
        processes.signal_group(
            self.pid, signal.SIGKILL, [*others, *await asyncio.to_thread(_session_members, self.pid)]
        )
        await asyncio.to_thread(self.process.wait)

    async def wait_closed(self) -> None:
        """Return once the shell process has been reaped."""
        if self._finished is not None:
            await asyncio.shield(self._finished)

    def _release(self) -> None:
        self.closed = True
        self._stop_io()
        with contextlib.suppress(OSError):
            os.close(self._master)
        self._on_gone(self)

    def _stop_io(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)

    def _tell_ended(self, reason: str) -> None:
        try:
            self._ended(reason)
        except Exception:
            log.exception('Terminal %s ended callback failed', self.pid)


class Terminals:
    """Every open shell of the panel, at most ``per_owner`` per owner (oldest closed first)."""

    def __init__(self, per_owner: int = PER_OWNER) -> None:
        self.per_owner = per_owner
        self._open: list[Terminal] = []

    def of(self, owner: str) -> list[Terminal]:
        """The owner's open shells, oldest first."""
        return [terminal for terminal in self._open if terminal.owner == owner]

    async def open(
        self, owner: str, spec: ShellSpec, output: OutputCallback, ended: EndedCallback, cols: int = 80, rows: int = 24
    ) -> Terminal:
        while len(mine := self.of(owner)) >= self.per_owner:
            mine[0].close(EVICTED)
        process, master = await asyncio.to_thread(_spawn, spec, cols, rows)
        terminal = Terminal(owner, process, master, output, ended)
        terminal._on_gone = self._forget
        self._open.append(terminal)
        log.info('Terminal %s opened in %s (%d open for this user)', terminal.pid, spec.cwd, len(self.of(owner)))
        return terminal

    def _forget(self, terminal: Terminal) -> None:
        if terminal in self._open:
            self._open.remove(terminal)

    async def close_all(self) -> None:
        every = list(self._open)
        for terminal in every:
            terminal.close('The panel is shutting down.')
        await asyncio.gather(*(terminal.wait_closed() for terminal in every), return_exceptions=True)


def _spawn(spec: ShellSpec, cols: int, rows: int) -> tuple[subprocess.Popen[bytes], int]:
    if not spec.cwd.is_dir():
        raise Conflict(f'Folder {spec.cwd} does not exist; cannot open a terminal there')
    master, slave = os.openpty()
    try:
        set_size(master, cols, rows)
        process = subprocess.Popen(
            [sys.executable, '-I', '-S', '-c', _TAKE_CONTROLLING_TTY, *spec.argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=spec.cwd,
            env=spec.env,
            start_new_session=True,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return process, master


def set_size(fd: int, cols: int, rows: int) -> None:
    """Set a PTY's window size (the kernel signals SIGWINCH to its foreground programs)."""
    cols, rows = max(2, min(int(cols), 1000)), max(1, min(int(rows), 1000))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))


def _session_members(sid: int) -> list[psutil.Process]:
    """Processes still in the shell's session (jobs it started in other groups, orphans)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(process.pid) == sid:
                members.append(process)
    return members


def utf8_decoder() -> codecs.IncrementalDecoder:
    """A decoder for terminal output that may split a character between two reads."""
    return codecs.getincrementaldecoder('utf-8')(errors='replace')
