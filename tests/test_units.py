"""The supervised-process unit with small fake processes: exits seen at once, the group ended
(escaped descendants too, SIGKILL after the grace), restarts with a growing and capped back-off,
the healthy-uptime reset, a set of processes that lives and dies together, adoption from the
state file, and stale or corrupt state files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import pytest

from app.services.runtime import processes
from app.services.runtime.units import (
    ALLOWED,
    InvalidTransition,
    ProcessSpec,
    RestartMode,
    RestartPolicy,
    StartFailed,
    Unit,
    UnitExit,
    UnitRecord,
    UnitState,
    read_state,
)
from tests.helpers import gone, wait_until

SLEEP = ProcessSpec('sleeper', ['sleep', '300'])
ALWAYS = RestartPolicy(RestartMode.ALWAYS, backoff=1.0, max_backoff=4.0, healthy_uptime=10.0)


class Delays:
    """An injected back-off sleep: records each delay and returns at once; from the ``hold``-th
    on it waits until cancelled (a stop), so a crash loop cannot run away."""

    def __init__(self, hold: int = 1000) -> None:
        self.seen: list[float] = []
        self.hold = hold

    async def __call__(self, delay: float) -> None:
        self.seen.append(delay)
        if len(self.seen) >= self.hold:
            await asyncio.Event().wait()


@pytest.fixture
async def units() -> AsyncIterator[list[Unit]]:
    """Units a test makes; each one is stopped at the end, whatever happened."""
    made: list[Unit] = []
    yield made
    for unit in made:
        await unit.stop()


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The unit never logs at ERROR in normal operation (only the test of a broken hook does)."""
    caplog.set_level(logging.INFO, logger='app.services.runtime.units')
    yield
    errors = [r.getMessage() for r in caplog.get_records('call') if r.levelno >= logging.ERROR]
    assert errors == [] or 'hook_fails' in os.environ.get('PYTEST_CURRENT_TEST', ''), errors


def make(units: list[Unit], *specs: ProcessSpec, **options: object) -> Unit:
    unit = Unit('test unit', specs or (SLEEP,), **options)  # type: ignore[arg-type]
    units.append(unit)
    return unit


def exits_into(found: list[UnitExit]) -> Callable[[Unit, UnitExit], None]:
    return lambda _unit, exit_: found.append(exit_)


def command(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def alive(pid: int) -> bool:
    return not gone(pid)


async def test_an_exit_is_seen_at_once_with_its_code(units: list[Unit]) -> None:
    exits: list[UnitExit] = []
    running: list[Unit] = []
    unit = make(units, on_exit=exits_into(exits), on_running=running.append)
    await unit.start()
    assert unit.state == UnitState.RUNNING and running == [unit]
    pid = unit.pid
    assert pid is not None and os.getpgid(pid) == pid and os.getsid(pid) == pid  # its own session and group
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: exits, 2, what='the exit hook')
    assert exits[0].pid == pid and exits[0].code == 128 + signal.SIGKILL and exits[0].restart_in is None
    await wait_until(lambda: unit.state == UnitState.EXITED, 2)

    code = make(units, ProcessSpec('three', ['sh', '-c', 'exit 3']), on_exit=exits_into(exits))
    await code.start()  # no readiness check: running once spawned
    await wait_until(lambda: len(exits) == 2, 2, what='exit 3')
    assert exits[1].code == 3 and code.exit_codes == {'three': 3}


async def test_stop_ends_the_group_and_escaped_descendants(units: list[Unit]) -> None:
    tree = ProcessSpec('tree', ['sh', '-c', 'sleep 300 & setsid sleep 301 & exec sleep 302'])
    unit = make(units, tree)
    await unit.start()
    leader = unit.pid
    assert leader is not None

    def escaped_children() -> list[psutil.Process]:
        return [
            p for p in processes.descendants(leader) if command(p.pid) == ['sleep', '301'] and pgid(p.pid) != leader
        ]

    await wait_until(lambda: len(processes.descendants(leader)) == 2 and escaped_children(), 5, what='the children')
    children = processes.descendants(leader)
    await unit.stop()
    assert unit.state == UnitState.STOPPED and unit.pid is None
    assert all(gone(p) for p in [*children, leader])


async def test_sigkill_after_the_grace(units: list[Unit], caplog: pytest.LogCaptureFixture) -> None:
    stubborn = ProcessSpec('stubborn', ['sh', '-c', 'trap "" TERM; exec sleep 303'])
    unit = make(units, stubborn, stop_grace=0.3)
    await unit.start()
    pid = unit.pid
    assert pid is not None
    await wait_until(lambda: command(pid) == ['sleep', '303'], 5, what='the exec')
    began = time.monotonic()
    await unit.stop()
    assert time.monotonic() - began >= 0.3 and gone(pid)
    assert 'did not end within 0.3 s: killing it' in caplog.text
    assert unit.exit_codes == {'stubborn': 128 + signal.SIGKILL}


