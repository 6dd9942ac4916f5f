"""The create dialog and the first-run card that creates a Demo instance in one click."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from nicegui import ui

from ..models import AccessPattern, Executor, InstanceCreate, InstancePublic, RestartPolicy
from ..services.catalog import validation
from ..services.catalog.blueprints import Blueprint
from ..services.core import Core
from ..services.errors import InvalidInput, ServiceError
from .feedback import attempt, notify, rule_error
from .instance_rows import ACCESS_LABELS, NO_GPU

_name_rule = rule_error(validation.instance_name)


def name_error(value: str | None, taken: dict[str, str] | None = None) -> str | None:
    """The service's rule, and its sentence for a name in use (``taken``: lower-cased -> as written)."""
    text = value or ''
    error = _name_rule(text)  # an empty field says 'A name is required', as the service does
    existing = (taken or {}).get(text.lower())
    if error is None and existing is not None:
        return f'An instance named {existing!r} already exists (names ignore case)'
    return error


async def gpu_choices(core: Core, count: int) -> tuple[dict[int, str], int | None]:
    """Each GPU with its free memory and the running instances pinned to it; and the
    GPU with the most free memory (preselected)."""
    sample = core.monitor.latest
    pinned: dict[int, list[str]] = {}
    for instance in await core.instances.list_all():
        if instance.status.is_running:
            for gpu in instance.gpu_ids:
                pinned.setdefault(gpu, []).append(instance.name)
    options = {}
    for index in range(count):
        stats = next((g for g in sample.gpus if g.index == index), None) if sample else None
        label = f'GPU {index}'
        if stats is not None:
            label += f' · {stats.reading.name}'
            if stats.memory_free is not None:
                label += f' · {stats.memory_free / 1024**3:.1f} GiB free'
        if index in pinned:
            label += f' · used by {", ".join(pinned[index])}'
        options[index] = label
    return options, sample.freest_gpu() if sample else None


def blueprint_options(blueprints: list[Blueprint]) -> dict[str, str]:
    """Stock first, then custom, each with its category."""
    options = {}
    for blueprint in sorted(blueprints, key=lambda bp: (bp.source != 'stock', bp.name.lower())):
        shown = blueprint.meta.category and blueprint.meta.category.lower() != blueprint.name.lower()
        category = f' · {blueprint.meta.category}' if shown else ''
        options[blueprint.name] = f'{blueprint.source.capitalize()} — {blueprint.name}{category}'
    return options


