"""Start-up never half-fails silently: a bad autostart, a corrupt state file of a run (an
exception in re-adoption) leave the panel up and "degraded", with the reason in /api/health, the
log and the dashboard; every other step still runs (other autostarts, the monitor, the login link)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from app.services.events import EventBus
from app.services.runtime.launch import EXIT_FILE
from tests.helpers import Panel, python_server_blueprint, wait_for, wait_until

StartPanel = Callable[..., Panel]


@pytest.fixture
def panels(tmp_path: Path) -> Iterator[StartPanel]:
    """Panels in turn on one data directory and token; all stopped (and their instances ended) at the end."""
    data = tmp_path / 'data'
    started: list[Panel] = []

    def start(**env: str) -> Panel:
        if started:
            env = {'AIKORE_API_TOKEN': started[0].token, **env}
        panel = Panel(data, AIKORE_STOP_ON_EXIT='1', **env)
        started.append(panel)
        return panel.start()

    yield start
    for panel in started:
        panel.stop()


def health(panel: Panel) -> dict[str, Any]:
    response = panel.client.get('/health')
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def monitor_samples(panel: Panel) -> int:
    response = panel.client.get('/system/history')
    assert response.status_code == 200, response.text
    return len(response.json())


def assert_rest_of_startup_ran(panel: Panel, good_id: int) -> None:
    """The other autostart instance runs, the monitor samples on its own, the login link is printed."""
    panel.wait_status(good_id, 'started')
    wait_for(lambda: monitor_samples(panel) >= 2, 15, what='the monitor to take samples by itself')
    assert panel.client.get('/system/stats').status_code == 200
    assert panel.login_link().startswith('http://')


def test_autostart_that_cannot_start_leaves_the_panel_degraded(panels: StartPanel) -> None:
    first = panels()
    first.put_blueprint('Served', python_server_blueprint())
    # 'a-bad' sorts first: its failure must not keep 'z-good' from starting.
    first.create('a-bad', blueprint='Served', autostart=True, output_path='bad-out')
    good = first.create('z-good', blueprint='Served', autostart=True)
    first.stop_panel_only()
    blocker = first.data_dir / 'outputs' / 'bad-out'
    if blocker.is_dir():
        blocker.rmdir()
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text('a file where the output folder should be\n')

    second = panels()
    assert_rest_of_startup_ran(second, good['id'])
    answer = wait_for(lambda: health(second) if health(second)['status'] != 'ok' else None, 10, what='degraded')
    assert answer['status'] == 'degraded'
    assert any('a-bad' in problem and 'bad-out' in problem for problem in answer['problems']), answer
    log = second.log_text()
    assert 'Autostart of a-bad failed' in log and 'bad-out' in log
    assert 'Traceback' not in log  # an OSError is a known cause: one line says it all


def test_corrupt_run_state_file_is_an_adoption_problem_not_a_hang(panels: StartPanel) -> None:
    first = panels()
    first.put_blueprint('Served', python_server_blueprint())
    broken = first.create('broken', blueprint='Served')
    good = first.create('good', blueprint='Served', autostart=True)
    first.client.post(f'/instances/{broken["id"]}/start')
    runner = first.wait_status(broken['id'], 'started')['pid']
    first.client.post(f'/instances/{good["id"]}/stop')
    first.wait_status(good['id'], 'stopped')
    first.kill()  # leaves 'broken' recorded as started
    tree = psutil.Process(runner)
    victims = [tree, *tree.children(recursive=True)]
    for process in victims:
        process.kill()
    psutil.wait_procs(victims, timeout=10)
    (first.data_dir / 'instances' / 'broken' / 'run' / EXIT_FILE).write_text('garbage here !\n')

    second = panels()  # before: /api/health stayed 503 "starting" for ever
    answer = health(second)
    assert answer['status'] == 'degraded', answer
    assert any('broken' in problem for problem in answer['problems']), answer
    assert_rest_of_startup_ran(second, good['id'])
    assert 'Re-adopting broken failed' in second.log_text()


def test_dashboard_shows_the_problems(panels: StartPanel) -> None:
    """The banner comes with the page (checked in the HTML NiceGUI sends)."""
    first = panels()
    first.put_blueprint('Passing', python_server_blueprint())
    first.create('no-script', blueprint='Passing', autostart=True)
    first.stop_panel_only()
    # No launch.sh, and no blueprint to copy one from (a missing script alone is restored at start)
    (first.data_dir / 'instances' / 'no-script' / 'launch.sh').unlink()
    (first.data_dir / 'blueprints' / 'Passing.sh').unlink()

    second = panels()
    problem = wait_for(lambda: health(second).get('problems'), 10, what='a problem')[0]
    assert 'no-script' in problem
    page = second.client.get(second.url + '/', params={'token': second.token}, follow_redirects=True)
    assert page.status_code == 200
    assert 'AiKore started with problems' in page.text and 'Autostart of no-script failed' in page.text


async def test_failing_async_subscriber_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    bus: EventBus[int] = EventBus('numbers')
    seen: list[int] = []

    async def broken(_: int) -> None:
        raise RuntimeError('subscriber broke')

    async def fine(item: int) -> None:
        seen.append(item)

    bus.subscribe(broken)
    bus.subscribe(fine)
    with caplog.at_level(logging.ERROR, logger='app.services.events'):
        bus.publish(7)
        await wait_until(
            lambda: seen == [7] and any('subscriber broke' in str(r.exc_info) for r in caplog.records),
            5,
            what='the failure to be logged',
        )
