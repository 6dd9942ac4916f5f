"""Races between operations on one instance, driven concurrently on a real panel: every
operation holds the instance's lock, so none lands in the middle of another.

Each test checks: no traceback in the panel log, no refused (stale) status write, no
instance folder without a row, and the API never shows an older status after a newer one.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.models import InstanceCreate, RestartPolicy
from app.services.core import Core
from app.services.runtime import launch
from tests.helpers import (
    HeldCall,
    Panel,
    blueprint,
    free_port,
    gone,
    kill_processes_under,
    python_server_blueprint,
    wait_for,
    wait_until,
)

# A run's statuses only move forward in this order (a new run starts again at 'starting').
RANK = {'starting': 0, 'stalled': 1, 'started': 2, 'stopping': 3, 'stopped': 4, 'error': 4}


@pytest.fixture
def quick_panel(tmp_path: Path) -> Any:
    running = Panel(
        tmp_path / 'data', AIKORE_STOP_ON_EXIT='1', AIKORE_NGINX='off', AIKORE_RESTART_BACKOFF='0.05'
    ).start()
    try:
        yield running
    finally:
        running.stop()


def assert_clean_log(panel: Panel) -> None:
    text = panel.log_text()
    assert 'Traceback' not in text and 'background task failed' not in text, text[-4000:]
    assert 'Refused status change' not in text, text[-4000:]


def assert_no_orphan_folders(panel: Panel) -> None:
    names = {row['name'] for row in panel.client.get('/instances').json()}
    folders = {p.name for p in (panel.data_dir / 'instances').iterdir() if p.is_dir()}
    assert folders <= names, f'folders without an instance: {folders - names}'


class Recorder:
    """Polls one instance in the background; each status seen, with its pid, in order."""

    def __init__(self, panel: Panel, instance_id: int) -> None:
        # A new connection per request, as Panel.client does behind nginx: a reload closes idle ones.
        limits = httpx.Limits(max_keepalive_connections=0)
        self.client = httpx.Client(base_url=panel.client.base_url, headers=panel.client.headers, timeout=10,
                                   limits=limits)  # fmt: skip
        self.instance_id = instance_id
        self.seen: list[tuple[str, int | None]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            try:
                response = self.client.get(f'/instances/{self.instance_id}')
            except httpx.TransportError:
                continue  # lost at the instant of an nginx reload: ask again
            if response.status_code == 404:
                return
            row = response.json()
            if not self.seen or self.seen[-1] != (row['status'], row['pid']):
                self.seen.append((row['status'], row['pid']))

    def stop(self) -> list[tuple[str, int | None]]:
        self._done.set()
        self._thread.join(10)
        self.client.close()
        return self.seen

    def assert_monotonic(self) -> None:
        """Within one run (one pid, or the ended run that follows it), statuses never go back."""
        previous: tuple[str, int | None] | None = None
        for status, pid in self.seen:
            if previous is not None:
                same_run = pid == previous[1] or pid is None
                if same_run:
                    assert RANK[status] >= RANK[previous[0]], f'{previous[0]} then {status}: {self.seen}'
                else:
                    assert status in {'starting', 'stalled', 'started', 'stopping'}, self.seen
            previous = (status, pid)


def concurrently(*calls: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int, call: Callable[[], Any]) -> None:
        start.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_restart_and_delete_x25(quick_panel: Panel) -> None:
    """Delete keeps trying while a restart stops and starts the instance: it either wins while the
    instance is stopped (then the restart's start finds no instance, quietly), or the restart
    wins and the instance runs. Never a half-started instance, a folder left behind, or a 409 after."""
    panel = quick_panel
    panel.put_blueprint('Sleeper', blueprint('echo up; exec sleep 600', ready='none'))
    deleted_wins = 0
    for attempt in range(25):
        name = f'race-{attempt}'
        instance = panel.create(name, blueprint='Sleeper')
        iid = instance['id']
        assert panel.client.post(f'/instances/{iid}/start').status_code == 202
        panel.wait_status(iid, 'started', timeout=20)
        recorder = Recorder(panel, iid)

        def keep_deleting(iid: int = iid) -> int:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                code = panel.client.delete(f'/instances/{iid}').status_code
                if code != 409:
                    return code
                if panel.instance(iid)['status'] in {'starting', 'started'}:
                    return 409  # the restart won
            return 409

        restarted, deleted = concurrently(lambda iid=iid: panel.client.post(f'/instances/{iid}/restart'),
                                          keep_deleting)  # fmt: skip
        assert restarted.status_code in {200, 202}, restarted.text
        if deleted == 204:
            deleted_wins += 1
            wait_for(lambda iid=iid: panel.client.get(f'/instances/{iid}').status_code == 404, 10, what='gone')
            assert panel.create(name, blueprint='Sleeper')['status'] == 'stopped'  # the name is free again
            again = panel.client.get('/instances').json()
            iid = next(row['id'] for row in again if row['name'] == name)
        else:
            panel.wait_status(iid, 'starting', 'started', timeout=20)
            assert panel.client.post(f'/instances/{iid}/stop').status_code in {200, 202}
            panel.wait_status(iid, 'stopped', timeout=20)
        recorder.stop()
        recorder.assert_monotonic()
        assert panel.client.delete(f'/instances/{iid}').status_code == 204
        assert_no_orphan_folders(panel)
    assert_clean_log(panel)
    assert not list((panel.data_dir / 'instances').iterdir())


def test_stop_while_the_app_exits_is_never_followed_by_a_restart(quick_panel: Panel) -> None:
    """The app fails (on-failure policy) at the moment the user stops it: the stop wins for good."""
    panel = quick_panel
    panel.put_blueprint('Quitter', blueprint('while [ ! -e go ]; do sleep 0.005; done; exit 3', ready='none'))
    instance = panel.create('quitter', blueprint='Quitter', restart_policy='on-failure')
    iid = instance['id']
    go = panel.data_dir / 'instances' / 'quitter' / 'go'
    for _ in range(12):
        assert panel.client.post(f'/instances/{iid}/start').status_code == 202
        panel.wait_status(iid, 'started', timeout=20)
        go.touch()
        stopped = panel.client.post(f'/instances/{iid}/stop')
        assert stopped.status_code in {200, 202}, stopped.text
        go.unlink()
        final = panel.wait_status(iid, 'stopped', 'error', timeout=20)
        # No automatic restart may follow the user's stop: its back-off (0.05 s) is long over
        # once a later request has been answered, so watch the instance for a while.
        deadline = time.monotonic() + 0.75
        while time.monotonic() < deadline:
            current = panel.instance(iid)
            assert current['status'] == final['status'], f'restarted after a stop: {current}'
        assert not (panel.data_dir / 'instances' / 'quitter' / 'run' / launch.RESTART_FILE).exists()
    assert_clean_log(panel)


def test_activate_during_start(tmp_path: Path) -> None:
    """Activate clicked while the instance starts: allowed, mapped once ready, and the API never
    shows 'starting' again after 'started'."""
    from tests.helpers import free_port

    panel = Panel(tmp_path / 'data', AIKORE_STOP_ON_EXIT='1').start()
    try:
        panel.put_blueprint('Slow', python_server_blueprint(delay=0.3))
        low = int(panel.env['AIKORE_PORT_RANGE'].split('-')[0])
        for attempt in range(5):
            instance = panel.create(f'act-{attempt}', blueprint='Slow', public_port=low + attempt)
            iid = instance['id']
            recorder = Recorder(panel, iid)
            assert panel.client.post(f'/instances/{iid}/start').status_code == 202
            activated = panel.client.post(f'/instances/{iid}/activate')
            assert activated.status_code == 200, activated.text
            assert activated.json()['active'] is True
            ready = panel.wait_status(iid, 'started', timeout=20)
            assert ready['active'] is True
            wait_for(lambda p=low + attempt: _answers(p), 10, what='the public port mapped')
            assert panel.client.post(f'/instances/{iid}/stop').status_code in {200, 202}
            panel.wait_status(iid, 'stopped', timeout=20)
            seen = recorder.stop()
            assert ('starting', ready['pid']) in seen or seen[0][0] != 'stopped', seen
            recorder.assert_monotonic()
        assert free_port()  # nothing else to check: the forwarders went with their instances
        assert_clean_log(panel)
    finally:
        panel.stop()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f'http://127.0.0.1:{port}/', timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_restore_applies_the_rules_of_create(quick_panel: Panel) -> None:
    panel = quick_panel
    instance = panel.create('keeper', public_port=None)
    assert panel.client.delete(f'/instances/{instance["id"]}').status_code == 204
    record_path = panel.data_dir / 'trash' / 'keeper' / '.aikore-trash.json'
    record = json.loads(record_path.read_text())
    good = dict(record)
    for bad in ({'public_port': 1}, {'gpu_ids': [0, 0]}, {'gpu_ids': [100000]}):
        record_path.write_text(json.dumps({**good, **bad}))
        response = panel.client.post('/trash/keeper/restore')
        assert response.status_code == 422, (bad, response.text)
        assert record_path.exists() and not (panel.data_dir / 'instances' / 'keeper').exists()
    record_path.write_text(json.dumps(good))
    assert panel.client.post('/trash/keeper/restore').status_code in {200, 201}
    assert_clean_log(panel)


@pytest.mark.parametrize('first', ['exit', 'stop'])
async def test_stop_and_exit_in_either_order_never_restart(tmp_path: Path, first: str) -> None:
    """Deterministic interleaving of a user stop and the app's own failing exit (on-failure):
    whichever takes the instance's lock first, the stop wins for good (no automatic restart)."""
    settings = core_settings(tmp_path, stop_on_exit=True, restart_backoff=0.05)
    core = await open_core(settings)
    try:
        await core.startup()
        body = blueprint('while [ ! -e go ]; do sleep 0.005; done; exit 3', ready='none', name='Quitter')
        await asyncio.to_thread(core.blueprints.put_custom, 'Quitter', body.encode())
        created = await core.instances.create(
            InstanceCreate(name='quitter', blueprint='Quitter', restart_policy=RestartPolicy.ON_FAILURE)
        )
        iid = created.id
        await core.instances.start(iid)
        await wait_until(lambda: core.supervisor._runs[iid].ready_at is not None, 10, 'ready')
        run = core.supervisor._runs[iid]
        lock = core.supervisor.rows._locks[iid]
        async with core.supervisor.rows.hold(iid):  # another operation holds the instance meanwhile
            if first == 'exit':
                (settings.data_dir / 'instances' / 'quitter' / 'go').touch()
                await wait_until(run.exited.is_set, 10, 'the exit to be known')
                stop = asyncio.ensure_future(core.instances.stop(iid))
            else:
                stop = asyncio.ensure_future(core.instances.stop(iid))
                await wait_until(lambda: len(lock._lock._waiters or ()) == 1, 10, 'the stop to wait')
                (settings.data_dir / 'instances' / 'quitter' / 'go').touch()
                await wait_until(run.exited.is_set, 10, 'the exit to be known')
        await stop
        await core.supervisor.wait_stopped(iid)
        await wait_until(lambda: iid not in core.supervisor._runs, 10, 'the run to end')
        final = await core.instances.get(iid)
        assert final.status in {'stopped', 'error'}
        assert iid not in core.supervisor._pending_restarts, 'an automatic restart follows the stop'
        assert final.status == ('error' if first == 'exit' else 'stopped')
    finally:
        await core.shutdown()
        kill_processes_under(settings.data_dir)


# -- in-process panels: a restarted panel, one of its calls held to open a race's window --------------


def core_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """An in-process panel's settings: its own data dir and ports, no nginx."""
    low = free_port()
    fields: dict[str, Any] = {'data_dir': tmp_path / 'data', 'port': free_port(), 'port_range': (low, low + 9),
                              'api_token': 't', 'stop_on_exit': False, 'stop_grace': 2.0, 'nginx': 'off'}  # fmt: skip
    return Settings(**{**fields, **overrides})


async def open_core(settings: Settings) -> Core:
    return await asyncio.to_thread(Core.open, settings, None)


async def instances_of(core: Core, script: str, ready: str, names: str, **fields: Any) -> list[int]:
    """A blueprint running ``script``, and one instance of it per letter of ``names``."""
    await asyncio.to_thread(core.blueprints.put_custom, 'Race', blueprint(script, ready=ready, name='Race').encode())
    created = [await core.instances.create(InstanceCreate(name=name, blueprint='Race', **fields)) for name in names]
    return [instance.id for instance in created if instance.id is not None]


async def left_running(core: Core, ids: list[int]) -> list[int]:
    """Start the instances, wait until they are ready, and end the panel without stopping them:
    their runners' PIDs."""
    for instance_id in ids:
        await core.instances.start(instance_id)
    await wait_until(lambda: all(core.supervisor._runs[i].ready_at is not None for i in ids), 20, 'all ready')
    pids = [core.supervisor._runs[i].handle.pid for i in ids]
    await core.shutdown()  # stop_on_exit off: the runs stay, for the next panel to take back
    return pids


def named(name: str) -> Callable[..., bool]:
    """For HeldCall: the executor's calls for the instance ``name``."""
    return lambda instance, *_: bool(instance.name == name)


async def test_a_stop_while_the_panel_takes_runs_back_waits_for_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pages answer while a restarted panel takes back the runs of the last one (for a Slurm
    job that asks squeue: up to 15 s each on a slow cluster). A Stop pressed then, on an instance
    not yet taken back, recorded it stopped and left its app running, taken back just after under
    a 'stopped' row. Now the Stop waits for the instance's run, and ends it."""
    settings = core_settings(tmp_path)
    adopt = HeldCall(named('a'))
    core = await open_core(settings)
    try:
        await core.startup()
        ids = await instances_of(core, 'exec sleep 600', 'none', 'ab')
        pid = (await left_running(core, ids))[1]

        core = await open_core(settings)
        adopt.patch(monkeypatch, core.supervisor.executor, 'adopt')
        startup = asyncio.ensure_future(core.startup())
        await asyncio.to_thread(adopt.asked.wait, 10)  # taking back 'a'; 'b' is next
        stop = asyncio.ensure_future(core.instances.stop(ids[1]))

        def stop_waits_or_ran() -> bool:
            lock = core.supervisor.rows._locks.get(ids[1])
            return stop.done() or (lock is not None and len(lock._lock._waiters or ()) == 1)

        await wait_until(stop_waits_or_ran, 10, 'the stop to run')
        adopt.release.set()
        await asyncio.wait_for(startup, 30)
        await asyncio.wait_for(stop, 30)
        await core.supervisor.wait_stopped(ids[1])
        await wait_until(lambda: gone(pid), 10, "b's app to end")
        stopped = await core.instances.get(ids[1])
        assert stopped.status == 'stopped' and not core.supervisor.is_running(ids[1])
        assert (await core.instances.get(ids[0])).status == 'started' and core.supervisor.is_running(ids[0])
    finally:
        adopt.release.set()
        await core.shutdown()
        kill_processes_under(settings.data_dir)


async def test_an_activate_while_the_panel_starts_leaves_one_forwarder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Activate pressed on a running instance while a restarted panel is still starting (before
    it takes back the forwarders the last one left): the forwarder it starts is the one the
    panel keeps; taking back its state file made a second unit for the same socat, and after
    Deactivate the forgotten one mapped the port again ("in use by another program")."""

    def answers(port: int) -> bool:
        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex(('127.0.0.1', port)) == 0

    settings = core_settings(tmp_path)
    adopt = HeldCall(named('y'))
    core = await open_core(settings)
    try:
        await core.startup()
        serve = f'exec {sys.executable} -m http.server --bind 127.0.0.1 "$WEBUI_PORT"'
        ids = await instances_of(core, serve, 'tcp', 'xy')
        await left_running(core, ids)  # x not active: no forwarder

        core = await open_core(settings)
        adopt.patch(monkeypatch, core.supervisor.executor, 'adopt')
        startup = asyncio.ensure_future(core.startup())
        await asyncio.to_thread(adopt.asked.wait, 10)  # x is taken back; the forwarders are not yet
        ports = core.network.ports
        active = await ports.activate(ids[0])
        port = active.public_port
        assert port is not None and answers(port)
        mapped = ports._forwarders[ids[0]]
        adopt.release.set()
        await asyncio.wait_for(startup, 30)
        assert ports._forwarders[ids[0]] is mapped, 'the forwarder mapped during the start was replaced'

        await ports.deactivate(ids[0])
        await wait_until(lambda: not answers(port), 10, 'the public port to close')
        again = await ports.activate(ids[0])  # refused as "in use by another program" if mapped again behind our back
        assert again.active and answers(port)
    finally:
        adopt.release.set()
        await core.shutdown()
        kill_processes_under(settings.data_dir)


async def test_an_instance_started_by_hand_during_autostart_is_not_an_autostart_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API answers as autostart begins: an autostart instance a user (or a script) starts
    meanwhile was then reported as "Autostart of b failed: already running" for the whole
    session (the banner, and /api/health degraded)."""
    settings = core_settings(tmp_path, stop_on_exit=True)
    start = HeldCall(named('a'))
    core = await open_core(settings)
    try:
        await core.startup()
        ids = await instances_of(core, 'exec sleep 600', 'none', 'ab', autostart=True)
        await core.shutdown()

        core = await open_core(settings)
        start.patch(monkeypatch, core.supervisor.executor, 'start')
        startup = asyncio.ensure_future(core.startup())
        await asyncio.to_thread(start.asked.wait, 10)  # autostart is starting a; b is next
        await core.instances.start(ids[1])  # by hand, meanwhile
        start.release.set()
        await asyncio.wait_for(startup, 30)
        await wait_until(lambda: all(core.supervisor.is_running(i) for i in ids), 10, 'both running')
        assert not [p for p in core.problems if 'Autostart' in p], core.problems
    finally:
        start.release.set()
        await core.shutdown()
        kill_processes_under(settings.data_dir)
