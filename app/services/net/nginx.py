"""The nginx program: check a config (``nginx -t``), signal a reload, and, in the managed
mode, run and supervise the panel's own master.

Every command names the config by its absolute path (``-c``) and, where the build knows
``-e``, the error log under the data dir, so nothing falls back to /etc/nginx or
/var/log/nginx. The managed master runs in the foreground (``daemon off``) in its own
session, with ``setpriv --pdeathsig TERM`` where available so it ends with the panel even
when the panel is SIGKILLed; a master left by an earlier panel is found through the pid
file and ended at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..runtime import processes, units

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0
START_TIMEOUT = 10.0  # nginx retries a busy listen port 5 times, 0.5 s apart
STOP_TIMEOUT = 5.0
RELOAD_TIMEOUT = 5.0
POLL = 0.02


class NginxError(RuntimeError):
    """nginx refused a config or could not be started or signalled; the text says why."""


@dataclass(frozen=True)
class NginxPaths:
    """Where nginx keeps its files: all under ``<data>/nginx/`` (pid: elsewhere if external)."""

    folder: Path
    pid: Path

    @property
    def config(self) -> Path:
        return self.folder / 'nginx.conf'

    @property
    def error_log(self) -> Path:
        return self.folder / 'error.log'

    @property
    def access_log(self) -> Path:
        return self.folder / 'access.log'

    @property
    def temp(self) -> Path:
        return self.folder / 'temp'

    @property
    def empty(self) -> Path:
        return self.folder / 'empty'

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)  # logs may name instances and clients
        for sub in (self.temp, self.empty):
            sub.mkdir(exist_ok=True)


def find_binary() -> str | None:
    """nginx on PATH, or in the sbin folders a non-root PATH often lacks."""
    path = os.environ.get('PATH', '') + os.pathsep + '/usr/sbin:/usr/local/sbin:/sbin'
    return shutil.which('nginx', path=path)


class Nginx:
    """One nginx binary bound to one config file."""

    def __init__(self, binary: str, paths: NginxPaths) -> None:
        self.binary = binary
        self.paths = paths
        self._has_e = self._knows_error_log_option()

    def _knows_error_log_option(self) -> bool:
        """``-e`` exists since nginx 1.19.5."""
        result = subprocess.run([self.binary, '-v'], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        match = re.search(r'nginx/(\d+)\.(\d+)\.(\d+)', result.stderr + result.stdout)
        return match is not None and tuple(int(part) for part in match.groups()) >= (1, 19, 5)

    def command(self, config: Path, *extra: str, errors: str | None = 'stderr') -> list[str]:
        """``errors``: where nginx logs before it has read the config (``stderr``: to the caller)."""
        command = [self.binary, '-p', f'{self.paths.folder}/', '-c', str(config.resolve())]
        if self._has_e and errors:
            command += ['-e', errors]
        return command + list(extra)

    def test(self, config: Path) -> None:
        """``nginx -t`` on ``config``; raises NginxError with nginx's own words."""
        result = subprocess.run(self.command(config, '-t', '-q'), capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT, cwd=self.paths.folder)  # fmt: skip
        if result.returncode != 0:
            raise NginxError(_tidy(result.stderr + result.stdout) or f'nginx -t exited with {result.returncode}')

    def reload(self) -> None:
        """``nginx -s reload`` with the same ``-c``: the master named by the config's pid file re-reads
        it. Returns once only workers of the new generation accept connections (the old ones title
        themselves "shutting down" when they close their listen sockets), so the new routes are live."""
        master = self.master_pid()
        old = _accepting_workers(master) if master is not None else set()
        self._signal_reload()
        if master is None:
            return
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while True:
            accepting = _accepting_workers(master)
            if accepting and not accepting & old:
                return
            if time.monotonic() > deadline:
                raise NginxError(f'nginx kept its old config after the reload (see {self.paths.error_log})')
            time.sleep(POLL / 4)

    def _signal_reload(self) -> None:
        result = subprocess.run(self.command(self.paths.config, '-s', 'reload'), capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT, cwd=self.paths.folder)  # fmt: skip
        if result.returncode != 0:
            raise NginxError(_tidy(result.stderr + result.stdout) or f'nginx -s reload exited with {result.returncode}')

    def reopen_logs(self) -> None:
        pid = self.master_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR1)

    def master_pid(self) -> int | None:
        """The live nginx master named by the pid file, if it runs this config."""
        pid = _read_pid(self.paths.pid)
        return pid if pid is not None and self._runs_our_config(pid) else None

    def _runs_our_config(self, pid: int) -> bool:
        try:
            process = psutil.Process(pid)
            command = process.cmdline()
            alive = process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
        return alive and bool(command) and 'nginx' in command[0] and str(self.paths.config) in ' '.join(command)


