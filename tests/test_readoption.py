"""Jobs survive the panel: SIGKILL and graceful exits leave instances running, the next
panel re-adopts them (same PID, logs still flowing, nothing launched twice), and autostart
instances start with the panel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import Panel, blueprint, python_server_blueprint, wait_for

StartPanel = Callable[..., Panel]

COUNTED_SERVER = python_server_blueprint().replace('echo "booting', 'echo launched >> launches.txt\necho "booting')


def launches(panel: Panel, name: str) -> int:
    path = panel.data_dir / 'instances' / name / 'launches.txt'
    return len(path.read_text().splitlines()) if path.exists() else 0


def log_size(panel: Panel, name: str) -> int:
    return (panel.data_dir / 'instances' / name / 'logs' / 'output.log').stat().st_size


def crash(runner: int) -> None:
    """kill -9 the app of a run (what its runner started), not the runner: it records the exit."""
    for app in psutil.Process(runner).children(recursive=True):
        app.kill()


@pytest.fixture
def panels(tmp_path: Path) -> Iterator[StartPanel]:
    """Starts panels in turn on one data directory: a later one takes over from an earlier one
    (killed or stopped) with its token and AIKORE_STOP_ON_EXIT=1. At the end every panel is
    stopped and whatever they launched is ended."""
    data = tmp_path / 'data'
    started: list[Panel] = []

    def start(**env: str) -> Panel:
        if started:
            env = {'AIKORE_STOP_ON_EXIT': '1', 'AIKORE_API_TOKEN': started[0].token, **env}
        panel = Panel(data, **env)
        started.append(panel)
        return panel.start()

    yield start
    for panel in started:
        panel.stop()


def test_readoption_after_panel_sigkill(panels: StartPanel) -> None:
    first = panels()
    first.put_blueprint('Counted', COUNTED_SERVER)
    instance = first.create('survivor', blueprint='Counted')
    first.client.post(f'/instances/{instance["id"]}/start')
    started = first.wait_status(instance['id'], 'started')
    pid, port = started['pid'], started['internal_port']

    first.kill()
    assert psutil.pid_exists(pid), 'the instance died with the panel'
    size_before = log_size(first, 'survivor')
    assert httpx.get(f'http://127.0.0.1:{port}/').status_code == 200  # still serving, still logging
    wait_for(lambda: log_size(first, 'survivor') > size_before, 5, what='the log to grow without a panel')

    second = panels()
    adopted = second.instance(instance['id'])
    assert adopted['status'] == 'started'
    assert adopted['pid'] == pid and adopted['internal_port'] == port
    assert launches(second, 'survivor') == 1, 'launched twice'

    size = log_size(second, 'survivor')
    assert httpx.get(f'http://127.0.0.1:{port}/').status_code == 200
    wait_for(lambda: log_size(second, 'survivor') > size, 5, what='the log to keep growing')
    chunk = second.client.get(f'/instances/{instance["id"]}/logs', params={'offset': size}).json()
    assert 'GET / ' in chunk['text']

    # The adopted run is fully ours: exit detection and stop work on it.
    second.client.post(f'/instances/{instance["id"]}/stop')
    second.wait_status(instance['id'], 'stopped', timeout=15)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_graceful_exit_keeps_instances_and_autostart(panels: StartPanel) -> None:
    first = panels()
    first.put_blueprint('Counted', COUNTED_SERVER)
    running = first.create('keeper', blueprint='Counted')
    auto = first.create('auto', blueprint='Counted', autostart=True)
    first.client.post(f'/instances/{running["id"]}/start')
    pid = first.wait_status(running['id'], 'started')['pid']
    first.client.post(f'/instances/{auto["id"]}/start')
    first.wait_status(auto['id'], 'started')
    first.client.post(f'/instances/{auto["id"]}/stop')
    first.wait_status(auto['id'], 'stopped')

    first.stop_panel_only()
    assert psutil.pid_exists(pid), 'a graceful panel exit stopped the instance'

    second = panels()
    assert second.instance(running['id'])['pid'] == pid
    assert second.instance(running['id'])['status'] == 'started'
    second.wait_status(auto['id'], 'started')  # autostart
    assert launches(second, 'auto') == 2 and launches(second, 'keeper') == 1

    second.stop()  # AIKORE_STOP_ON_EXIT=1: everything ends with the panel
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_instance_that_died_while_panel_was_away(panels: StartPanel) -> None:
    first = panels()
    first.put_blueprint('Quit', blueprint('echo hi\nwhile [ ! -f quit ]; do sleep 0.05; done\nexit 4', ready='none'))
    instance = first.create('quitter', blueprint='Quit')
    first.client.post(f'/instances/{instance["id"]}/start')
    pid = first.wait_status(instance['id'], 'started')['pid']
    first.kill()
    (first.data_dir / 'instances' / 'quitter' / 'quit').touch()
    wait_for(lambda: not psutil.pid_exists(pid), 5, what='the instance to exit')

    second = panels()
    dead = second.instance(instance['id'])
    assert dead['status'] == 'error' and dead['exit_code'] == 4 and dead['pid'] is None


def test_a_crash_while_the_panel_is_away_counts_for_on_failure(panels: StartPanel) -> None:
    """The app dies while no panel runs: the next panel records the exit code and, for
    ``on-failure``, starts it again; ``never`` stays in error."""
    first = panels(AIKORE_RESTART_BACKOFF='0.1')
    first.put_blueprint('Counted', COUNTED_SERVER)
    healing = first.create('healing', blueprint='Counted', restart_policy='on-failure')
    fragile = first.create('fragile', blueprint='Counted')
    runners = {}
    for instance in (healing, fragile):
        first.client.post(f'/instances/{instance["id"]}/start')
        runners[instance['id']] = first.wait_status(instance['id'], 'started')['pid']

    first.kill()
    for runner in runners.values():
        crash(runner)
        wait_for(lambda r=runner: not psutil.pid_exists(r), 10, what='the runner to record the exit and end')

    second = panels(AIKORE_RESTART_BACKOFF='0.1')
    back = second.wait_status(healing['id'], 'started', timeout=20)
    assert back['restart_count'] == 1 and back['pid'] != runners[healing['id']]
    assert launches(second, 'healing') == 2
    failed = second.instance(fragile['id'])
    assert (failed['status'], failed['exit_code']) == ('error', 137)
    assert launches(second, 'fragile') == 1


def test_a_pending_restart_survives_a_panel_restart(panels: StartPanel) -> None:
    """The app crashes, ``on-failure`` schedules its restart, and the panel dies before the
    back-off is over: the next panel does the restart."""
    first = panels(AIKORE_RESTART_BACKOFF='3')
    first.put_blueprint('Counted', COUNTED_SERVER)
    instance = first.create('patient', blueprint='Counted', restart_policy='on-failure')
    first.client.post(f'/instances/{instance["id"]}/start')
    crash(first.wait_status(instance['id'], 'started')['pid'])
    failed = first.wait_status(instance['id'], 'error')
    assert failed['restart_count'] == 1  # the restart is scheduled, 3 s away
    marker = first.data_dir / 'instances' / 'patient' / 'run' / 'restart-due'
    wait_for(marker.exists, 5, what='the due time on disk')
    first.kill()

    second = panels()
    back = second.wait_status(instance['id'], 'started', timeout=20)
    assert back['restart_count'] == 1 and launches(second, 'patient') == 2
    assert not marker.exists()
