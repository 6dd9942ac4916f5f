"""The dashboard through NiceGUI's user simulation: the same services, no browser."""

from __future__ import annotations

from nicegui.testing.user import User

from app.models import InstanceCreate, InstanceUpdate
from app.services import core as core_module
from tests.helpers import click_row_action, edit_row, python_server_blueprint, table_row, wait_until


def name_blueprint(ui_user: User, name: str) -> None:
    """In the open "Save as blueprint…" dialog: the name, then Save."""
    ui_user.find(marker='blueprint-name').clear().type(name)
    ui_user.find(marker='blueprint-save').click()


async def test_login_required(ui_user: User) -> None:
    ui_user.http_client.cookies.clear()
    response = await ui_user.http_client.get('/', follow_redirects=False)
    assert response.status_code == 303 and response.headers['location'] == '/login?next=/'


async def test_empty_state_creates_a_demo_instance(ui_user: User) -> None:
    await ui_user.open('/')
    await ui_user.should_see('No instances yet', retries=50)
    ui_user.find('Create a Demo instance').click()
    await ui_user.should_see('Created demo', retries=50)
    await wait_until(lambda: table_row(ui_user, 1) is not None, what='the new row')
    await ui_user.should_see('stopped', retries=50)


async def test_status_changes_appear_without_reload(ui_user: User) -> None:
    core = core_module.current()
    core.blueprints.put_custom('Fast', python_server_blueprint().encode())
    instance = await core.instances.create(InstanceCreate(name='quick', blueprint='Fast'))
    await ui_user.open('/')
    await ui_user.should_see('stopped', retries=50)
    await core.instances.start(instance.id)  # not through the page: another user, or the API
    await ui_user.should_see('started', retries=100)
    await click_row_action(ui_user, instance.id, 'start-stop')
    await ui_user.should_see('stopped', retries=100)
    row = table_row(ui_user, instance.id)
    assert row is not None and row['status'] == 'stopped' and row['running'] is False


async def test_create_dialog_validates_and_creates(ui_user: User) -> None:
    await ui_user.open('/')
    ui_user.find('New instance').click()
    await ui_user.should_see(marker='create-submit', retries=50)  # built last: the dialog is complete
    ui_user.find(marker='create-name').type('bad name!')
    await ui_user.should_see('Invalid instance name', retries=50)
    ui_user.find(marker='create-submit').click()
    await ui_user.should_see('Invalid instance name', retries=50)
    assert await core_module.current().instances.list_all() == []
    ui_user.find(marker='create-name').clear().type('comfy-gpu0')
    ui_user.find(marker='create-blueprint').click()
    ui_user.find('Stock — ComfyUI · Image Generation').click()
    await ui_user.should_see('Node-based Stable Diffusion UI', retries=50)
    ui_user.find(marker='create-submit').click()
    await ui_user.should_see('Created comfy-gpu0', retries=50)
    (created,) = await core_module.current().instances.list_all()
    assert (created.name, created.blueprint) == ('comfy-gpu0', 'ComfyUI')


async def test_create_dialog_shows_service_errors(ui_user: User) -> None:
    core = core_module.current()
    await ui_user.open('/')
    ui_user.find('New instance').click()
    await ui_user.should_see(marker='create-submit', retries=50)  # built last: the dialog is complete
    await core.instances.create(InstanceCreate(name='taken', blueprint='Demo'))  # meanwhile, elsewhere
    ui_user.find(marker='create-name').type('TAKEN')
    ui_user.find(marker='create-submit').click()
    await ui_user.should_see("An instance named 'taken' already exists (names ignore case)", retries=50)


async def test_inline_edit_and_update(ui_user: User) -> None:
    core = core_module.current()
    instance = await core.instances.create(InstanceCreate(name='before', blueprint='Demo'))
    await ui_user.open('/')
    await edit_row(ui_user, instance.id, name='after')
    await ui_user.should_see('after updated', retries=50)
    assert (await core.instances.get(instance.id)).name == 'after'
    await edit_row(ui_user, instance.id, name='no good')
    await ui_user.should_see('Invalid instance name', retries=50)
    await edit_row(ui_user, instance.id, name='  ')
    await ui_user.should_see('A name is required', retries=50)  # as the create dialog says it


