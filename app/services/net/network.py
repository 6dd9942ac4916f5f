"""How the panel and its instances are reached: who runs nginx, where the panel listens,
the public ports, and the URLs shown to users.

AIKORE_NGINX picks the mode: ``managed`` (bare host: the panel runs its own nginx master on
AIKORE_PORT and listens itself on a loopback port), ``external`` (container: supervisord runs
nginx; the panel only writes the config and signals it), ``off`` (no proxy: the panel serves
on AIKORE_PORT and only the ``port`` access pattern exists). ``auto`` (the default) is
``managed`` when nginx is installed, else ``off``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from ...config import Settings
from ...models import AccessPattern, InstancePublic
from ..catalog.blueprints import BlueprintStore
from ..catalog.rows import InstanceRows
from ..events import EventBus
from ..runtime import launch
from .framing import app_refuses_framing
from .nginx import ManagedMaster, Nginx, NginxError, NginxPaths, find_binary
from .path_modes import PathModes
from .ports import Ports
from .proxy import Proxy
from .urls import instance_urls

log = logging.getLogger(__name__)

HOST_RE = re.compile(r'[A-Za-z0-9.:\[\]-]+')


@dataclass
class Network:
    settings: Settings
    mode: str  # managed | external | off
    panel_host: str
    panel_port: int
    proxy: Proxy | None
    ports: Ports
    path_modes: PathModes

    @classmethod
    def open(cls, settings: Settings, engine: Engine, rows: InstanceRows, api_token: str | None = None) -> Network:
        """Decide the mode and the panel's own address (blocking; before the server starts)."""
        if not HOST_RE.fullmatch(settings.host):
            raise NginxError(f'AIKORE_HOST={settings.host!r} is not a host name or address')
        ports = Ports(settings, engine, rows)
        path_modes = PathModes(settings, BlueprintStore(settings.stock_blueprints_dir, settings.custom_blueprints_dir))
        mode, binary = _resolve_mode(settings)
        if binary is None:
            return cls(settings, 'off', settings.host, settings.port, None, ports, path_modes)
        paths = NginxPaths(settings.nginx_dir, settings.nginx_pid or settings.nginx_dir / 'nginx.pid')
        nginx = Nginx(binary, paths)
        panel_port = settings.panel_port or _free_panel_port(settings)
        master = ManagedMaster(nginx) if mode == 'managed' else None
        proxy = Proxy(settings, engine, nginx, panel_port, master, api_token, path_modes)
        return cls(settings, mode, '127.0.0.1', panel_port, proxy, ports, path_modes)

    @property
    def proxy_on(self) -> bool:
        return self.proxy is not None

    @property
    def access_patterns(self) -> frozenset[AccessPattern]:
        """The patterns users may choose: path and subdomain need the proxy."""
        return frozenset(AccessPattern) if self.proxy_on else frozenset({AccessPattern.PORT})

    async def startup(self, events: EventBus[InstancePublic], removed: EventBus[int]) -> None:
        """After re-adoption (internal ports known): write the config and start nginx, map the ports."""
        try:
            if self.proxy is not None:
                await self.proxy.startup(events, removed)
        finally:  # the forwarders do not need the proxy: a proxy that failed must not leave them unfollowed
            await self.ports.startup(removed)
        log.info('Networking: nginx %s, panel on %s:%s', self.mode, self.panel_host, self.panel_port)

    async def shutdown(self) -> None:
        await self.ports.shutdown()
        if self.proxy is not None:
            await self.proxy.shutdown()

    async def api_token_changed(self, token: str) -> None:
        """The API token was replaced: nginx must let the new one through (and strip it from what
        instances receive) and the old one no more, before the change is answered."""
        if self.proxy is not None:
            await self.proxy.set_api_token(token)

    def with_urls(self, instance: InstancePublic, request_host: str | None, scheme: str = 'http') -> InstancePublic:
        """The instance with ``urls`` filled in for a user who reached the panel at ``request_host``."""
        entry = self.settings.public_host or request_host
        routed = self.proxy is not None and self.proxy.serves(instance.id, instance.slug, instance.internal_port)
        instance = instance.model_copy(update={'path_mode': self.path_modes.mode(instance.name, instance.blueprint)})
        return instance.model_copy(update={'urls': instance_urls(instance, entry, routed, scheme)})

    async def refuses_framing(self, instance: InstancePublic) -> bool:
        """The running app forbids being framed by another origin (View then offers a new tab)."""
        if instance.internal_port is None:
            return False
        keep = self.path_modes.mode(instance.name, instance.blueprint) == 'keep'
        return await app_refuses_framing(instance.internal_port, f'/instance/{instance.slug}/' if keep else '/')

    def status(self) -> dict[str, Any]:
        proxy = self.proxy.status() if self.proxy is not None else None
        return {
            'nginx': self.mode,
            'panel': f'{self.panel_host}:{self.panel_port}',
            'proxy': proxy.__dict__ if proxy is not None else None,
            'socat': self.ports.socat is not None,
        }


def _resolve_mode(settings: Settings) -> tuple[str, str | None]:
    if settings.nginx == 'off':
        return 'off', None
    binary = find_binary()
    if binary is not None:
        return ('managed' if settings.nginx == 'auto' else settings.nginx), binary
    if settings.nginx == 'auto':
        log.info('nginx is not installed: the panel serves directly on port %s (port access only)', settings.port)
        return 'off', None
    raise NginxError(f'AIKORE_NGINX={settings.nginx} but nginx is not installed (apt-get install nginx, or make setup)')


def _free_panel_port(settings: Settings) -> int:
    low, high = settings.port_range
    return launch.free_port({settings.port, *range(low, high + 1)})
