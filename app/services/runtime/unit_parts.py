"""The plain parts of a supervised-process unit (``units.py``): its states and allowed changes
(``UnitState``, ``ALLOWED``), what to run (``ProcessSpec``), when
to run it again (``RestartPolicy``), what a state file records (``UnitRecord``, ``read_state``),
how an end or a failed start is told (``UnitExit``, ``StartFailed``), and ``spawn``, which starts
one process as the leader of its own session. No state, no event loop."""

from __future__ import annotations

import enum
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class UnitState(enum.StrEnum):
    STOPPED = 'stopped'
    STARTING = 'starting'
    RUNNING = 'running'
    BACKOFF = 'backoff'
    STOPPING = 'stopping'
    EXITED = 'exited'
    FATAL = 'fatal'


S = UnitState
ALLOWED: dict[UnitState, frozenset[UnitState]] = {
    S.STOPPED: frozenset({S.STARTING, S.RUNNING}),  # RUNNING: adopted
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.FATAL, S.STOPPING}),
    S.RUNNING: frozenset({S.EXITED, S.STOPPING}),
    S.EXITED: frozenset({S.BACKOFF, S.STARTING, S.STOPPING}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.FATAL: frozenset({S.STARTING, S.STOPPING}),
}
STARTABLE = frozenset({S.STOPPED, S.EXITED, S.FATAL, S.BACKOFF})


class InvalidTransition(RuntimeError):
    """A change of state the table does not allow: a bug in the unit or its owner."""


class RestartMode(enum.StrEnum):
    NEVER = 'never'
    ON_FAILURE = 'on-failure'
    ALWAYS = 'always'


@dataclass(frozen=True)
class RestartPolicy:
    """When and how soon a unit whose member ended starts again. The defaults are the panel's
    one set of constants; a unit may override any of them."""

    mode: RestartMode = RestartMode.NEVER
    backoff: float = 0.25  # the delay after the first quick exit in a row
    max_backoff: float = 30.0
    healthy_uptime: float = 60.0  # a run this long was not a crash loop: the count starts over
    start_retries: int | None = None  # failed automatic starts in a row before FATAL; None: never give up

    def wants_restart(self, code: int | None) -> bool:
        """``on-failure`` counts an unknown code (None) as a failure."""
        if self.mode == RestartMode.ALWAYS:
            return True
        return self.mode == RestartMode.ON_FAILURE and code != 0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th quick exit (or failed start) in a row."""
        return min(self.max_backoff, self.backoff * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class ProcessSpec:
    """One member of a unit: what to run, where, and where its output goes (None: nowhere)."""

    name: str
    argv: Sequence[str]
    cwd: str | Path = '/'
    env: Mapping[str, str] | None = None
    output: Path | None = None
    pdeathsig: bool = False  # end with the panel, even a SIGKILLed one


@dataclass(frozen=True)
class UnitExit:
    member: str
    pid: int
    code: int | None  # None: unknown (a process this panel did not start and no exit_code hook)
    uptime: float
    restart_in: float | None  # seconds until the unit starts again; None: it does not


@dataclass(frozen=True)
class RecordedProcess:
    name: str
    pid: int
    started_at: float | None


@dataclass(frozen=True)
class UnitRecord:
    """What a state file says: the processes and the owner's ``extra`` fields."""

    members: tuple[RecordedProcess, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def single(cls, pid: int, started_at: float | None, name: str = '') -> UnitRecord:
        return cls((RecordedProcess(name, pid, started_at),))


class StartFailed(Exception):
    """A start did not reach RUNNING. ``reason``: ``exited`` (``member`` ended with ``code``),
    ``timeout`` (not ready in time), ``stopped`` (stop() was called), ``error`` (spawn or
    ``before_start`` raised: ``detail``)."""

    def __init__(self, unit: str, reason: str, member: str = '', code: int | None = None, detail: str = '') -> None:
        self.unit, self.reason, self.member, self.code, self.detail = unit, reason, member, code, detail
        text = {
            'exited': f'{member} exited at start with code {code}',
            'timeout': 'not ready in time',
            'stopped': 'stopped while starting',
        }.get(reason, detail)
        super().__init__(f'{unit}: {text}')


def read_state(path: Path) -> UnitRecord | None:
    """The record of a state file; None when it is missing or unreadable (corrupt: the caller
    removes it). A file with only top-level ``pid``/``started_at`` (written before units had
    several members) reads as one member."""
    try:
        data = json.loads(path.read_text())
        listed = data.get('members') or [{'name': '', 'pid': data['pid'], 'started_at': data.get('started_at')}]
        members = tuple(
            RecordedProcess(str(m.get('name', '')), int(m['pid']), _number(m.get('started_at'))) for m in listed
        )
        extra = {k: v for k, v in data.items() if k not in ('pid', 'started_at', 'members')}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return UnitRecord(members, extra) if members and all(m.pid > 0 for m in members) else None


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'not a number: {value!r}')
    return float(value)


def spawn(spec: ProcessSpec) -> subprocess.Popen[bytes]:
    """Start ``spec`` as the leader of a new session and process group (blocking)."""
    argv = list(spec.argv)
    setpriv = shutil.which('setpriv') if spec.pdeathsig else None
    if setpriv is not None:
        argv = [setpriv, '--pdeathsig', 'TERM', '--', *argv]
    output = spec.output.open('ab') if spec.output is not None else None
    try:
        sink: Any = output if output is not None else subprocess.DEVNULL
        return subprocess.Popen(argv, cwd=spec.cwd, env=dict(spec.env) if spec.env is not None else None,
                                stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True,
                                close_fds=True)  # fmt: skip
    finally:
        if output is not None:
            output.close()