async def test_delete_restore_from_trash(ui_user: User) -> None:
    core = core_module.current()
    instance = await core.instances.create(InstanceCreate(name='goner', blueprint='Demo'))
    await ui_user.open('/')
    await click_row_action(ui_user, instance.id, 'delete')
    await ui_user.should_see('Delete goner?', retries=50)
    ui_user.find(marker='confirm-delete').click()
    await ui_user.should_see('goner moved to the trash', retries=50)
    await wait_until(lambda: table_row(ui_user, instance.id) is None, what='the row gone')
    assert [e.name for e in await core.trash.entries()] == ['goner']
    ui_user.find('Trash').click()
    await ui_user.should_see(marker='restore-goner', retries=50)  # the list, not the notification naming goner
    ui_user.find(marker='restore-goner').click()
    await ui_user.should_see('goner restored', retries=50)
    await wait_until(lambda: table_row(ui_user, 2) is not None, what='the restored row')


async def test_script_save_and_save_as_blueprint(ui_user: User) -> None:
    core = core_module.current()
    instance = await core.instances.create(InstanceCreate(name='scripted', blueprint='Demo'))
    await ui_user.open('/')
    await ui_user.should_see('Save as blueprint…', retries=50)  # the tools come after the table
    save_as = ui_user.find('Save as blueprint…').elements.pop()
    assert not save_as.enabled  # nothing to keep yet (the tool shows no instance)
    await click_row_action(ui_user, instance.id, 'script')  # the row's action opens the tab on it
    await ui_user.should_see('Script · scripted · launch.sh', retries=50)
    assert save_as.enabled
    editor = ui_user.find(marker='script-editor').elements.pop()
    assert 'AIKORE-METADATA-START' in editor.value
    editor.set_value(editor.value + '\n# tuned\n')
    await ui_user.should_see('unsaved', retries=50)
    ui_user.find('Save').click()
    await ui_user.should_see('Script saved', retries=50)
    assert (await core.instances.read_script(instance.id)).endswith('# tuned\n')
    ui_user.find('Save as blueprint…').click()
    name_blueprint(ui_user, 'Demo')
    await ui_user.should_see('stock blueprint', retries=50)
    name_blueprint(ui_user, 'MyDemo')
    await ui_user.should_see('Blueprint MyDemo saved', retries=50)
    assert core.blueprints.read('MyDemo').endswith('# tuned\n')


async def test_create_dialog_checks_inline(ui_user: User) -> None:
    core = core_module.current()
    taken = await core.instances.create(InstanceCreate(name='taken', blueprint='Demo'))
    low, high = core.settings.port_range
    await ui_user.open('/')
    ui_user.find('New instance').click()
    await ui_user.should_see(marker='create-submit', retries=50)  # the dialog is built in steps (awaits)
    ui_user.find(marker='create-submit').click()
    await ui_user.should_see('A name is required', retries=50)  # under the field, not "Invalid instance name ''"
    port = ui_user.find(marker='create-port').elements.pop()
    port.set_value(70000)
    await ui_user.should_see(f'Port 70000 is outside the public range {low}-{high}', retries=50)
    assert port.value == 70000  # the field keeps what was typed, and the message names it
    port.set_value(low + 0.5)
    await ui_user.should_see(f'The public port must be a whole number within {low}-{high}, not {low + 0.5:g}')
    port.set_value(taken.public_port)
    await ui_user.should_see(f'Port {taken.public_port} is already assigned to taken', retries=50)
    ui_user.find(marker='create-gpus').type('0')
    await ui_user.should_see('No GPU detected', retries=50)
    ui_user.find(marker='create-name').type('TAKEN')  # said as it is typed, in the service's words
    await ui_user.should_see("An instance named 'taken' already exists (names ignore case)", retries=50)
    ui_user.find(marker='create-submit').click()
    assert [instance.name for instance in await core.instances.list_all()] == ['taken']
    assert not any('already exists' in message for message in ui_user.notify.messages)  # no notification on top


