"""The dashboard: instance table, monitor area and tools (Logs, Script, View, Terminal,
Trash) in resizable panes whose sizes and selected tab are remembered per user."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import app, ui

from ..api.deps import over_https
from ..models import InstancePublic
from ..services import core as core_module
from .create_dialog import empty_state, open_create_dialog
from .frame import frame
from .instance_table import InstanceTable
from .log_view import LogView
from .monitor_pane import MonitorPane
from .script_view import ScriptView
from .terminal_view import TerminalView
from .trash_view import TrashView
from .view_tab import ViewTab

TABS = ('Logs', 'Script', 'View', 'Terminal', 'Trash')
TOOLS_WAIT = 3.0  # seconds the tools wait for the browser to have painted the table
# The page is exactly the window: the q-page gets its height from Quasar's min-height (the
# window less the header), the content fills it without padding, and the panes take what the
# problems banner leaves. On a phone the tools and the monitor stack and scroll.
LAYOUT = """
.q-page { height: 0; display: flex; flex-direction: column; }
.q-page > .nicegui-content { flex: 1 1 0; min-height: 0; padding: 0; gap: 0; flex-wrap: nowrap; }
.aikore-pane { flex: 1 1 0; min-height: 0; }
@media (max-width: 640px) {
  .aikore-tools { flex-direction: column !important; overflow-y: auto; }
  .aikore-tools > .q-splitter__before { width: 100% !important; height: 85%; flex: 0 0 auto; }
  .aikore-tools > .q-splitter__separator { display: none; }
  .aikore-tools > .q-splitter__after { width: 100% !important; height: auto; flex: 0 0 auto; overflow: visible; }
  .aikore-monitor { height: auto !important; overflow: visible !important; }
}
"""


def remembered(key: str, default: float) -> float:
    value = app.storage.user.get(key, default)
    return float(value) if isinstance(value, int | float) else default


def remember(key: str, value: object) -> None:
    app.storage.user[key] = value


def show_on_dashboard(instance: InstancePublic) -> None:
    """To the dashboard, ``instance`` selected there (as if picked on the last visit)."""
    remember('instance', instance.id)
    ui.navigate.to('/')


def problems_banner(core: core_module.Core) -> None:
    """What went wrong at start (``core.problems``), kept up to date while the page is open."""
    banner = ui.column().classes('w-full gap-0 px-3 py-1 bg-orange-9 text-white text-sm aikore-problems')

    def show(problems: list[str]) -> None:
        banner.clear()
        with banner:
            ui.label('AiKore started with problems:').classes('font-bold')
            for problem in problems:
                ui.label(problem)
        banner.set_visibility(bool(problems))

    show(list(core.problems))
    stop = core.problems_changed.subscribe(show)
    ui.context.client.on_delete(stop)


@ui.page('/')
async def dashboard() -> None:
    core = core_module.current()
    instances = await core.instances.list_all()  # before building: the rows go out with the page itself
    blueprints = await asyncio.to_thread(core.blueprints.all)  # reads every blueprint file
    host = ui.context.client.request.headers.get('host')
    scheme = 'https' if over_https(ui.context.client.request.scope) else 'http'

    def with_urls(instance: InstancePublic) -> InstancePublic:
        """Open and View URLs as this browser reaches the panel (its scheme too)."""
        return core.network.with_urls(instance, host, scheme)

    selecting = False  # a row's action is changing the tab

    async def select(instance: InstancePublic, tab: str = '') -> None:
        """An action of a row opens one of the tools on that instance; a click on a row
        shows the instance in the current tool. The choice is remembered for the next visit."""
        nonlocal selecting
        remember('instance', instance.id)
        table.highlight(instance.id)
        tab = tab or str(tabs.value or 'Logs')
        if tab != tabs.value:
            selecting = True  # read by tab_chosen's handler, called within set_value
            try:
                tabs.set_value(tab)
            finally:
                selecting = False
        if tools_ready:
            await show_in(tab, instance)

    async def show_in(tab: str, instance: InstancePublic) -> None:
        if tab == 'Logs':
            await logs.show(instance)
        elif tab == 'Script':
            await script.show(instance)
        elif tab == 'View':
            view.show(instance)
        elif tab == 'Terminal':
            await terminal.show(instance)

    with frame('Dashboard'):
        problems_banner(core)
        ui.add_css(LAYOUT)
        with (
            ui.splitter(horizontal=True, value=remembered('split_main', 45), limits=(15, 85))
            .classes('w-full aikore-pane')
            .on_value_change(lambda e: remember('split_main', e.value)) as main_split
        ):
            with main_split.before, ui.column().classes('w-full h-full p-2 gap-2 no-wrap'):
                with ui.row().classes('items-center w-full'):
                    ui.label('Instances').classes('text-lg font-bold')
                    ui.space()
                    ui.button('New instance', icon='add', on_click=lambda: open_create_dialog(core))
                empty = empty_state(core)
                table = InstanceTable(core, select, empty.set_visibility, with_urls)
            with (
                main_split.after,
                ui.splitter(value=remembered('split_tools', 70), limits=(30, 100))
                .classes('w-full h-full aikore-tools')
                .on_value_change(lambda e: remember('split_tools', e.value)) as tools_split,
            ):
                with tools_split.before, ui.column().classes('w-full h-full p-2 gap-1'):
                    chosen: Any = app.storage.user.get('tab', 'Logs')  # a tab's name (str)
                    chosen = chosen if chosen in TABS else 'Logs'
                    tab_props = 'dense align=left mobile-arrows outside-arrows'  # scrollable on a phone
                    with ui.tabs(value=chosen).props(tab_props).classes('w-full') as tabs:
                        for name in TABS:
                            ui.tab(name)
                    tabs.on_value_change(lambda e: tab_chosen(str(e.value), follow=not selecting))
                    # The panels follow the tabs (``tab_panels(tabs)`` binds them): given the same
                    # value, so that binding does not copy an empty one back onto the tabs.
                    with ui.tab_panels(tabs, value=chosen).classes('w-full grow') as panels:
                        tab_panels = {name: ui.tab_panel(name).classes('p-0 h-full') for name in TABS}
                    panels.props('animated=false')
                with tools_split.after:
                    monitor_area = ui.column().classes('w-full h-full p-2 gap-1 overflow-y-auto aikore-monitor')

    async def tab_chosen(tab: str, follow: bool) -> None:
        """``follow``: the person changed the tab (not a row's action, which shows its instance)."""
        remember('tab', tab)
        if not tools_ready:
            return
        if tab == 'Trash':
            trash.shown()
            return
        if tab in {'Logs', 'Terminal'}:  # a tab's content is mounted when first shown: fit it then
            (logs if tab == 'Logs' else terminal).fit()
        instance = table.selected
        if follow and instance is not None and follows_selection(tab, instance):
            await show_in(tab, instance)

    def follows_selection(tab: str, instance: InstancePublic) -> bool:
        """A tool opened on another tab shows the highlighted instance, unless it holds what the
        person could lose or chose: an unsaved script edit, a shell of another instance (open, or
        ended with its last output), an app of another instance loaded in View."""
        if tab == 'Script':
            return not script.dirty
        if tab == 'Terminal':
            return terminal.instance is None
        if tab == 'View':
            return view.instance is None or (view.instance.id != instance.id and view.instance.urls.view is None)
        return True

    def changed(instance: InstancePublic) -> None:
        """Every change of an instance: its row, and the tools showing it (a rename retitles them)."""
        shown = table.apply(instance)
        if tools_ready:
            view.changed(shown)
            script.changed(shown)
            terminal.changed(shown)
            logs.changed(shown)

    def routes_changed(_: None) -> None:
        table.refresh_urls()
        if tools_ready and view.instance is not None:
            view.changed(with_urls(view.instance))

    def removed(instance_id: int) -> None:
        """An instance was deleted (moved to the trash): the tools showing it let go of it."""
        table.removed(instance_id)
        if tools_ready:
            for tool in (logs, script, view, terminal):
                tool.forget(instance_id)
            trash.refresh_soon()
            if tabs.value == 'Trash':
                trash.shown()

    client = ui.context.client
    unsubscribe = [
        core.events.subscribe(changed),
        core.instances.removed.subscribe(removed),
        core.monitor.events.subscribe(table.show_usage),
    ]
    if core.network.proxy is not None:
        unsubscribe.append(core.network.proxy.routes_changed.subscribe(routes_changed))
    client.on_delete(lambda: [stop() for stop in unsubscribe])
    table.load(instances, {bp.name: bp.meta.category for bp in blueprints})
    # The tools and charts come once the table is on screen: their libraries (xterm, CodeMirror,
    # Plotly) are big to load, and the first thing a person looks at is the table.
    tools_ready = False
    await client.connected()
    await table.shown(TOOLS_WAIT)
    if client.is_deleted:  # the browser left meanwhile
        return
    with tab_panels['Logs']:
        logs = LogView(core)
    with tab_panels['Script']:
        script = ScriptView(core)
    with tab_panels['View']:
        view = ViewTab(core.network.refuses_framing, core.network.proxy_on)
    with tab_panels['Terminal']:
        terminal = TerminalView(core)
    with tab_panels['Trash']:
        trash = TrashView(core)
    tools_ready = True
    if tabs.value == 'Trash':
        trash.shown()
    with monitor_area:
        MonitorPane(core)
    await restore_selection(table, select)


def last_selected(table: InstanceTable) -> InstancePublic | None:
    """The instance chosen on the last visit, or the only one."""
    chosen = app.storage.user.get('instance')
    if isinstance(chosen, int) and chosen in table.instances:
        return table.instances[chosen]
    if len(table.instances) == 1:
        return next(iter(table.instances.values()))
    return None


async def restore_selection(table: InstanceTable, select: Callable[[InstancePublic, str], Awaitable[None]]) -> None:
    """Back to the tab and instance of the last visit, so the tools pane is never blank."""
    instance = last_selected(table)
    if instance is not None:
        await select(instance, '')
