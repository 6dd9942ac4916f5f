"""The row menu's dialogs (thin): Clone…, New satellite…, Rebuild environment…, Versions, Pins….
Every rule is the services' (``families.py``, ``environments.py``); these only ask and report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nicegui import ui

from ..models import CloneRequest, InstancePublic, SatelliteCreate
from ..services.catalog import validation
from ..services.core import Core
from ..services.errors import InvalidInput
from .feedback import attempt, confirm, notify, rule_error, succeeded

CLONE_NOTE = (
    'Its folder is copied except the environment, caches and logs: a venv hard-codes its own path, so the '
    'blueprint builds a fresh one at the first start. Follow the copy in its Logs.'
)
SATELLITE_NOTE = (
    "A satellite runs this instance's code and environment with its own GPUs, port, logs and outputs "
    '(e.g. one ComfyUI per GPU without a second install).'
)


def _gpus(text: str) -> list[int] | None:
    try:
        return validation.gpu_id_text(text)
    except InvalidInput as exc:
        notify(exc.detail, type='negative')
        return None


def _name_and_gpus(
    title: str, note: str, name: str, gpus: list[int], action: str, then: Callable[[str, list[int]], Awaitable[object]]
) -> None:
    origin = ui.context.slot  # where ``then`` reports: the dialog is gone by then
    with ui.dialog() as dialog, ui.card().classes('w-[28rem]'):
        ui.label(title).classes('text-lg')
        ui.label(note).classes('text-sm opacity-70')
        name_input = ui.input('Name', value=name, validation=rule_error(validation.instance_name)).mark('family-name')
        gpu_input = ui.input('GPUs (e.g. 0,1)', value=','.join(str(gpu) for gpu in gpus)).mark('family-gpus')

        async def go() -> None:
            ids = _gpus(gpu_input.value or '')
            if ids is None:
                return
            name = str(name_input.value or '').strip()
            dialog.close()
            dialog.delete()
            with origin:
                await then(name, ids)

        with ui.row():
            ui.button('Cancel', on_click=dialog.close).props('flat')
            ui.button(action, on_click=go).mark('family-go')
    dialog.on('hide', dialog.delete)
    dialog.open()


async def clone(core: Core, instance: InstancePublic, _all: list[InstancePublic]) -> None:
    async def then(name: str, gpus: list[int]) -> None:
        await attempt(
            core.families.clone(instance.id, CloneRequest(name=name, gpu_ids=gpus)),
            f'Copying {instance.name} into {name} (see its Logs)',
        )

    _name_and_gpus(f'Clone {instance.name}', CLONE_NOTE, f'{instance.name}-copy', instance.gpu_ids, 'Clone', then)


async def satellite(core: Core, instance: InstancePublic, _all: list[InstancePublic]) -> None:
    async def then(name: str, gpus: list[int]) -> None:
        await attempt(
            core.families.create_satellite(instance.id, SatelliteCreate(name=name, gpu_ids=gpus)),
            f'{name} created: a satellite of {instance.name}',
        )

    _name_and_gpus(f'New satellite of {instance.name}', SATELLITE_NOTE, f'{instance.name}-sat', [], 'Create', then)


async def rebuild(core: Core, instance: InstancePublic, everyone: list[InstancePublic]) -> None:
    running = [other.name for other in everyone if other.parent_id == instance.id and other.status.is_running]
    question = f'Rebuild the environment of {instance.name}? It is removed and created again at its next start.'
    if running:
        question += f' Its running satellites are stopped first: {", ".join(running)}.'
    confirm(
        question,
        'Rebuild',
        lambda: attempt(
            core.environments.rebuild(instance.id, stop_satellites=True),
            f'{instance.name}: the environment is rebuilt at the next start',
        ),
        color='warning',
        marker='confirm-rebuild',
    )


async def versions(core: Core, instance: InstancePublic, _all: list[InstancePublic]) -> None:
    with ui.dialog() as dialog, ui.card().classes('w-[30rem]').mark('versions'):
        ui.label(f'Versions in {instance.name}').classes('text-lg')
        spinner = ui.spinner()
        body = ui.column().classes('w-full')
        ui.button('Close', on_click=dialog.close).props('flat')
    dialog.on('hide', dialog.delete)
    dialog.open()
    report = await attempt(core.environments.versions(instance.id))
    spinner.delete()
    if report is None:
        dialog.close()
        return
    rows = [
        ('Environment', report.environment or 'none found (system python3)'),
        ('Python', report.python),
        ('torch', report.torch),
        ('CUDA runtime', report.cuda),
        ('xformers', report.xformers),
        ('NVIDIA driver', report.driver),
    ]
    with body:
        for label, value in rows:
            with ui.row().classes('w-full justify-between'):
                ui.label(label).classes('opacity-70')
                ui.label(value or '—')
        if report.pip_check is None:
            ui.label('pip check: pip is not installed there').classes('opacity-70')
        elif not report.pip_check:
            ui.label('pip check: no broken requirements').classes('text-positive')
        else:
            ui.label('pip check found problems:').classes('text-negative')
            for problem in report.pip_check:
                ui.label(problem).classes('text-xs font-mono')


async def pins(core: Core, instance: InstancePublic, _all: list[InstancePublic]) -> None:
    text = await attempt(core.environments.read_pins(instance.id))
    if text is None:
        return
    with ui.dialog() as dialog, ui.card().classes('w-[32rem]'):
        ui.label(f'Package pins of {instance.name}').classes('text-lg')
        ui.label(
            'pip constraints, one a line (e.g. torch==2.7.1): every pip install of its blueprint honours them, '
            'so an update never replaces these packages.'
        ).classes('text-sm opacity-70')
        editor = ui.textarea(value=text).props('outlined autogrow').classes('w-full font-mono').mark('pins-text')

        async def save() -> None:
            body = str(editor.value or '').encode()
            if await succeeded(core.environments.write_pins(instance.id, body), f'Pins of {instance.name} saved'):
                dialog.close()  # else the sentence says which line is wrong, and the dialog stays open
                dialog.delete()

        with ui.row():
            ui.button('Cancel', on_click=dialog.close).props('flat')
            ui.button('Save', on_click=save).mark('pins-save')
    dialog.on('hide', dialog.delete)
    dialog.open()


ACTIONS: dict[str, Callable[[Core, InstancePublic, list[InstancePublic]], Awaitable[None]]] = {
    'clone': clone,
    'satellite': satellite,
    'rebuild': rebuild,
    'versions': versions,
    'pins': pins,
}
