"""The lifecycle's transition table, the one writer of instance rows, and the shared log follower
(in-process: a real SQLite database, real files)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app import lifecycle
from app.db import prepare_database
from app.lifecycle import InstanceStatus as S
from app.models import Instance, InstancePublic
from app.services.catalog import store
from app.services.catalog.rows import InstanceRows, TransitionRefused
from app.services.consoles.log_stream import LogStreams, LogText
from app.services.events import EventBus
from tests.helpers import wait_until

ALLOWED = {
    (S.STOPPED, S.STARTING),
    (S.ERROR, S.STARTING),
    (S.ERROR, S.STOPPED),
    (S.STARTING, S.STARTED),
    (S.STARTING, S.STALLED),
    (S.STARTING, S.STOPPING),
    (S.STARTING, S.STOPPED),
    (S.STARTING, S.ERROR),
    (S.STALLED, S.STARTED),
    (S.STALLED, S.STOPPING),
    (S.STALLED, S.STOPPED),
    (S.STALLED, S.ERROR),
    (S.STARTED, S.STOPPING),
    (S.STARTED, S.STOPPED),
    (S.STARTED, S.ERROR),
    (S.STOPPING, S.STOPPED),
    (S.STOPPING, S.ERROR),
    # a Slurm job: submitted -> queued -> it runs (starting), or is stopped or fails while queued
    (S.STOPPED, S.QUEUED),
    (S.ERROR, S.QUEUED),
    (S.QUEUED, S.STARTING),
    (S.QUEUED, S.STOPPING),
    (S.QUEUED, S.STOPPED),
    (S.QUEUED, S.ERROR),
    (S.INSTALLING, S.STOPPED),  # a clone's copy ended
    (S.INSTALLING, S.ERROR),  # it failed, or the panel stopped during it
}


@pytest.mark.parametrize(('previous', 'new'), sorted(ALLOWED))
def test_every_allowed_transition(previous: S, new: S) -> None:
    lifecycle.check(previous, new)
    assert previous in lifecycle.sources(new)


def test_everything_else_is_refused() -> None:
    refused = [(a, b) for a in S for b in S if (a, b) not in ALLOWED]
    assert (S.STARTED, S.STARTING) in refused and (S.STOPPING, S.STARTED) in refused
    assert (S.STOPPED, S.STOPPED) in refused and (S.STOPPED, S.STARTED) in refused
    for previous, new in refused:
        with pytest.raises(lifecycle.IllegalTransition):
            lifecycle.check(previous, new)


def test_named_groups() -> None:
    assert {S.QUEUED, S.STARTING, S.STARTED, S.STALLED, S.STOPPING} == lifecycle.RUNNING  # queued: a Slurm job
    assert all(s.is_running == (s in lifecycle.RUNNING) for s in S)
    assert {S.STOPPED, S.ERROR} == lifecycle.STARTABLE
    assert {S.STOPPED, S.ERROR} == lifecycle.DELETABLE
    assert S.STARTING in lifecycle.ACTIVATABLE and S.STOPPING not in lifecycle.ACTIVATABLE
    assert {S.STARTED, S.STALLED} == lifecycle.SERVING and {S.STARTED} == lifecycle.READY
    assert S.INSTALLING in lifecycle.BUSY and S.INSTALLING in lifecycle.CANCELLABLE
    assert S.INSTALLING not in lifecycle.STARTABLE | lifecycle.RUNNING
    assert set(lifecycle.TRANSITIONS) == set(S)  # every status has a row in the table


@pytest.fixture
def rows(tmp_path: Path) -> InstanceRows:
    engine = prepare_database(tmp_path / 'aikore.db')
    store.add(engine, Instance(name='one', slug='one', blueprint='Demo'))
    return InstanceRows(engine, EventBus('instances'))


async def test_a_status_change_is_checked_written_and_published_once(rows: InstanceRows) -> None:
    seen: list[InstancePublic] = []
    rows.events.subscribe(seen.append)
    public = await rows.set_status(1, S.STARTING, pid=123)
    assert public.status == S.STARTING and public.pid == 123
    assert [p.status for p in seen] == [S.STARTING]

    with pytest.raises(TransitionRefused):
        await rows.set_status(1, S.STARTING)  # starting -> starting: a second start
    assert store.get(rows.engine, 1).status == S.STARTING  # refused: never written
    assert len(seen) == 1  # and not published


async def test_a_field_write_publishes_the_committed_row(rows: InstanceRows) -> None:
    """A row written by another writer between our read and our write is what we publish."""
    seen: list[InstancePublic] = []
    rows.events.subscribe(seen.append)
    await rows.set_status(1, S.STARTING)
    store.update(rows.engine, 1, status=S.STARTED)  # another writer (bypassing the lock on purpose)
    public = await rows.update(1, active=True)
    assert public.status == S.STARTED and public.active
    assert [p.status for p in seen] == [S.STARTING, S.STARTED]


async def test_the_lock_is_per_instance_reentrant_and_serialising(rows: InstanceRows) -> None:
    order: list[str] = []

    async def first() -> None:
        async with rows.hold(1), rows.hold(1):  # the same task takes it again
            order.append('first in')
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            order.append('first out')

    async def second() -> None:
        async with rows.hold(2, 1):
            order.append('second')

    await asyncio.gather(first(), second())
    assert order == ['first in', 'first out', 'second']


async def test_two_followers_of_one_log_share_one_poller(tmp_path: Path) -> None:
    """Two views opened at once: one poller; closing one leaves the other (and its entry) alone."""
    log = tmp_path / 'output.log'
    log.write_text('old\n')
    streams = LogStreams()
    got_a: list[LogText] = []
    got_b: list[LogText] = []
    (_, stop_a), (replay_b, stop_b) = await asyncio.gather(
        streams.follow(log, got_a.append), streams.follow(log, got_b.append)
    )
    assert replay_b == 'old\n'
    assert len(_pollers()) == 1
    stop_a()
    assert len(_pollers()) == 1
    got_c: list[LogText] = []
    _, stop_c = await streams.follow(log, got_c.append)  # joins the remaining poller
    assert len(_pollers()) == 1
    with log.open('a') as handle:
        handle.write('new\n')
    await wait_until(lambda: got_b and got_c, 5, 'the new line in both views')
    assert ''.join(t.text for t in got_b) == 'new\n' and ''.join(t.text for t in got_c) == 'new\n'
    assert got_a == []
    stop_b()
    stop_c()
    await wait_until(lambda: not _pollers(), 5, 'the poller to end')
    streams.shutdown()


def _pollers() -> list[asyncio.Task[object]]:
    tasks = [t for t in asyncio.all_tasks() if not t.done()]
    return [t for t in tasks if getattr(t.get_coro(), '__qualname__', '') == 'LogStreams._run']
