"""The monitor pane in NiceGUI's user simulation: charts from history, appended samples,
the interval control, the no-GPU notice, and per-instance usage in the table."""

from __future__ import annotations

from nicegui import ui
from nicegui.testing.user import User

from app.models import InstanceCreate
from app.services import core as core_module
from tests.helpers import python_server_blueprint, table_row


def system_chart(user: User) -> ui.plotly:
    (chart,) = user.find(marker='system-chart').elements
    assert isinstance(chart, ui.plotly)
    return chart


async def test_charts_replay_history_then_grow(ui_user: User) -> None:
    core = core_module.current()
    for _ in range(3):
        await core.monitor.sample_now()
    await ui_user.open('/')
    await ui_user.should_see(marker='system-chart', retries=50)  # the charts come once the table is shown
    chart = system_chart(ui_user)
    assert isinstance(chart.figure, dict)
    before = len(chart.figure['data'][0]['x'])
    assert before >= 3, 'the chart starts from the history'
    assert [trace['name'] for trace in chart.figure['data']] == ['CPU %', 'RAM %']
    await core.monitor.sample_now()
    await core.monitor.sample_now()
    assert len(chart.figure['data'][0]['x']) == before + 2
    await ui_user.should_see('No NVIDIA GPU detected', retries=50)  # this machine has no GPU driver


async def test_interval_buttons_change_the_sampler(ui_user: User) -> None:
    core = core_module.current()
    await ui_user.open('/')
    await ui_user.should_see('1 s', retries=50)
    ui_user.find(marker='interval-up').click()
    await ui_user.should_see('2 s', retries=50)
    assert core.monitor.interval == 2.0
    ui_user.find(marker='interval-down').click()
    ui_user.find(marker='interval-down').click()
    await ui_user.should_see('0.5 s', retries=50)
    assert core.monitor.interval == 0.5
    await ui_user.should_not_see('Monitoring every')  # the label says it: no notification per step


async def test_instance_usage_in_the_table(ui_user: User) -> None:
    core = core_module.current()
    core.blueprints.put_custom('Fast', python_server_blueprint().encode())
    instance = await core.instances.create(InstanceCreate(name='busy', blueprint='Fast'))
    await ui_user.open('/')
    await core.instances.start(instance.id)
    await ui_user.should_see('started', retries=100)
    await core.monitor.sample_now()
    await core.monitor.sample_now()
    row = table_row(ui_user, instance.id)
    assert row is not None
    assert row['usage'].endswith(' MB') and '%' in row['usage']  # a small Python server: megabytes
