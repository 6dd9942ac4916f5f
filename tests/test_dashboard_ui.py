"""The dashboard through NiceGUI's user simulation: the same services, no browser."""

from __future__ import annotations

from nicegui import ui
from nicegui.testing.user import User

from app.models import InstanceCreate
from app.services import core as core_module
from tests.helpers import python_server_blueprint


async def test_empty_state_creates_a_demo_instance(ui_user: User) -> None:
    await ui_user.open('/')
    await ui_user.should_see('No instances yet')
    ui_user.find('Create a Demo instance').click()
    await ui_user.should_see('Created demo')
    await ui_user.should_see(marker='name-1')
    await ui_user.should_see('stopped')


async def test_status_changes_appear_without_reload(ui_user: User) -> None:
    core = core_module.current()
    core.blueprints.put_custom('Fast', python_server_blueprint().encode())
    instance = await core.instances.create(InstanceCreate(name='quick', blueprint='Fast'))
    await ui_user.open('/')
    await ui_user.should_see('stopped')
    await core.instances.start(instance.id)  # not through the page: another user, or the API
    await ui_user.should_see('started', retries=100)
    ui_user.find(marker=f'start-stop-{instance.id}').click()
    await ui_user.should_see('stopped', retries=100)
    assert ui_user.find(ui.badge).elements.pop().text == 'stopped'