async def test_a_crowded_port_names_three_others(ui_user: User) -> None:
    """Each row on a port held by six instances names three of the others, then "and more"."""
    core = core_module.current()
    created = [await core.instances.create(InstanceCreate(name=f'share-{n}', blueprint='Demo')) for n in range(6)]
    port = created[0].public_port
    for instance in created[1:]:
        await core.instances.update(instance.id, InstanceUpdate(public_port=port))
    await ui_user.open('/')
    await ui_user.should_see('share-5', retries=50)
    texts = {instance.id: (table_row(ui_user, instance.id) or {}).get('port_shared') for instance in created}
    tail = ' and more: only one of them can be active at a time'
    assert texts[created[0].id] == 'Public port shared with share-1, share-2, share-3' + tail
    assert texts[created[2].id] == 'Public port shared with share-0, share-1, share-3' + tail


async def test_tools_let_go_of_a_deleted_instance(ui_user: User) -> None:
    """Logs, Script, View and Terminal showing an instance go back to "Pick an instance" when it is
    deleted; an unsaved Script edit stays on screen but is no longer offered to be saved."""
    core = core_module.current()
    instance = await core.instances.create(InstanceCreate(name='alpha', blueprint='Demo'))
    await ui_user.open('/')
    for action, title in [('logs', 'Logs · alpha'), ('view', 'View · alpha'), ('terminal', 'Terminal · alpha'),
                          ('script', 'Script · alpha · launch.sh')]:  # fmt: skip
        await click_row_action(ui_user, instance.id, action)
        await ui_user.should_see(title, retries=50)
    await wait_until(lambda: len(core.terminals._open) == 1, what='the shell')
    editor = ui_user.find(marker='script-editor').elements.pop()
    editor.set_value(editor.value + '\n# mine\n')
    await ui_user.should_see('unsaved', retries=50)
    await core.instances.delete(instance.id)  # from another tab, or the API
    for empty in ('Pick an instance (its Logs button)', 'Pick an instance (its View button)',
                  'Pick an instance (its Terminal button)'):  # fmt: skip
        await ui_user.should_see(empty, retries=50)
    await wait_until(lambda: not core.terminals._open, what='the shell ended')
    await ui_user.should_see('Script · alpha (deleted)', retries=50)
    await ui_user.should_see('these unsaved changes can no longer be saved to it', retries=50)
    assert editor.value.endswith('# mine\n')  # still there to copy or keep as a blueprint
    save = next(b for b in ui_user.find('Save').elements if getattr(b, 'text', '') == 'Save')
    assert not save.enabled
    ui_user.find('Save as blueprint…').click()
    name_blueprint(ui_user, 'Kept')
    await ui_user.should_see('Blueprint Kept saved', retries=50)
    assert core.blueprints.read('Kept').endswith('# mine\n')


async def test_tool_titles_follow_a_rename(ui_user: User) -> None:
    core = core_module.current()
    instance = await core.instances.create(InstanceCreate(name='alpha', blueprint='Demo'))
    await ui_user.open('/')
    for action in ('view', 'terminal', 'script', 'logs'):
        await click_row_action(ui_user, instance.id, action)
    await ui_user.should_see('Logs · alpha', retries=50)
    await edit_row(ui_user, instance.id, name='alpha-renamed')
    await ui_user.should_see('alpha-renamed updated', retries=50)
    for title in ('Logs · alpha-renamed', 'View · alpha-renamed', 'Terminal · alpha-renamed',
                  'Script · alpha-renamed · launch.sh'):  # fmt: skip
        await ui_user.should_see(title, retries=50)
    ui_user.find('Save').click()  # the script is still the instance's
    await ui_user.should_see('Script saved', retries=50)
