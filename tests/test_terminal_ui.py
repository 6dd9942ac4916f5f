"""The Terminal tab through NiceGUI's user simulation: a real bash behind a simulated xterm."""

from __future__ import annotations

from pathlib import Path

import pytest
from nicegui import ui
from nicegui.testing.user import User

from app.models import InstanceCreate
from app.pages import terminal_view
from app.services import core as core_module
from app.services.consoles.terminals import ShellSpec, Terminal
from app.services.core import Core
from tests.helpers import click_row_action, gone, wait_until


class Screen:
    """Collects what the page writes into its xterm."""

    def __init__(self) -> None:
        self.text = ''

    def write(self, data: bytes | str) -> None:
        self.text += data.decode() if isinstance(data, bytes) else data


def open_shells() -> list[Terminal]:
    return list(core_module.current().terminals._open)


@pytest.fixture(autouse=True)
def own_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Shells read ~/.bashrc: a clean one, not this machine's."""
    (tmp_path / 'home').mkdir()
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))


async def test_terminal_tab_opens_a_shell_for_the_instance(ui_user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    core = core_module.current()
    first = await core.instances.create(InstanceCreate(name='shelly', blueprint='Demo', gpu_ids=[0]))
    second = await core.instances.create(InstanceCreate(name='other', blueprint='Demo'))
    await ui_user.open('/')
    await ui_user.should_see(marker='terminal', retries=50)  # the tools come once the table is shown
    xterm = ui_user.find(marker='terminal').elements.pop()
    ui_user.find(marker='terminal').trigger('vnodeMounted')  # what the browser says once it has made it
    assert isinstance(xterm, ui.xterm)
    screen = Screen()
    monkeypatch.setattr(xterm, 'write', screen.write)

    await click_row_action(ui_user, first.id, 'terminal')
    await ui_user.should_see('Terminal · shelly', retries=50)
    await wait_until(lambda: len(open_shells()) == 1, what='a shell')
    shell = open_shells()[0]
    typing = ui_user.find(marker='terminal')
    typing.trigger('data', 'echo "<$INSTANCE_NAME:$CUDA_VISIBLE_DEVICES>"; pwd\r')
    await wait_until(lambda: '<shelly:0>' in screen.text, what='the instance environment')
    assert str(core.settings.instances_dir / 'shelly') in screen.text

    typing.trigger('resize', {'cols': 101, 'rows': 33})
    typing.trigger('data', 'stty size\r')
    await wait_until(lambda: '33 101' in screen.text, what='the resized terminal')

    await click_row_action(ui_user, second.id, 'terminal')  # another instance: the first shell ends
    await ui_user.should_see('Terminal · other', retries=50)
    await wait_until(lambda: gone(shell.pid), what='the first shell to end')
    await wait_until(lambda: len(open_shells()) == 1 and open_shells()[0] is not shell, what='the second shell')
    second_shell = open_shells()[0]

    ui_user.client.delete()  # the page closes: its shell ends
    await wait_until(lambda: gone(second_shell.pid) and not open_shells(), what='the shell to end with the page')


async def test_the_oldest_terminal_of_a_user_is_closed_with_a_notice(
    ui_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = core_module.current()
    instance = await core.instances.create(InstanceCreate(name='many', blueprint='Demo'))
    await ui_user.open('/')
    await ui_user.should_see(marker='terminal', retries=50)  # the tools come once the table is shown
    xterm = ui_user.find(marker='terminal').elements.pop()
    ui_user.find(marker='terminal').trigger('vnodeMounted')  # what the browser says once it has made it
    screen = Screen()
    monkeypatch.setattr(xterm, 'write', screen.write)
    await click_row_action(ui_user, instance.id, 'terminal')
    await wait_until(lambda: len(open_shells()) == 1, what='the page shell')
    owner = open_shells()[0].owner
    assert owner not in {'', 'anonymous'}  # counted per browser
    page_shell = open_shells()[0]
    others = []
    for _ in range(5):  # the same browser opens five more (other tabs)
        others.append(await core.terminals.open(owner, _plain(core), lambda _: None, lambda _: None))
    await wait_until(lambda: 'at most 5 terminals per user' in screen.text, what='the notice in the oldest')
    assert not page_shell.alive
    assert core.terminals.of(owner) == others
    await ui_user.should_see(marker='terminal-new-shell', retries=50)


def _plain(core: Core) -> ShellSpec:
    return ShellSpec(argv=['bash', '--norc', '-i'], cwd=core.settings.data_dir, env={'PATH': '/usr/bin:/bin'})


async def test_a_double_click_leaves_one_shell(ui_user: User) -> None:
    core = core_module.current()
    instance = await core.instances.create(InstanceCreate(name='twice', blueprint='Demo'))
    await ui_user.open('/')
    await click_row_action(ui_user, instance.id, 'terminal')
    await click_row_action(ui_user, instance.id, 'terminal')
    await ui_user.should_see(marker='terminal-end-shell', retries=50)
    await wait_until(lambda: len(open_shells()) == 1 and all(not s.closed for s in open_shells()), what='one shell')
    ui_user.find(marker='terminal-end-shell').click()
    await wait_until(lambda: not open_shells(), what='no shell')
    await ui_user.should_see(marker='terminal-new-shell', retries=50)


async def test_a_slow_bashrc_is_explained_while_the_prompt_is_awaited(
    ui_user: User, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ~/.bashrc that takes a while (pyenv or conda init: a minute on some machines) left the
    terminal blank: the tab now says what the shell is doing, and the shell works once it is done."""
    home = tmp_path / 'home'
    (home / '.bashrc').write_text('while [[ ! -e ~/go ]]; do sleep 0.05; done\n')  # held until the test says go
    monkeypatch.setattr(terminal_view, 'SLOW_START', 0.2)
    instance = await core_module.current().instances.create(InstanceCreate(name='slowrc', blueprint='Demo'))
    await ui_user.open('/')
    await ui_user.should_see(marker='terminal', retries=50)
    xterm = ui_user.find(marker='terminal').elements.pop()
    ui_user.find(marker='terminal').trigger('vnodeMounted')  # what the browser says once it has made it
    screen = Screen()
    monkeypatch.setattr(xterm, 'write', screen.write)
    await click_row_action(ui_user, instance.id, 'terminal')
    await wait_until(lambda: terminal_view.SLOW_START_NOTICE in screen.text, what='the slow-start notice')
    (home / 'go').touch()
    ui_user.find(marker='terminal').trigger('data', 'echo "<$INSTANCE_NAME ready>"\r')
    await wait_until(lambda: '<slowrc ready>' in screen.text, what='the shell to answer')
    assert screen.text.count(terminal_view.SLOW_START_NOTICE) == 1