async def test_restarts_back_off_growing_and_capped(units: list[Unit]) -> None:
    delays = Delays(hold=6)
    exits: list[UnitExit] = []
    crashing = ProcessSpec('crash', ['sh', '-c', 'exit 1'])
    unit = make(units, crashing, policy=ALWAYS, sleep=delays, clock=lambda: 0.0, on_exit=exits_into(exits))
    await unit.start()
    await wait_until(lambda: len(delays.seen) == 6, 10, what='six restarts')
    assert delays.seen == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert [e.restart_in for e in exits] == delays.seen and {e.code for e in exits} == {1}
    assert unit.state == UnitState.BACKOFF
    await unit.stop()
    assert unit.state == UnitState.STOPPED


async def test_on_failure_does_not_restart_a_clean_exit(units: list[Unit]) -> None:
    delays = Delays()
    policy = RestartPolicy(RestartMode.ON_FAILURE)
    unit = make(units, ProcessSpec('clean', ['true']), policy=policy, sleep=delays)
    await unit.start()
    await wait_until(lambda: unit.state == UnitState.EXITED, 5)
    assert delays.seen == [] and unit.exit_codes == {'clean': 0}
    assert policy.wants_restart(1) and policy.wants_restart(None) and not policy.wants_restart(0)


async def test_a_healthy_uptime_starts_the_count_over(units: list[Unit]) -> None:
    now = [0.0]
    delays = Delays()
    unit = make(units, policy=ALWAYS, sleep=delays, clock=lambda: now[0])
    await unit.start()

    async def crash_after(seconds: float) -> None:
        old = unit.pid
        assert old is not None
        now[0] += seconds
        os.kill(old, signal.SIGKILL)
        await wait_until(lambda: unit.state == UnitState.RUNNING and unit.pid not in (None, old), 5, what='restart')

    await crash_after(1)
    await crash_after(2)
    await crash_after(3)
    assert delays.seen == [1.0, 2.0, 4.0]
    await crash_after(20)  # ran longer than healthy_uptime (10 s): not a crash loop
    assert delays.seen[-1] == 1.0
    await crash_after(1)
    assert delays.seen[-1] == 2.0


async def test_a_set_lives_and_dies_together(units: list[Unit]) -> None:
    specs = [ProcessSpec(name, ['sleep', seconds]) for name, seconds in (('x', '310'), ('wm', '311'), ('app', '312'))]
    exits: list[UnitExit] = []
    unit = make(units, *specs, policy=ALWAYS, sleep=Delays(), on_exit=exits_into(exits))
    await unit.start()
    first = unit.pids
    assert len(first) == 3 and all(os.getpgid(pid) == pid for pid in first)  # each its own group
    os.kill(first[1], signal.SIGKILL)
    await wait_until(lambda: unit.state == UnitState.RUNNING and not set(unit.pids) & set(first), 5, what='the set')
    assert all(gone(pid) for pid in first), 'the others were ended with the one that died'
    assert [(e.member, e.pid) for e in exits] == [('wm', first[1])]
    second = unit.pids
    await unit.stop()
    assert all(gone(pid) for pid in second) and unit.pids == []


async def test_a_start_that_fails_ends_what_it_spawned(units: list[Unit]) -> None:
    never = make(units, ready=lambda _pids: False, start_timeout=0.2)
    with pytest.raises(StartFailed) as failed:
        await never.start()
    assert failed.value.reason == 'timeout' and never.state == UnitState.FATAL and never.exit_codes
    early = make(units, ProcessSpec('early', ['sh', '-c', 'exit 4']), ready=lambda _pids: False)
    with pytest.raises(StartFailed) as exited:
        await early.start()
    assert (exited.value.reason, exited.value.member, exited.value.code) == ('exited', 'early', 4)
    missing = make(units, ProcessSpec('missing', ['/nonexistent/program']))
    with pytest.raises(StartFailed) as error:
        await missing.start()
    assert error.value.reason == 'error' and missing.state == UnitState.FATAL


