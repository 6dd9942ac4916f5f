"""The PTY service behind the Terminal tab, with real bash processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from app.config import Settings
from app.models import Instance
from app.services.consoles import terminals
from app.services.consoles.terminals import EVICTED, ShellSpec, Terminal, Terminals
from app.services.errors import Conflict
from tests.helpers import gone, wait_until

VENV_SCRIPT = """#!/usr/bin/env bash
### AIKORE-METADATA-START ###
# aikore.name = Boxed
# aikore.venv_type = venv
# aikore.venv_path = ./env
### AIKORE-METADATA-END ###
echo run
"""


class Screen:
    """What a shell printed, and its end notices."""

    def __init__(self) -> None:
        self.data = b''
        self.ended: list[str] = []

    def output(self, data: bytes) -> None:
        self.data += data

    @property
    def text(self) -> str:
        return self.data.decode('utf-8', errors='replace')


def session(sid: int) -> list[psutil.Process]:
    """Live processes of a session (jobs in other process groups and orphans included)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid and not gone(process):
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


@pytest.fixture
async def shells() -> AsyncIterator[Terminals]:
    opened = Terminals()
    try:
        yield opened
    finally:
        await opened.close_all()


def plain_shell(folder: Path) -> ShellSpec:
    env = {'PATH': '/usr/bin:/bin', 'HOME': str(folder), 'TERM': 'xterm', 'PS1': '$ '}
    return ShellSpec(argv=['bash', '--norc', '--noprofile', '-i'], cwd=folder, env=env)


async def open_shell(shells: Terminals, spec: ShellSpec, owner: str = 'me') -> tuple[Terminal, Screen]:
    screen = Screen()
    terminal = await shells.open(owner, spec, screen.output, screen.ended.append)
    return terminal, screen


async def test_shell_runs_in_the_instance_folder_with_its_environment(
    tmp_path: Path, shells: Terminals, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv('HOME', str(tmp_path))  # the shell reads ~/.bashrc: not this machine's
    settings = Settings.from_env({'AIKORE_DATA_DIR': str(tmp_path / 'data')})
    folder = settings.instances_dir / 'box'
    (folder / 'env' / 'bin').mkdir(parents=True)
    (folder / 'launch.sh').write_text(VENV_SCRIPT)
    (folder / 'env' / 'bin' / 'activate').write_text('export VENV_MARK=active\n')
    instance = Instance(name='box', slug='box', blueprint='Boxed', gpu_ids=[1, 3])
    spec = terminals.instance_shell(settings, instance, settings.stock_blueprints_dir / 'functions.sh')
    assert spec.cwd == folder and spec.env['MODELS_DIR'] == str(settings.models_dir)
    assert 'WEBUI_PORT' not in spec.env  # not running: no port

    terminal, screen = await open_shell(shells, spec)
    terminal.write('echo "<$INSTANCE_NAME $CUDA_VISIBLE_DEVICES $VENV_MARK>"; pwd\r')
    await wait_until(lambda: '<box 1,3 active>' in screen.text, what='the instance variables')
    await wait_until(lambda: f'\n{folder}\r' in screen.text, what='the working directory')


async def test_resize_reaches_the_shell(tmp_path: Path, shells: Terminals) -> None:
    terminal, screen = await open_shell(shells, plain_shell(tmp_path))
    terminal.write('stty size\r')
    await wait_until(lambda: '24 80' in screen.text, what='the initial size')
    terminal.resize(132, 43)
    terminal.write('stty size\r')
    await wait_until(lambda: '43 132' in screen.text, what='the new size')


async def test_close_ends_the_shell_and_everything_it_started(tmp_path: Path, shells: Terminals) -> None:
    terminal, screen = await open_shell(shells, plain_shell(tmp_path))
    terminal.write('sleep 300 & (sleep 301 &) ; sleep 302\r')  # a job, an orphan, the foreground
    await wait_until(lambda: [p.name() for p in session(terminal.pid)].count('sleep') == 3, what='the sleeps')
    started = session(terminal.pid)
    terminal.close()
    await terminal.wait_closed()
    await wait_until(lambda: all(gone(process) for process in started), what='every process to end')
    assert terminal.process.returncode is not None
    assert shells.of('me') == [] and screen.ended == []  # a quiet close says nothing


async def test_exit_tells_why_and_frees_the_slot(tmp_path: Path, shells: Terminals) -> None:
    terminal, screen = await open_shell(shells, plain_shell(tmp_path))
    terminal.write('exit 3\r')
    await wait_until(lambda: screen.ended, what='the end notice')
    assert screen.ended == ['Shell exited with code 3.']
    assert shells.of('me') == [] and not terminal.alive


async def test_the_sixth_terminal_closes_the_oldest(tmp_path: Path, shells: Terminals) -> None:
    spec = plain_shell(tmp_path)
    opened = [await open_shell(shells, spec, 'alice') for _ in range(5)]
    other, _ = await open_shell(shells, spec, 'bob')
    newest, _ = await open_shell(shells, spec, 'alice')
    oldest, oldest_screen = opened[0]
    assert oldest_screen.ended == [EVICTED]
    await oldest.wait_closed()
    assert not oldest.alive and oldest.process.returncode is not None
    assert shells.of('alice') == [terminal for terminal, _ in opened[1:]] + [newest]
    assert shells.of('bob') == [other] and other.alive


async def test_a_missing_folder_is_a_clear_error(tmp_path: Path, shells: Terminals) -> None:
    with pytest.raises(Conflict, match='does not exist'):
        await shells.open('me', plain_shell(tmp_path / 'nowhere'), lambda _: None, lambda _: None)
