from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nicegui.testing.user import User
from nicegui.testing.user_simulation import user_simulation
from playwright.sync_api import Browser, sync_playwright

from app.services.access.sessions import SESSION_COOKIE
from tests import slurm_kit
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, Panel, free_port, wait_until
from tests.slurm_kit import SlurmCluster

# Every panel a test starts (in-process, as a subprocess, under supervisord) serves no HTTPS
# unless the test asks: they would all want port 9443.
os.environ.setdefault('AIKORE_HTTPS_PORT', 'off')


@pytest.fixture
def panel(tmp_path: Path) -> Iterator[Panel]:
    """A running panel (subprocess) with its own data dir; stops its instances on exit."""
    running = Panel(tmp_path / 'data', AIKORE_STOP_ON_EXIT='1').start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope='module')
def shared_panel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Panel]:
    """One panel for a module of tests that do not disturb each other (unique names)."""
    running = Panel(tmp_path_factory.mktemp('shared') / 'data', AIKORE_STOP_ON_EXIT='1').start()
    try:
        yield running
    finally:
        running.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used the Slurm cluster shows the end of its daemons' logs (the cluster's
    folder is gone when the session ends), of its panels' logs and of its jobs' output."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    funcargs = getattr(item, 'funcargs', {})
    cluster = funcargs.get('slurm_cluster')
    if report.when == 'call' and report.failed and isinstance(cluster, SlurmCluster):
        report.sections.append(('Slurm daemons (end of their logs)', cluster.log_tails()))
        tmp_path = funcargs.get('tmp_path')
        if isinstance(tmp_path, Path):
            report.sections.append(("The test's panels and jobs (end of their logs)", log_tails(tmp_path)))


def log_tails(folder: Path) -> str:
    """The end of the panels' logs in ``folder`` and of the Slurm jobs' output under it."""
    logs = [*sorted(folder.glob('panel-*.log')), *sorted(folder.glob('*/instances/*/run/slurm-*.out'))]
    return ''.join(f'\n--- {log.relative_to(folder)}:\n' + log.read_text(errors='replace')[-3000:] for log in logs)


@pytest.fixture(scope='session')
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A real Slurm (munged, slurmctld, two slurmd nodes with two fake GPUs each) for the session;
    fails with the reason when Slurm cannot start here (never skips)."""
    cluster = slurm_kit.start(tmp_path_factory.mktemp('slurm'))
    try:
        yield cluster
    finally:
        cluster.stop()


UI_MAIN = Path(__file__).with_name('ui_main.py')


@pytest.fixture
async def ui_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[User]:
    """A logged-in user of a fresh panel run in-process (NiceGUI's user simulation)."""
    low = free_port()
    for name, value in {
        'AIKORE_DATA_DIR': str(tmp_path / 'data'),
        'AIKORE_PORT': str(free_port()),
        'AIKORE_PORT_RANGE': f'{low}-{low + 9}',
        'AIKORE_API_TOKEN': 'ui-test-token',
        'AIKORE_STOP_ON_EXIT': '1',
        'AIKORE_STOP_GRACE': '2',
    }.items():
        monkeypatch.setenv(name, value)
    async with user_simulation(main_file=UI_MAIN) as user:
        from app.services import core as core_module

        # The panel's start runs as a background task: a test that acts before it is done races
        # it (the orphan scan saw a folder being created; the disk counts were started after).
        await wait_until(lambda: core_module.current().started, 30, 'the panel to finish starting')
        user.http_client.cookies.set(SESSION_COOKIE, core_module.current().sessions.open('test'))  # NiceGUI's test host
        # The simulated browser has plotly.js "loaded" at once (no real JavaScript runs here).
        user.javascript_rules[re.compile(r'.*\.Plotly !== "undefined".*', re.DOTALL)] = lambda _: True
        yield user
    errors = [record for record in caplog.get_records('call') if record.levelname == 'ERROR']
    if errors:
        pytest.fail(f'ERROR logs: {[record.getMessage() for record in errors]}', pytrace=False)


@pytest.fixture(scope='module')
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright; one per test module."""
    assert Path(CHROMIUM).exists(), 'chromium is installed by `make test` (container/install-deps.sh --test)'
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