async def test_an_automatic_start_gives_up_after_its_retries(units: list[Unit], tmp_path: Path) -> None:
    flag = tmp_path / 'first'
    flag.touch()
    # Runs once; every later start exits at once, before it is "ready".
    script = f'if [ -e {flag} ]; then rm {flag}; exec sleep 300; fi; exit 5'
    fatal: list[StartFailed] = []
    delays = Delays()
    unit = make(
        units,
        ProcessSpec('flaky', ['sh', '-c', script]),
        policy=RestartPolicy(RestartMode.ALWAYS, backoff=1, max_backoff=8, start_retries=2),
        ready=lambda pids: command(pids[0])[:1] == ['sleep'],
        sleep=delays,
        on_fatal=lambda _unit, exc: fatal.append(exc),
    )
    await unit.start()
    pid = unit.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    await wait_until(lambda: fatal, 10, what='the unit to give up')
    assert unit.state == UnitState.FATAL and fatal[0].code == 5
    assert delays.seen == [1.0, 2.0, 4.0]  # the exit, then two failed starts: the third failure gives up


async def test_adopt_from_the_state_file(units: list[Unit], tmp_path: Path) -> None:
    state = tmp_path / 'unit.json'
    specs = [ProcessSpec('a', ['sleep', '320']), ProcessSpec('b', ['sleep', '321'])]
    first = Unit('test unit', specs, state_file=state, extra={'port': 8080})
    await first.start()
    pids = first.pids
    first.release()  # the panel dies: nobody stops anything
    del first

    record = read_state(state)
    assert record is not None and record.extra == {'port': 8080}
    assert [m.pid for m in record.members] == pids and json.loads(state.read_text())['pid'] == pids[0]
    exits: list[UnitExit] = []
    second = make(units, *specs, state_file=state, on_exit=exits_into(exits))
    assert await second.adopt(record)
    assert second.state == UnitState.RUNNING and second.pids == pids
    with pytest.raises(InvalidTransition):
        await second.adopt(record)
    os.kill(pids[0], signal.SIGKILL)
    await wait_until(lambda: exits, 2, what='the adopted exit')
    assert exits[0].pid == pids[0] and exits[0].code is None  # not our child: no wait status
    await wait_until(lambda: second.state == UnitState.EXITED and not state.exists(), 5)
    await wait_until(lambda: gone(pids[1]), 5, what='its partner to be ended')


async def test_stale_and_corrupt_state_files(units: list[Unit], tmp_path: Path) -> None:
    state = tmp_path / 'unit.json'
    for text in ('not json', '[]', '{"pid": "x"}', '{"members": [{"pid": -1}]}', '{"pid": 5, "started_at": "y"}'):
        state.write_text(text)
        assert read_state(state) is None, text
    assert read_state(tmp_path / 'missing.json') is None

    ended = subprocess.Popen(['true'])
    ended.wait()
    reused = psutil.Process()  # a live PID that is not the recorded process: another start time
    for pid, started in ((ended.pid, time.time()), (reused.pid, reused.create_time() - 100)):
        state.write_text(json.dumps({'pid': pid, 'started_at': started}))  # (the one-member form)
        record = read_state(state)
        assert record is not None
        unit = make(units, state_file=state)
        assert not await unit.adopt(record)
        assert unit.state == UnitState.STOPPED and not state.exists()
    assert reused.is_running()

    restarted = make(units, policy=ALWAYS, state_file=state)
    await restarted.resume(UnitRecord.single(ended.pid, None))
    assert restarted.state == UnitState.RUNNING and restarted.pid != ended.pid and state.exists()


async def test_the_identify_check_refuses_a_stranger(units: list[Unit]) -> None:
    stranger = subprocess.Popen(['sleep', '330'], start_new_session=True)
    try:
        record = UnitRecord.single(stranger.pid, processes.start_time(stranger.pid))
        picky = make(units, identify=lambda _name, pid: 'socat' in ' '.join(psutil.Process(pid).cmdline()))
        assert not await picky.adopt(record)
        assert alive(stranger.pid), 'a process that fails the identify check is never ended'
    finally:
        stranger.kill()
        stranger.wait()


async def test_the_transition_table_guards_every_change(units: list[Unit]) -> None:
    assert UnitState.RUNNING not in ALLOWED[UnitState.STOPPING]
    assert set(ALLOWED) == set(UnitState)
    unit = make(units)
    await unit.stop()  # stopping a stopped unit: nothing to do
    with pytest.raises(InvalidTransition):
        unit._change_state(UnitState.EXITED)
    assert unit.state == UnitState.STOPPED


async def test_a_failing_hook_is_logged_not_lost_hook_fails(
    units: list[Unit], caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(_unit: Unit, _exit: UnitExit) -> None:
        raise RuntimeError('owner bug')

    unit = make(units, ProcessSpec('short', ['true']), on_exit=broken)
    await unit.start()
    await wait_until(lambda: 'owner bug' in caplog.text, 5, what='the logged failure')
