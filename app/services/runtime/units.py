"""One supervised-process unit: spawn, watch, end, restart and re-adopt a set of processes.

A :class:`Unit` holds one or more processes that live and die together (the managed nginx
master and a socat forwarder hold one; the desktop will hold four: Xvfb, openbox, Chromium,
Selkies). Modelled on supervisord's ``process.py``: the unit has its own small state
machine (:class:`UnitState`) and every change goes through ``_change_state``, which refuses
a transition the table :data:`ALLOWED` does not list::

    STOPPED --start--> STARTING --ready--> RUNNING --a member ends--> EXITED
       ^                  |  (fails)                                    |
       |                  +--> FATAL (explicit start, or retries spent) | policy says restart
       |                  +--> BACKOFF <-------------------------------+
       |                          | (after the delay) --> STARTING
       +--- STOPPING <--- stop() from any state but STOPPED

What the unit does for its owner:

- **Spawn**: each process leads its own session and process group (``start_new_session``), so
  ending "the process" means ending its group. A member with ``pdeathsig`` runs under
  ``setpriv --pdeathsig TERM`` and is forked from the event loop's thread: the parent-death
  signal follows the *thread* that forked, and a worker thread may end before the panel.
- **Exit watch**: a pidfd per member (:class:`processes.ExitWatch`), so an exit is seen at once,
  also for processes an earlier panel started and this one re-adopted.
- **End a group**: SIGTERM to the group and to descendants that left it (``setsid``), then
  SIGKILL after the grace period, and wait until nothing of it remains.
- **Restart policy** (:class:`RestartPolicy`): ``never`` / ``on-failure`` / ``always``, with an
  exponential back-off (``backoff * 2**(n-1)`` after the n-th quick exit in a row, capped at
  ``max_backoff``); a run that lasted ``healthy_uptime`` starts the count over. If one member
  ends, the others are ended and the whole set restarts. ``start_retries`` bounds the failed
  automatic starts in a row before the unit gives up (FATAL, ``on_fatal``).
- **State file** (optional): JSON ``{**extra, "pid", "started_at", "members": [...]}`` written
  atomically once the unit runs, removed when it is stopped or ends. A panel killed with SIGKILL
  builds the unit again and calls :meth:`Unit.adopt`: the same PID with the same start time is
  the same process (watched again); otherwise the processes are gone and the owner starts the
  unit per its policy (:meth:`Unit.resume` does both).
- **Hooks**: ``on_running(unit)`` once it runs (started or adopted), ``on_exit(unit, UnitExit)``
  as soon as a member's end is seen (its code, the uptime, and whether and when the unit
  restarts), ``on_fatal(unit, StartFailed)``; ``exit_code(member, pid, status)`` lets the owner
  read the code from elsewhere (a runner's exit file). Hooks may be coroutine functions.
- Failures of its background tasks and hooks are always logged (ERROR: they are bugs); an
  exit, a restart or a failed start is INFO or WARNING.

Users: the managed nginx and socat forwarders (``net/``), instance runs (``executor.py``, which
says how a run sits on a unit), desktops (``desktop.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ..files import write_atomic
from ..tasks import BackgroundTasks
from . import processes
from .unit_parts import ALLOWED, STARTABLE
from .unit_parts import InvalidTransition as InvalidTransition
from .unit_parts import ProcessSpec as ProcessSpec
from .unit_parts import RecordedProcess as RecordedProcess
from .unit_parts import RestartMode as RestartMode
from .unit_parts import RestartPolicy as RestartPolicy
from .unit_parts import StartFailed as StartFailed
from .unit_parts import UnitExit as UnitExit
from .unit_parts import UnitRecord as UnitRecord
from .unit_parts import UnitState as UnitState
from .unit_parts import read_state as read_state
from .unit_parts import spawn as spawn

log = logging.getLogger(__name__)

NEVER = RestartPolicy()  # the default: an owner restarts the unit itself, if at all
KILL_WAIT = 5.0  # after SIGKILL: how long to wait for the kernel to reap the group


@dataclass(eq=False)
class _Member:
    spec: ProcessSpec
    pid: int
    started_at: float | None
    popen: subprocess.Popen[bytes] | None = None  # None when adopted
    watch: processes.ExitWatch | None = None
    code: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)


Hook = Callable[..., object]


class Unit:
    """A set of processes supervised together; see the module docstring."""

    def __init__(
        self,
        name: str,
        specs: Sequence[ProcessSpec],
        *,
        policy: RestartPolicy = NEVER,
        state_file: Path | None = None,
        extra: Mapping[str, Any] | None = None,
        ready: Callable[[list[int]], bool] | None = None,
        start_timeout: float = 10.0,
        stop_grace: float = 5.0,
        poll: float = 0.02,
        before_start: Callable[[], Awaitable[None]] | None = None,
        identify: Callable[[str, int], bool] | None = None,
        exit_code: Callable[[str, int, int | None], int | None] | None = None,
        on_running: Hook | None = None,
        on_exit: Hook | None = None,
        on_fatal: Hook | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``ready(pids)`` (run in a worker thread, polled every ``poll`` s until ``start_timeout``):
        True once the set serves; None: running as soon as spawned. ``identify(member, pid)``: an
        extra check at adoption (e.g. the command line). ``clock`` measures uptimes and ``sleep``
        waits out back-offs: tests inject both."""
        if not specs:
            raise ValueError('a unit needs at least one process')
        self.name = name
        self.specs = tuple(specs)
        self.policy = policy
        self.state_file = state_file
        self.extra = dict(extra or {})
        self.start_timeout, self.stop_grace, self.poll = start_timeout, stop_grace, poll
        self._ready, self._before_start, self._identify, self._exit_code = ready, before_start, identify, exit_code
        self._on_running, self._on_exit, self._on_fatal = on_running, on_exit, on_fatal
        self._clock, self._sleep = clock, sleep
        self._state = UnitState.STOPPED
        self._members: list[_Member] = []
        self._running_since = 0.0
        self.failures = 0  # quick exits (and failed automatic starts) in a row
        self._start_failures = 0
        self._restart_task: asyncio.Task[None] | None = None
        self._background = BackgroundTasks(name)
        self._launching: asyncio.Event | None = None  # set when no launch is in progress
        self.exit_codes: dict[str, int | None] = {}  # the last exit code seen of each member

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> UnitState:
        return self._state

    @property
    def pids(self) -> list[int]:
        """The members' PIDs while the unit runs (empty otherwise)."""
        return [m.pid for m in self._members] if self._state == UnitState.RUNNING else []

    @property
    def pid(self) -> int | None:
        """The first member's PID while the unit runs."""
        pids = self.pids
        return pids[0] if pids else None

    def _change_state(self, new: UnitState) -> None:
        old = self._state
        if new not in ALLOWED[old]:
            log.warning('%s: refused state change %s -> %s', self.name, old, new)
            raise InvalidTransition(f'{self.name}: {old} -> {new}')
        self._state = new
        log.debug('%s: %s -> %s', self.name, old, new)

    # ------------------------------------------------------------------ start

    async def start(self) -> None:
        """Start the set now (cancelling a pending restart); returns once it is ready, raises
        StartFailed (state FATAL) if not: an explicit start is not retried. No-op if running."""
        if self._state in (UnitState.STARTING, UnitState.RUNNING):
            return
        if self._state not in STARTABLE:
            raise InvalidTransition(f'{self.name}: cannot start while {self._state}')
        self._cancel_restart()
        self.failures = self._start_failures = 0
        try:
            await self._launch()
        except BaseException:
            if self._state == UnitState.STARTING:
                self._change_state(UnitState.FATAL)
            raise

    async def _launch(self) -> None:
        """STARTING: run before_start, spawn every member, wait until ready; RUNNING on success.
        On failure, ends what it spawned (unless a stop took over) and raises StartFailed."""
        self._change_state(UnitState.STARTING)
        done = self._launching = asyncio.Event()
        members: list[_Member] = []
        self._members = members
        try:
            try:
                if self._before_start is not None:
                    await self._before_start()
                for spec in self.specs:
                    if self._state != UnitState.STARTING:
                        raise StartFailed(self.name, 'stopped')
                    member = await self._spawn(spec)
                    members.append(member)
                    self._watch(member)
                await self._wait_ready(members)
            except StartFailed:
                raise
            except Exception as exc:
                raise StartFailed(self.name, 'error', detail=str(exc) or type(exc).__name__) from exc
        except BaseException:
            await self._end(members)
            raise
        finally:
            done.set()
        self._running_since = self._clock()
        self._start_failures = 0
        if self.state_file is not None:
            await asyncio.to_thread(self._write_state, members)
        self._change_state(UnitState.RUNNING)
        log.info('%s running (pid %s)', self.name, ', '.join(str(m.pid) for m in members))
        self._call(self._on_running, self)

    async def _spawn(self, spec: ProcessSpec) -> _Member:
        if spec.pdeathsig:
            popen = spawn(spec)  # from the loop's thread: see the module docstring
        else:
            popen = await asyncio.to_thread(spawn, spec)
        return _Member(spec, popen.pid, processes.start_time(popen.pid), popen)

    def attach(self, pid: int, started_at: float | None, popen: subprocess.Popen[bytes] | None = None) -> None:
        """Take a process its owner spawned itself (with :func:`spawn`, in the same worker-thread
        trip that records it) as the only member of this unit: RUNNING at once, watched and ended
        like any other. Call it on the event loop's thread."""
        if len(self.specs) != 1:
            raise ValueError(f'{self.name}: only a unit of one process can attach one')
        member = _Member(self.specs[0], pid, started_at, popen)
        self._change_state(UnitState.RUNNING)
        self._members = [member]
        self._running_since = self._clock()
        self._watch(member)

    async def _wait_ready(self, members: list[_Member]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            for member in members:
                if member.exited.is_set():
                    raise StartFailed(self.name, 'exited', member.spec.name, member.code)
            if self._state != UnitState.STARTING:
                raise StartFailed(self.name, 'stopped')
            if self._ready is None or await asyncio.to_thread(self._ready, [m.pid for m in members]):
                return
            if time.monotonic() > deadline:
                raise StartFailed(self.name, 'timeout')
            await asyncio.sleep(self.poll)

    # ------------------------------------------------------------------ exit and restart

    def _watch(self, member: _Member) -> None:
        member.watch = processes.ExitWatch(member.pid, lambda: self._spawn_task(self._member_exited(member)))

    async def _member_exited(self, member: _Member) -> None:
        member.code = await asyncio.to_thread(self._collect_code, member)
        member.exited.set()
        self.exit_codes[member.spec.name] = member.code
        if self._state != UnitState.RUNNING or member not in self._members:
            return  # a start in progress or a stop sees it itself
        uptime = self._clock() - self._running_since
        self._change_state(UnitState.EXITED)
        delay: float | None = None
        if self.policy.wants_restart(member.code):
            self.failures = 1 if uptime >= self.policy.healthy_uptime else self.failures + 1
            delay = self.policy.delay(self.failures)
        level = logging.INFO if member.code == 0 else logging.WARNING
        then = f'restarting in {delay:.2f} s' if delay is not None else 'not restarting'
        log.log(level, '%s: %s (pid %s) exited with code %s after %.1f s; %s', self.name, member.spec.name,
                member.pid, member.code, uptime, then)  # fmt: skip
        self._call(self._on_exit, self, UnitExit(member.spec.name, member.pid, member.code, uptime, delay))
        await self._end(self._members)  # the others, and what the dead one left in its group
        if self._state != UnitState.EXITED:
            return  # stopped or started meanwhile
        await asyncio.to_thread(self._remove_state)
        if delay is not None:
            self._change_state(UnitState.BACKOFF)
            self._restart_task = self._spawn_task(self._restart_after(delay))

    def _collect_code(self, member: _Member) -> int | None:
        status: int | None = None
        if member.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = member.popen.wait(timeout=5)
            if status is not None and status < 0:
                status = 128 - status  # killed by a signal: the shell's convention
        if self._exit_code is not None:
            return self._exit_code(member.spec.name, member.pid, status)
        return status

    async def _restart_after(self, delay: float) -> None:
        while True:
            await self._sleep(delay)
            if self._state != UnitState.BACKOFF:
                return
            try:
                await self._launch()
                return
            except StartFailed as exc:
                if self._state != UnitState.STARTING:
                    return  # stopped meanwhile
                self.failures += 1
                self._start_failures += 1
                retries = self.policy.start_retries
                if retries is not None and self._start_failures > retries:
                    self._change_state(UnitState.FATAL)
                    log.warning('%s could not start again (%s): giving up', self.name, exc)
                    self._call(self._on_fatal, self, exc)
                    return
                delay = self.policy.delay(self.failures)
                self._change_state(UnitState.BACKOFF)
                log.warning('%s could not start again (%s): trying again in %.2f s', self.name, exc, delay)

    def _cancel_restart(self) -> None:
        task, self._restart_task = self._restart_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # ------------------------------------------------------------------ stop

    async def stop(self) -> None:
        """End every member's group (TERM, grace, KILL, escaped descendants), remove the state
        file; returns once nothing of the unit remains. Also cancels a pending restart."""
        if self._state == UnitState.STOPPED:
            return
        while self._state == UnitState.STOPPING:  # another stop is at work: wait for it
            await asyncio.sleep(self.poll)
            if self._state == UnitState.STOPPED:
                return
        self._change_state(UnitState.STOPPING)
        self._cancel_restart()
        if self._launching is not None:
            await self._launching.wait()  # it sees STOPPING at its next step and ends what it spawned
        await self._end(self._members)
        for member in self._members:
            if member.watch is not None:
                member.watch.close()
        self._members = []
        await asyncio.to_thread(self._remove_state)
        self._change_state(UnitState.STOPPED)

    async def _end(self, members: list[_Member]) -> None:
        await asyncio.gather(*(self._end_member(m) for m in members))

    async def _end_member(self, member: _Member) -> None:
        pid = member.pid
        alive = not member.exited.is_set() and await asyncio.to_thread(
            processes.is_same_process, pid, member.started_at
        )
        # Only a live leader's tree is ours: the PID of one long gone may belong to anyone now.
        escaped = (
            [p for p in await asyncio.to_thread(processes.descendants, pid) if _pgid(p.pid) != pid] if alive else []
        )
        if not alive and not await asyncio.to_thread(processes.group_members, pid):
            return
        processes.signal_group(pid, signal.SIGTERM, escaped)
        if await self._gone(member, escaped, self.stop_grace):
            return
        log.warning('%s: %s (pid %s) did not end within %.1f s: killing it', self.name, member.spec.name, pid,
                    self.stop_grace)  # fmt: skip
        processes.signal_group(pid, signal.SIGKILL, escaped)
        if not await self._gone(member, escaped, KILL_WAIT):
            log.error('%s: processes of %s (pid %s) survived SIGKILL', self.name, member.spec.name, pid)

    async def _gone(self, member: _Member, escaped: list[psutil.Process], timeout: float) -> bool:
        """True once the member, its group and its escaped descendants are gone. A watched member
        counts as gone once its exit was collected (so its code is known)."""
        deadline = time.monotonic() + timeout
        if member.watch is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(member.exited.wait(), timeout)
        while True:
            if member.watch is not None:
                ended = member.exited.is_set()
            else:
                ended = not await asyncio.to_thread(processes.is_same_process, member.pid, member.started_at)
            left = await asyncio.to_thread(processes.group_members, member.pid)
            if ended and not left and not processes.still_running(escaped):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll)

    def release(self) -> None:
        """Panel exit without stopping: stop watching, leave the processes and the state file for
        the next panel to adopt."""
        self._cancel_restart()
        for member in self._members:
            if member.watch is not None:
                member.watch.close()
        self._background.cancel_all()

    # ------------------------------------------------------------------ adoption

    async def adopt(self, record: UnitRecord) -> bool:
        """Take back the processes of ``record`` (same PID + start time, and ``identify``): True,
        state RUNNING. Otherwise they are gone: the survivors of the set are ended, the state
        file removed, and False (state STOPPED: the owner starts it per its wants)."""
        if self._state != UnitState.STOPPED:
            raise InvalidTransition(f'{self.name}: cannot adopt while {self._state}')
        alive = await asyncio.to_thread(self._alive, record)
        pairs = list(zip(self.specs, record.members, strict=False))
        if len(record.members) != len(self.specs) or not all(alive):
            await self._end([self._recorded(spec, rec) for (spec, rec), up in zip(pairs, alive, strict=True) if up])
            await asyncio.to_thread(self._remove_state)
            log.info('%s: the recorded processes are gone', self.name)
            return False
        self._members = [self._recorded(spec, rec) for spec, rec in pairs]
        wall_uptime = max(0.0, time.time() - min(m.started_at or time.time() for m in self._members))
        self._running_since = self._clock() - wall_uptime
        self._change_state(UnitState.RUNNING)
        for member in self._members:
            self._watch(member)
        log.info('%s re-adopted (pid %s)', self.name, ', '.join(str(m.pid) for m in self._members))
        self._call(self._on_running, self)
        return True

    async def resume(self, record: UnitRecord | None) -> None:
        """Adopt ``record``'s processes, or (gone, or no record) start the unit unless its
        policy is ``never``."""
        if record is not None and await self.adopt(record):
            return
        if self.policy.mode != RestartMode.NEVER:
            await self.start()

    def _alive(self, record: UnitRecord) -> list[bool]:
        found = []
        for spec, rec in zip(self.specs, record.members, strict=False):
            same = processes.is_same_process(rec.pid, rec.started_at)
            found.append(same and (self._identify is None or self._identify(spec.name, rec.pid)))
        return found

    @staticmethod
    def _recorded(spec: ProcessSpec, rec: RecordedProcess) -> _Member:
        return _Member(spec, rec.pid, rec.started_at)

    # ------------------------------------------------------------------ state file

    def _write_state(self, members: list[_Member]) -> None:
        assert self.state_file is not None
        recorded = [{'name': m.spec.name, 'pid': m.pid, 'started_at': m.started_at} for m in members]
        data = {**self.extra, 'pid': members[0].pid, 'started_at': members[0].started_at, 'members': recorded}
        write_atomic(self.state_file, json.dumps(data))

    def _remove_state(self) -> None:
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ tasks and hooks

    def _spawn_task(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._background.spawn(coroutine)

    def _call(self, hook: Hook | None, *args: object) -> None:
        if hook is None:
            return
        try:
            result = hook(*args)
        except Exception:
            log.exception('%s: hook %s failed', self.name, getattr(hook, '__name__', hook))
            return
        if inspect.isawaitable(result):
            self._spawn_task(_awaited(result))


async def _awaited(awaitable: Awaitable[object]) -> None:
    await awaitable


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
