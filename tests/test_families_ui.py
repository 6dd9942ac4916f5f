"""The row menu's family and environment actions through NiceGUI's user simulation: a clone made
from the dialog appears as `installing` then `stopped`, a satellite row says whose it is, the
rebuild confirmation lists running satellites, Versions and Pins dialogs work."""

from __future__ import annotations

from nicegui.testing.user import User

from app.models import InstanceCreate, SatelliteCreate
from app.services import core as core_module
from tests.helpers import click_row_action, python_server_blueprint, table_row, wait_until


async def test_clone_and_satellite_from_the_menu(ui_user: User) -> None:
    core = core_module.current()
    source = await core.instances.create(InstanceCreate(name='base', blueprint='Demo'))
    await ui_user.open('/')
    await click_row_action(ui_user, source.id, 'clone')
    await ui_user.should_see(marker='family-name', retries=50)
    ui_user.find(marker='family-name').clear().type('base-copy')
    ui_user.find(marker='family-go').click()
    await ui_user.should_see('Copying base into base-copy', retries=50)
    clone = next(item for item in await core.instances.list_all() if item.name == 'base-copy')
    await wait_until(lambda: (table_row(ui_user, clone.id) or {}).get('status') == 'stopped', 20, 'the copy to end')

    await click_row_action(ui_user, source.id, 'satellite')
    await ui_user.should_see(marker='family-name', retries=50)
    ui_user.find(marker='family-name').clear().type('base-sat')
    ui_user.find(marker='family-go').click()
    await ui_user.should_see('base-sat created: a satellite of base', retries=50)
    satellite = next(item for item in await core.instances.list_all() if item.name == 'base-sat')
    await wait_until(lambda: table_row(ui_user, satellite.id) is not None, what='the satellite row')
    row = table_row(ui_user, satellite.id)
    assert row is not None and row['parent'] == 'base' and not row['family']['own_env']
    assert table_row(ui_user, source.id)['family']['own_env']  # type: ignore[index]


async def test_rebuild_confirmation_lists_running_satellites(ui_user: User) -> None:
    core = core_module.current()
    core.blueprints.put_custom('Fast', python_server_blueprint().encode())
    parent = await core.instances.create(InstanceCreate(name='parent', blueprint='Fast'))
    moon = await core.families.create_satellite(parent.id, SatelliteCreate(name='moon'))
    await core.instances.start(moon.id)
    await ui_user.open('/')
    await wait_until(lambda: (table_row(ui_user, moon.id) or {}).get('running'), 20, 'the satellite to run')
    await click_row_action(ui_user, parent.id, 'rebuild')
    await ui_user.should_see('Its running satellites are stopped first: moon.', retries=50)
    ui_user.find(marker='confirm-rebuild').click()
    await ui_user.should_see('parent: the environment is rebuilt at the next start', retries=100)
    assert (await core.instances.get(moon.id)).status == 'stopped'

    await click_row_action(ui_user, parent.id, 'pins')
    await ui_user.should_see(marker='pins-text', retries=50)
    ui_user.find(marker='pins-text').type('torch==2.7.1')
    ui_user.find(marker='pins-save').click()
    await ui_user.should_see('Pins of parent saved', retries=50)
    assert (await core.environments.read_pins(parent.id)).strip() == 'torch==2.7.1'

    await click_row_action(ui_user, parent.id, 'versions')
    await ui_user.should_see('none found (system python3)', retries=200)