class ManagedMaster:
    """The panel's own nginx master (bare host): started, restarted with back-off if it dies,
    stopped with the panel. A supervised-process unit (``runtime.units``) of one process; no
    state file: with its parent-death signal the master never outlives the panel, and a master
    an earlier panel left anyway is found through nginx's pid file and ended before each start."""

    def __init__(self, nginx: Nginx) -> None:
        self.nginx = nginx
        command = nginx.command(nginx.paths.config, '-g', 'daemon off;', errors=str(nginx.paths.error_log))
        # cwd '/': nothing of nginx counts as a process "in the data dir" (where instances run).
        spec = units.ProcessSpec('nginx master', command, cwd='/', output=nginx.paths.error_log, pdeathsig=True)
        self._unit = units.Unit(
            'nginx',
            [spec],
            policy=units.RestartPolicy(units.RestartMode.ALWAYS),
            ready=self._listening,
            start_timeout=START_TIMEOUT,
            stop_grace=STOP_TIMEOUT,
            poll=POLL,
            before_start=self._end_stale,
        )

    @property
    def pid(self) -> int | None:
        """The master's PID while it runs; None while it is (re)starting or stopped."""
        return self._unit.pid

    async def start(self) -> None:
        """End a master left by an earlier panel, then start ours; returns once it listens."""
        try:
            await self._unit.start()
        except units.StartFailed as exc:
            raise NginxError(self._failure(exc)) from exc

    async def stop(self) -> None:
        """Fast shutdown (SIGTERM to the master, which ends its workers), then make sure of it."""
        await self._unit.stop()
        self.nginx.paths.pid.unlink(missing_ok=True)

    async def _end_stale(self) -> None:
        stale = await asyncio.to_thread(self.nginx.master_pid)
        if stale is not None:
            log.info('Ending the nginx master (pid %s) an earlier panel left running', stale)
            await processes.end_group(stale, STOP_TIMEOUT, POLL)
        self.nginx.paths.pid.unlink(missing_ok=True)

    def _listening(self, pids: list[int]) -> bool:
        """nginx writes its pid file once its listen sockets are bound."""
        return _read_pid(self.nginx.paths.pid) == pids[0]

    def _failure(self, exc: units.StartFailed) -> str:
        if exc.reason == 'exited':
            return f'nginx exited at start with code {exc.code}: {self._error_tail()}'
        if exc.reason == 'timeout':
            return f'nginx did not start within {START_TIMEOUT:.0f} s: {self._error_tail()}'
        return f'nginx could not be started: {exc.detail or exc.reason}'

    def _error_tail(self) -> str:
        try:
            lines = self.nginx.paths.error_log.read_text(errors='replace').splitlines()
        except OSError:
            return '(no error log)'
        return _tidy('\n'.join(lines[-3:]))


def _accepting_workers(master: int) -> set[int]:
    """The master's workers that still accept connections (not "worker process is shutting down")."""
    found: set[int] = set()
    try:
        children = psutil.Process(master).children()
    except psutil.Error:
        return found
    for child in children:
        with contextlib.suppress(psutil.Error):
            if 'shutting down' not in ' '.join(child.cmdline()):
                found.add(child.pid)
    return found


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _tidy(text: str) -> str:
    """nginx's messages on one line, without the timestamp prefix of its error log."""
    lines = [
        re.sub(r'^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: ', r'[\1] ', line) for line in text.splitlines()
    ]
    return ' | '.join(line.strip() for line in lines if line.strip())