async def open_create_dialog(
    core: Core, blueprint: str = 'Demo', on_created: Callable[[InstancePublic], None] | None = None
) -> None:
    """``on_created``: called with the new instance once it is created (after the message)."""
    blueprints = await asyncio.to_thread(core.blueprints.all)  # reads every blueprint file
    options = blueprint_options(blueprints)
    descriptions = {bp.name: bp.meta.description for bp in blueprints}
    gpu_count = await asyncio.to_thread(core.instances.gpu_count)  # the GPU source the service checks against
    existing = await core.instances.list_all()
    taken = {other.name.lower(): other.name for other in existing}  # said as the name is typed
    with ui.dialog() as dialog, ui.card().classes('w-[32rem] max-w-full'):
        ui.label('New instance').classes('text-lg font-bold')
        name = ui.input('Name', validation=lambda value: name_error(value, taken)).props('autofocus')
        name.classes('w-full').mark('create-name')
        chosen = ui.select(options, label='Blueprint', value=blueprint if blueprint in options else None)
        chosen.classes('w-full').mark('create-blueprint')
        description = ui.label().classes('text-sm opacity-70')
        chosen.on_value_change(lambda e: description.set_text(descriptions.get(e.value, '')))
        description.set_text(descriptions.get(chosen.value or '', ''))
        gpus: ui.select | ui.input
        if gpu_count:
            gpu_options, freest = await gpu_choices(core, gpu_count)
            gpus = ui.select(gpu_options, multiple=True, label='GPUs', value=[freest] if freest is not None else [])
            gpus.classes('w-full').mark('create-gpus')
        else:
            gpus = ui.input('GPUs (e.g. 0,1)', value='').classes('w-full').mark('create-gpus')
            gpu_hint = ui.label(f'No GPU detected: {NO_GPU}')
            gpu_hint.classes('text-xs text-warning').mark('create-gpu-warning')
            gpu_hint.bind_visibility_from(gpus, 'value', backward=bool)
        with ui.row().classes('w-full'):
            autostart = ui.checkbox('Autostart')
            persistent = ui.checkbox('Persistent desktop')
        low, high = core.settings.port_range
        assigned = {other.public_port: other.name for other in existing if other.public_port}

        def port_error(value: float | None) -> str | None:
            if value is None:
                return None
            if value != int(value):
                return f'The public port must be a whole number within {low}-{high}, not {value:g}'
            if not low <= value <= high:
                return f'Port {int(value)} is outside the public range {low}-{high}'
            return None

        # No min/max on the field: those would change a typed 70000 into the limit behind the person's back.
        port = ui.number(f'Public port ({low}-{high})', value=await core.instances.suggested_public_port(),
                         format='%d', validation=port_error).classes('w-full').mark('create-port')  # fmt: skip
        port_hint = ui.label().classes('text-xs text-warning').mark('create-port-warning')

        def show_port_hint() -> None:
            holder = (
                assigned.get(int(port.value)) if port.value is not None and port_error(port.value) is None else None
            )
            port_hint.set_text(f'Port {int(port.value)} is already assigned to {holder}: only one of them can be '
                               'active at a time' if holder else '')  # fmt: skip
            port_hint.set_visibility(bool(holder))

        port.on_value_change(show_port_hint)
        show_port_hint()
        access = ui.select(ACCESS_LABELS, label='Access', value='port').classes('w-full')
        policy = ui.select([p.value for p in RestartPolicy], label='Restart policy', value='never').classes('w-full')
        # Offered only when a cluster is configured: a Slurm job gets as many GPUs as are chosen here.
        executor = ui.select({'local': 'This machine', 'slurm': 'Slurm cluster (GPU count from GPUs)'},
                             label='Runs on', value='local').classes('w-full').mark('create-executor')  # fmt: skip
        partition = ui.input('Slurm partition (empty: the default)').classes('w-full').mark('create-partition')
        executor.set_visibility(core.settings.slurm)
        partition.bind_visibility_from(executor, 'value', backward=lambda value: value == 'slurm')
        problem = ui.label().classes('text-sm text-negative').mark('create-error')
        problem.set_visibility(False)

        def fail(message: str) -> None:
            """Errors stay in the dialog, next to what caused them, not over its buttons."""
            problem.set_text(message)
            problem.set_visibility(True)

        async def create() -> None:
            if not (name.validate() and port.validate()):
                return
            try:
                gpu_ids = list(gpus.value) if gpu_count else validation.gpu_id_text(gpus.value)
            except InvalidInput as exc:
                fail(exc.detail)
                return
            data = InstanceCreate(
                name=name.value or '',
                blueprint=chosen.value or '',
                gpu_ids=gpu_ids,
                autostart=autostart.value,
                persistent=persistent.value,
                public_port=int(port.value) if port.value is not None and executor.value == 'local' else None,
                access_pattern=AccessPattern(access.value),
                restart_policy=RestartPolicy(policy.value),
                executor=Executor(executor.value),
                slurm_partition=(partition.value or None) if executor.value == 'slurm' else None,
            )
            try:
                created = await core.instances.create(data)
            except ServiceError as exc:
                fail(exc.detail)
                return
            dialog.close()
            with dialog.parent_slot or contextlib.nullcontext():
                notify(f'Created {data.name}', type='positive')
                if on_created is not None:
                    on_created(created)

        with ui.row().classes('w-full justify-end'):
            ui.button('Cancel', on_click=dialog.close).props('flat')
            ui.button('Create', on_click=create).props('color=primary').mark('create-submit')
    dialog.open()


async def create_demo(core: Core) -> None:
    """First run: a Demo instance with a free name, in one click."""
    names = {instance.name.lower() for instance in await core.instances.list_all()}
    name = next(candidate for n in range(1, 1000) if (candidate := 'demo' if n == 1 else f'demo-{n}') not in names)
    await attempt(core.instances.create(InstanceCreate(name=name, blueprint='Demo')), f'Created {name}')


def empty_state(core: Core) -> ui.card:
    with ui.card().classes('w-full items-center text-center p-8') as card:
        ui.icon('rocket_launch', size='xl').classes('opacity-70')
        ui.label('No instances yet').classes('text-lg font-bold')
        ui.label('The offline Demo blueprint needs no GPU and no network: a good first instance.')
        with ui.row():
            ui.button('Create a Demo instance', on_click=lambda: create_demo(core)).props('color=primary')
            ui.button('Choose a blueprint…', on_click=lambda: open_create_dialog(core)).props('flat')
    return card
