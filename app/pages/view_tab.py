"""The View tab: the selected instance embedded in the page (its ``urls.view``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nicegui import background_tasks, ui

from ..models import InstancePublic
from ..services.net.urls import why_unreachable

PICK = 'Pick an instance (its View button)'
FramingProbe = Callable[[InstancePublic], Awaitable[bool]]


class ViewTab:
    def __init__(self, refuses_framing: FramingProbe | None = None, proxy_on: bool = True) -> None:
        """``refuses_framing``: asks whether the app forbids being framed (the network service's);
        ``proxy_on``: whether the panel has a reverse proxy (the reason given without a URL)."""
        self.instance: InstancePublic | None = None
        self.refuses_framing = refuses_framing
        self.proxy_on = proxy_on
        with ui.row().classes('items-center w-full gap-2'):
            self.title = ui.label(PICK).classes('font-medium')
            ui.space()
            self.reload = ui.button(icon='refresh', on_click=self.reload_frame).props('flat dense round')
            self.reload.tooltip('Reload')
            self.new_tab = ui.button(icon='open_in_new', on_click=self.open_new_tab).props('flat dense round')
            self.new_tab.tooltip('Open in a new tab')
        self.reason = ui.label().classes('opacity-70')
        self.frame = ui.element('iframe').classes('w-full h-full min-h-[20rem] border-0 bg-white')
        self.frame.mark('view-frame')
        self._render()

    def show(self, instance: InstancePublic) -> None:
        self.instance = instance
        self._render()

    def changed(self, instance: InstancePublic) -> None:
        if self.instance is None or instance.id != self.instance.id:
            return
        if instance.urls != self.instance.urls:
            self.show(instance)
        elif instance.name != self.instance.name:
            self.instance = instance
            self.title.set_text(f'View · {instance.name}')

    def forget(self, instance_id: int) -> None:
        """The shown instance was deleted: the frame closes, back to the empty view."""
        if self.instance is not None and self.instance.id == instance_id:
            self.instance = None
            self.title.set_text(PICK)
            self._render()

    def _render(self) -> None:
        instance = self.instance
        url = instance.urls.view if instance else None
        if instance is not None:
            self.title.set_text(f'View · {instance.name}')
        reason = '' if url or instance is None else why_unreachable(instance, opening=False, proxy_on=self.proxy_on)
        self.reason.set_text(reason)
        self.frame.props(f'src="{url}"' if url else 'src="about:blank"')
        self.frame.set_visibility(url is not None)
        self.reload.set_enabled(url is not None)
        self.new_tab.set_enabled(url is not None)
        if url and instance is not None and self.refuses_framing is not None:
            background_tasks.create(self._check_framing(instance, url), name='view framing probe')

    async def _check_framing(self, instance: InstancePublic, url: str) -> None:
        """An app that forbids framing would show the browser's error page: say so instead."""
        assert self.refuses_framing is not None
        if not await self.refuses_framing(instance) or self.instance is not instance or self.frame.is_deleted:
            return
        self.frame.props('src="about:blank"')
        self.frame.set_visibility(False)
        self.reload.set_enabled(False)
        self.reason.set_text(
            f'{instance.name} does not allow being shown inside another page (it forbids framing): '
            'open it in a new tab (the button above).'
        )

    def reload_frame(self) -> None:
        ui.run_javascript(f'const f = getElement({self.frame.id}); if (f) f.src = f.src;')

    def open_new_tab(self) -> None:
        if self.instance is not None and self.instance.urls.view:
            ui.navigate.to(self.instance.urls.view, new_tab=True)
