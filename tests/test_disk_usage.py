"""Disk usage (issue 13 item 4): the figures of /api/disk match ``du -sb`` within 1 %, per instance
split into code, environment, outputs and logs; the trash tells what deleting frees; a data
volume under the low-disk threshold is a problem in /api/health."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from nicegui.testing.user import User

from app.models import InstanceCreate
from app.services import core as core_module
from app.services.monitoring.disk import tree_size
from tests.helpers import Panel, wait_until


def du(path: Path) -> int:
    return int(subprocess.run(['du', '-sb', str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def close(found: int, expected: int) -> bool:
    return abs(found - expected) <= max(expected, 1) * 0.01


def fill(folder: Path, files: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        (folder / f'file-{index}.bin').write_bytes(os.urandom(size))


def test_tree_size_counts_as_du(tmp_path: Path) -> None:
    root = tmp_path / 'tree'
    fill(root / 'a' / 'b', 5, 70_000)
    fill(root / 'c', 3, 123)
    (root / 'link').symlink_to(root / 'a')  # counted as a link, not followed
    os.link(root / 'c' / 'file-0.bin', root / 'hard')  # one file, two names: counted once
    (root / 'empty').mkdir()
    assert tree_size(root) == du(root)
    assert tree_size(root / 'c' / 'file-1.bin') == 123
    assert tree_size(tmp_path / 'missing') == 0


def test_disk_figures_match_du(tmp_path: Path) -> None:
    data = tmp_path / 'data'
    panel = Panel(data, AIKORE_STOP_ON_EXIT='1', AIKORE_NGINX='off', AIKORE_DISK_LOW_GB='1000000000')
    try:
        panel.start()
        kept = panel.create('keeper')
        gone = panel.create('goner')
        folder = data / 'instances' / 'keeper'
        fill(folder / 'env' / 'lib', 20, 100_000)  # the environment (Demo declares none: ./env)
        fill(folder / 'app', 10, 50_000)  # code
        fill(folder / 'logs', 2, 30_000)
        fill(data / 'outputs' / 'keeper', 4, 200_000)
        fill(data / 'models' / 'checkpoints', 3, 400_000)
        fill(data / 'instances' / 'goner' / 'env', 6, 100_000)
        assert panel.client.delete(f'/instances/{gone["id"]}').status_code == 204

        report = panel.client.get('/disk', params={'refresh': 1}).json()

        [mine] = [item for item in report['instances'] if item['id'] == kept['id']]
        assert close(mine['environment'], du(folder / 'env')), (mine, du(folder / 'env'))
        assert close(mine['logs'], du(folder / 'logs'))
        assert close(mine['code'] + mine['environment'] + mine['logs'], du(folder))
        assert close(mine['outputs'], du(data / 'outputs' / 'keeper'))
        assert mine['total'] == mine['code'] + mine['environment'] + mine['logs'] + mine['outputs']
        assert mine['code'] >= 500_000 and mine['environment'] >= 2_000_000
        assert close(report['models'], du(data / 'models'))
        assert close(report['trash'], du(data / 'trash'))
        [entry] = report['trash_entries']
        assert close(entry['size'], du(data / 'trash' / entry['name']))
        assert report['volume']['free'] > 0 and report['volume']['low'] is True

        # kept until a refresh: a new file is not counted by a plain GET, it is after a refresh
        fill(folder / 'env' / 'more', 1, 1_000_000)
        assert panel.client.get('/disk').json()['computed_at'] == report['computed_at']
        assert panel.client.get(f'/instances/{kept["id"]}/disk').json()['environment'] == mine['environment']
        fresh = panel.client.get(f'/instances/{kept["id"]}/disk', params={'refresh': 1}).json()
        assert close(fresh['environment'], du(folder / 'env'))
        refreshed = panel.client.post('/disk/refresh').json()
        [again] = [item for item in refreshed['instances'] if item['id'] == kept['id']]
        assert again['environment'] == fresh['environment']
        assert panel.client.get('/instances/999/disk').status_code == 404

        # deleting a trash entry for good says what it freed
        size = du(data / 'trash' / entry['name'])
        purged = panel.client.delete(f'/trash/{entry["name"]}')
        assert purged.status_code == 204
        assert close(int(purged.headers['x-aikore-freed-bytes']), size)
        assert panel.client.delete(f'/instances/{kept["id"]}').status_code == 204
        emptied = panel.client.delete('/trash').json()
        assert emptied['deleted'] == ['keeper'] and emptied['freed_bytes'] > 3_000_000
        assert list((data / 'trash').iterdir()) == []

        # the data volume is "low" under this threshold: health says so
        health = panel.client.get('/health').json()
        assert health['status'] == 'degraded'
        assert any(problem.startswith('Low disk space') for problem in health['problems']), health
    finally:
        panel.stop()


async def test_disk_pane_and_empty_trash_in_the_dashboard(ui_user: User) -> None:
    """The Trash tab shows the disk figures (Refresh counts again) and Empty trash says what it freed."""
    core = core_module.current()
    instance = await core.instances.create(InstanceCreate(name='bulky', blueprint='Demo'))
    fill(core.settings.instances_dir / 'bulky' / 'env', 3, 1_000_000)
    await ui_user.open('/')
    ui_user.find('Trash').click()
    await ui_user.should_see(marker='disk-refresh', retries=50)
    ui_user.find(marker='disk-refresh').click()
    table = ui_user.find(marker='disk-table').elements.pop()

    def bulky_row() -> dict[str, Any] | None:
        return next((row for row in table.rows if row['name'] == 'bulky'), None)

    await wait_until(lambda: bulky_row() is not None, what="bulky's sizes in the disk table")
    assert bulky_row() == {**(bulky_row() or {}), 'environment': '3.0 MB', 'outputs': '0 B'}
    await ui_user.should_see('free of', retries=50)
    await core.instances.delete(instance.id)
    ui_user.find(marker='empty-trash').click()
    await ui_user.should_see(marker='confirm-empty-trash', retries=50)
    ui_user.find(marker='confirm-empty-trash').click()
    await ui_user.should_see('1 trash entries deleted for good: 3.0 MB freed', retries=100)
    assert await core.trash.entries() == []


async def test_disk_pane_shows_current_figures_when_opened(ui_user: User) -> None:
    """Figures counted at panel start (no instances then) are not what the Trash tab shows once
    instances exist: opening it counts again (in a thread), with no click on Refresh; a delete
    seen from the tab counts again too."""
    core = core_module.current()
    await core.disk.report(refresh=True)  # the panel's first count: no instances yet
    instance = await core.instances.create(InstanceCreate(name='bulky', blueprint='Demo'))
    fill(core.settings.instances_dir / 'bulky' / 'env', 2, 1_000_000)
    await ui_user.open('/')
    await ui_user.should_see(marker='disk-table', retries=50)  # built with the tools, not counted yet
    ui_user.find('Trash').click()
    table = ui_user.find(marker='disk-table').elements.pop()

    def names() -> list[str]:
        return [row['name'] for row in table.rows]

    await wait_until(lambda: names() == ['bulky'], what="bulky's sizes, counted when the tab opened")
    assert table.rows[0]['environment'] == '2.0 MB'
    await core.instances.delete(instance.id)
    await wait_until(lambda: names() == [], what='the deleted instance gone from the disk table')
    await ui_user.should_see('trash 2.0 MB', retries=50)
