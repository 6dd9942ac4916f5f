"""An emptied database with instance folders still there: the panel says so (health, banner,
Trash tab) and the user adopts each folder (a row made again from it) or moves it to the trash."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
from nicegui.testing.user import User

from app.services import core as core_module
from tests.helpers import Panel


def empty_database(data: Path) -> None:
    """What a lost database looks like: a 0-byte file, the instance folders left as they were."""
    for companion in data.glob('aikore.db-*'):
        companion.unlink()
    (data / 'aikore.db').write_bytes(b'')


def test_orphan_folders_are_reported_adopted_and_trashed(tmp_path: Path) -> None:
    data = tmp_path / 'data'
    first = Panel(data, AIKORE_NGINX='off', AIKORE_STOP_ON_EXIT='1').start()
    try:
        first.create('alpha')
        first.create('beta')
    finally:
        first.stop()
    empty_database(data)
    (data / 'instances' / 'not a name').mkdir()
    panel = Panel(data, AIKORE_NGINX='off', AIKORE_STOP_ON_EXIT='1').start()
    try:
        health = httpx.get(f'{panel.url}/api/health', timeout=5).json()
        assert health['status'] == 'degraded', health
        assert any('alpha' in problem and 'beta' in problem for problem in health['problems']), health
        assert panel.client.get('/instances').json() == []
        orphans = {o['name']: o for o in panel.client.get('/orphans').json()}
        assert set(orphans) == {'alpha', 'beta', 'not a name'}
        assert orphans['alpha'] == {'name': 'alpha', 'blueprint': 'Demo', 'adoptable': True}
        assert orphans['not a name']['adoptable'] is False

        adopted = panel.client.post('/orphans/alpha/adopt')
        assert adopted.status_code == 201, adopted.text
        assert adopted.json()['name'] == 'alpha' and adopted.json()['blueprint'] == 'Demo'
        assert panel.client.post('/orphans/not a name/adopt').status_code == 409
        assert panel.client.post('/orphans/nobody/adopt').status_code == 404
        trashed = panel.client.post('/orphans/beta/trash')
        assert trashed.status_code == 200 and trashed.json() == {'trash_entry': 'beta'}
        assert panel.client.post('/orphans/not a name/trash').status_code == 200
        assert [entry['name'] for entry in panel.client.get('/trash').json()] == ['beta', 'not a name']

        assert panel.client.get('/orphans').json() == []
        assert httpx.get(f'{panel.url}/api/health', timeout=5).json() == {'status': 'ok'}
        started = panel.client.post(f'/instances/{adopted.json()["id"]}/start')
        assert started.status_code == 202, started.text
        panel.wait_status(adopted.json()['id'], 'started', timeout=30)
        restored = panel.client.post('/trash/beta/restore')  # a trashed orphan comes back like any entry
        assert restored.status_code == 201, restored.text
    finally:
        panel.stop()


async def test_trash_tab_offers_adopt(ui_user: User) -> None:
    core = core_module.current()
    orphan = core.settings.instances_dir / 'lost'
    orphan.mkdir(parents=True)
    shutil.copyfile(core.settings.stock_blueprints_dir / 'Demo.sh', orphan / 'launch.sh')
    await ui_user.open('/')
    ui_user.find('Trash').click()
    await ui_user.should_see(marker='adopt-lost', retries=50)
    ui_user.find(marker='adopt-lost').click()
    await ui_user.should_see('lost adopted', retries=50)
    assert [instance.name for instance in await core.instances.list_all()] == ['lost']
