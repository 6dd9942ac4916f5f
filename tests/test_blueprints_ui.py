"""The blueprint library page through NiceGUI's user simulation, and the store's
create/rename rules it relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
from nicegui import ui
from nicegui.testing.user import User

from app.config import STOCK_BLUEPRINTS_DIR
from app.models import InstanceCreate
from app.services import core as core_module
from app.services.catalog.blueprints import BlueprintStore
from app.services.errors import Conflict, Forbidden, InvalidInput, NotFound
from tests.helpers import blueprint


def editor(user: User) -> ui.codemirror:
    found = user.find(marker='blueprint-editor').elements.pop()
    assert isinstance(found, ui.codemirror)
    return found


def custom_dir() -> Path:
    return core_module.current().settings.custom_blueprints_dir


async def name_and_confirm(user: User, name: str) -> None:
    await user.should_see(marker='blueprint-name', retries=50)
    user.find(marker='blueprint-name').clear().type(name)
    user.find(marker='blueprint-name-ok').click()


async def copy_demo(user: User, name: str) -> None:
    """The stock Demo blueprint copied as the custom blueprint ``name``, open in the editor."""
    await user.open('/blueprints')
    user.find(marker='blueprint-Demo').click()
    await user.should_see(marker='blueprint-copy', retries=50)
    user.find(marker='blueprint-copy').click()
    await name_and_confirm(user, name)
    await user.should_see(f'Blueprint {name} created', retries=50)


async def create_instance_named(user: User, name: str) -> None:
    """New instance… of the blueprint on screen, named ``name``."""
    user.find(marker='blueprint-create-instance').click()
    await user.should_see(marker='create-submit', retries=50)  # built last: the dialog is complete
    user.find(marker='create-name').type(name)
    user.find(marker='create-submit').click()


# ---------------------------------------------------------------------- the store


@pytest.fixture
def store(tmp_path: Path) -> BlueprintStore:
    return BlueprintStore(STOCK_BLUEPRINTS_DIR, tmp_path / 'custom')


def test_rename_moves_the_file(store: BlueprintStore) -> None:
    store.put_custom('Mine', blueprint('true').encode())
    renamed = store.rename_custom('Mine', 'Yours')
    assert renamed.name == 'Yours' and renamed.source == 'custom'
    assert [p.name for p in store.custom_dir.iterdir()] == ['Yours.sh']
    assert store.rename_custom('Yours', 'yours').path.name == 'yours.sh'  # only the case changes


def test_rename_refuses_stock_taken_and_invalid_names(store: BlueprintStore) -> None:
    store.put_custom('Mine', blueprint('true').encode())
    store.put_custom('Other', blueprint('true').encode())
    with pytest.raises(Conflict, match='stock'):
        store.rename_custom('Mine', 'demo')
    with pytest.raises(Conflict, match='Other'):
        store.rename_custom('Mine', 'OTHER')
    with pytest.raises(InvalidInput):
        store.rename_custom('Mine', '../evil')
    with pytest.raises(Forbidden):
        store.rename_custom('Demo', 'MyDemo')
    with pytest.raises(NotFound):
        store.rename_custom('Nope', 'Fine')
    assert sorted(p.name for p in store.custom_dir.iterdir()) == ['Mine.sh', 'Other.sh']


def test_create_refuses_existing_names(store: BlueprintStore) -> None:
    assert store.create_custom('Fresh', blueprint('true').encode()).source == 'custom'
    for taken in ('fresh', 'ComfyUI'):
        with pytest.raises(Conflict, match='already exists'):
            store.create_custom(taken, blueprint('true').encode())


# ---------------------------------------------------------------------- the page


async def test_lists_stock_blueprints_read_only(ui_user: User) -> None:
    await ui_user.open('/blueprints')
    for name in ('Demo', 'ComfyUI', 'FluxGym', 'Stock', 'Image Generation'):
        await ui_user.should_see(name, retries=50)
    ui_user.find(marker='blueprint-Demo').click()
    await ui_user.should_see(marker='blueprint-stock-note', retries=50)
    assert 'aikore.name = Demo' in editor(ui_user).value
    assert not editor(ui_user).enabled
    ui_user.find(marker='blueprint-editor').type('rm -rf /')  # a disabled editor takes no typing
    assert 'rm -rf' not in editor(ui_user).value
    for hidden in ('blueprint-save', 'blueprint-rename', 'blueprint-delete'):
        await ui_user.should_not_see(marker=hidden)


async def test_create_edit_rename_delete_a_custom_blueprint(ui_user: User) -> None:
    await ui_user.open('/blueprints')
    ui_user.find(marker='blueprint-new').click()
    await name_and_confirm(ui_user, 'Mine')
    await ui_user.should_see('Blueprint Mine created', retries=50)
    assert 'aikore.name = Mine' in (custom_dir() / 'Mine.sh').read_text()
    await ui_user.should_see(marker='blueprint-save', retries=50)
    assert editor(ui_user).enabled

    editor(ui_user).set_value(editor(ui_user).value + 'echo edited\n')
    await ui_user.should_see('unsaved', retries=50)
    ui_user.find(marker='blueprint-save').click()
    await ui_user.should_see('Blueprint Mine saved', retries=50)
    assert (custom_dir() / 'Mine.sh').read_text().endswith('echo edited\n')

    ui_user.find(marker='blueprint-rename').click()
    await name_and_confirm(ui_user, 'Renamed')
    await ui_user.should_see('Renamed Mine to Renamed', retries=50)
    assert sorted(p.name for p in custom_dir().iterdir()) == ['Renamed.sh']

    ui_user.find(marker='blueprint-delete').click()
    await ui_user.should_see('Delete the custom blueprint Renamed?', retries=50)
    ui_user.find(marker='confirm').click()
    await ui_user.should_see('Blueprint Renamed deleted', retries=50)
    assert list(custom_dir().iterdir()) == []


async def test_invalid_and_taken_names_are_refused_with_a_message(ui_user: User) -> None:
    await ui_user.open('/blueprints')
    ui_user.find(marker='blueprint-new').click()
    await name_and_confirm(ui_user, 'bad name!')
    await ui_user.should_see('Invalid blueprint name', retries=50)
    name_input = ui_user.find(marker='blueprint-name').elements.pop()
    assert isinstance(name_input, ui.input) and 'Invalid blueprint name' in (name_input.error or '')
    await name_and_confirm(ui_user, 'comfyui')
    await ui_user.should_see("A stock blueprint named 'ComfyUI' already exists", retries=50)
    assert list(custom_dir().iterdir()) == []


async def test_copy_a_stock_blueprint_and_guard_unsaved_changes(ui_user: User) -> None:
    await copy_demo(ui_user, 'MyDemo')
    assert (custom_dir() / 'MyDemo.sh').read_text() == (STOCK_BLUEPRINTS_DIR / 'Demo.sh').read_text()
    await ui_user.should_see(marker='blueprint-save', retries=50)

    editor(ui_user).set_value('#!/bin/bash\necho changed\n')
    ui_user.find(marker='blueprint-ComfyUI').click()
    await ui_user.should_see('Discard the unsaved changes to MyDemo?', retries=50)
    ui_user.find(marker='confirm').click()
    await ui_user.should_see(marker='blueprint-stock-note', retries=50)
    assert 'aikore.name = ComfyUI' in editor(ui_user).value
    assert (custom_dir() / 'MyDemo.sh').read_text() == (STOCK_BLUEPRINTS_DIR / 'Demo.sh').read_text()


async def test_opens_on_a_blueprint_and_creates_an_instance_from_it(ui_user: User) -> None:
    await core_module.current().instances.create(InstanceCreate(name='other', blueprint='Demo'))
    await ui_user.open('/blueprints')
    await ui_user.should_see(marker='blueprint-stock-note', retries=50)  # not an empty editor: Demo is open
    assert 'aikore.name = Demo' in editor(ui_user).value
    ui_user.find(marker='blueprint-Demo').click()
    await create_instance_named(ui_user, 'from-demo')
    await ui_user.should_see('Logs · from-demo', retries=100)  # then the dashboard, on the new instance
    created = {instance.name: instance for instance in await core_module.current().instances.list_all()}
    assert created['from-demo'].blueprint == 'Demo'


async def test_an_instance_made_while_editing_keeps_the_edit_on_screen(ui_user: User) -> None:
    await copy_demo(ui_user, 'Mine')
    await ui_user.should_see(marker='blueprint-save', retries=50)
    edited = editor(ui_user).value + '\n# not saved yet\n'
    editor(ui_user).set_value(edited)
    await create_instance_named(ui_user, 'while-editing')
    await ui_user.should_see('Created while-editing', retries=50)  # and no move to the dashboard
    assert editor(ui_user).value == edited
    (created,) = await core_module.current().instances.list_all()
    assert created.blueprint == 'Mine'
