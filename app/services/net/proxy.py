"""The reverse proxy's config: which instances nginx routes, rendered from the Jinja2
template in ``container/nginx/`` and applied safely.

Every change goes render -> ``nginx.conf.candidate`` -> ``nginx -t -c <abs>`` -> copy into
``nginx.conf`` -> reload with the same ``-c``. A render nginx refuses never replaces the
live file (it stays in ``nginx.conf.candidate``), the error is logged and kept for
``GET /api/network``, and nginx goes on serving the previous config. The routes follow
the instances: the service listens to instance events and re-renders when a slug or an
internal port changes (start, stop, rename, create, delete); unchanged routes cause no
reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy.engine import Engine

from ...config import Settings
from ...models import SLUG_RE, Instance, InstancePublic
from ..access import auth
from ..access.sessions import PANEL_COOKIES
from ..catalog import store
from ..events import EventBus
from ..files import PRIVATE, write_atomic
from ..runtime import desktop
from ..runtime.slurm import NODE_ADDR_RE, job_secret
from . import tls
from .nginx import ManagedMaster, Nginx, NginxError
from .path_modes import PathModes
from .urls import panel_hosts, routable_alias

log = logging.getLogger(__name__)

TEMPLATE = 'nginx.conf.j2'
TOKEN_RE = re.compile(r'[A-Za-z0-9._~+/=-]{16,256}')
UNSAFE_PATH_CHARS = re.compile(r'["\\$\r\n]')  # the paths are double-quoted in the config
ACCESS_LOG_MAX = 20 * 1024 * 1024
HOUSEKEEPING_EVERY = 600.0
COALESCE_SECONDS = 0.05
SHUTDOWN_WAIT = 10.0
TUNING = {'worker_processes': 2, 'shutdown_timeout': '10m', 'buffer_kb': 256}


@dataclass(frozen=True)
class Route:
    """One instance as nginx sees it: its slug and the internal port it runs on or last ran on
    (while it is stopped the port refuses connections and nginx answers 503; the next run gets
    the same port when it is free, so starting and stopping need no reload)."""

    id: int
    slug: str
    port: int | None
    path_mode: str = 'keep'  # aikore.path: keep | strip | none (app.services.net.path_modes)
    host: str = '127.0.0.1'  # a Slurm job: its node's address (the port is its gate's)
    secret: str | None = None  # a Slurm job: the per-job secret its gate wants (X-AiKore-Job)
    alias: str | None = None  # its custom host name (served like <slug>.<host>, same authentication)


@dataclass
class ProxyStatus:
    mode: str
    running: bool
    config: str | None
    last_error: str | None
    reloads: int
    routes: int


class Proxy:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        nginx: Nginx,
        panel_port: int,
        master: ManagedMaster | None,
        api_token: str | None = None,
        path_modes: PathModes | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.nginx = nginx
        self.paths = nginx.paths
        self.panel_port = panel_port
        self.master = master  # None: external mode (someone else runs the master)
        self.path_modes = path_modes
        self.api_token = _quotable(api_token)
        # Sent to the panel only (never to instances): the panel then believes nginx's X-Real-IP.
        self.proxy_secret = auth.proxy_secret(api_token) if api_token else secrets.token_hex(32)
        self.last_error: str | None = None
        self.certificate: tls.Certificate | None = None  # set at startup when HTTPS is on
        self.reloads = 0
        self._applied: tuple[Route, ...] | None = None
        self._live: frozenset[Route] = frozenset()  # routes nginx serves now (after the last good reload)
        self._seen: dict[int, Route] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        self._unsubscribe: list[Any] = []
        self.routes_changed: EventBus[None] = EventBus('proxy-routes')
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(settings.nginx_templates),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            autoescape=False,  # noqa: S701 - nginx config, not HTML; every value is validated
        )

    @property
    def mode(self) -> str:
        return 'managed' if self.master is not None else 'external'

    # ------------------------------------------------------------------ start / exit

    async def startup(self, events: EventBus[InstancePublic], removed: EventBus[int]) -> None:
        """Write the config from the database (replacing whatever an earlier run left), then
        start the managed master or signal the external one; follow instance events from now on."""
        _check_path(self.paths.folder)
        await asyncio.to_thread(self._prepare_folder)
        error = await self.apply(force=True, reload=self.master is None)
        if error is not None and not self.paths.config.exists():
            raise NginxError(f'cannot write a first nginx config: {error}')
        if self.master is not None:
            await self.master.start()
        self._unsubscribe = [events.subscribe(self._on_instance), removed.subscribe(self._on_removed)]
        self._worker = asyncio.ensure_future(self._work())

    def _prepare_folder(self) -> None:
        self.paths.prepare()
        self._rotate_access_log()
        if self.settings.https_port is not None:
            self.certificate = tls.ensure(self.settings)
            _check_path(self.certificate.cert)
            _check_path(self.certificate.key)

    async def shutdown(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._worker is not None:
            # A flag, not cancel(): Python 3.11's wait_for can swallow a cancellation that
            # arrives together with a wake-up, and the loop would then sleep on.
            self._closing = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), SHUTDOWN_WAIT)
            except TimeoutError:
                self._worker.cancel()
        if self.master is not None:
            await self.master.stop()

    async def set_api_token(self, token: str) -> None:
        """Re-render with a new API token at once (the old one passes nginx's shortcut until then).
        Should nginx refuse the render, the error is logged and kept as for any other change."""
        self.api_token = _quotable(token)
        self.proxy_secret = auth.proxy_secret(token)  # the panel checks X-AiKore-Proxy against the new token
        await self.apply(force=True)

    # ------------------------------------------------------------------ following instances

    def _on_instance(self, public: InstancePublic) -> None:
        seen = self._seen.get(public.id)
        mode = self._path_mode(public.name, public.blueprint)
        if public.executor == 'slurm':
            changed = True  # its node and secret are not in the event: apply() compares the routes
        elif public.status.is_running:
            changed = seen != Route(public.id, public.slug, public.internal_port, mode)
        else:  # the API hides a stopped instance's port; its route keeps it
            changed = seen is None or seen.slug != public.slug or seen.path_mode != mode
        if seen is not None and seen.alias != self._alias(public.custom_hostname):
            changed = True
        if changed:
            self._wake.set()

    def _on_removed(self, instance_id: int) -> None:
        if instance_id in self._seen:
            self._wake.set()

    async def _work(self) -> None:
        """Applies changes one at a time; events that arrive meanwhile make one more pass."""
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), HOUSEKEEPING_EVERY)
            if self._wake.is_set():
                # A burst (20 instances started back to back) becomes one render, test and reload.
                await asyncio.sleep(COALESCE_SECONDS)
            self._wake.clear()
            if self._closing:
                return
            try:
                await self.apply()
                await asyncio.to_thread(self._rotate_access_log)
            except Exception:
                log.exception('Applying the nginx config failed')

    # ------------------------------------------------------------------ applying

    async def apply(self, *, force: bool = False, reload: bool = True) -> str | None:
        """Render, check and install the config, then reload nginx. Answers None on success,
        else the sentence that was logged (the previous config stays live)."""
        async with self._lock:
            routes = await asyncio.to_thread(self._routes)
            self._seen = {route.id: route for route in routes}
            if routes == self._applied and not force:
                return None
            try:
                text = self._render(routes)
                await asyncio.to_thread(self._install, text)
            except (NginxError, jinja2.TemplateError, OSError) as exc:
                return self._failed(f'nginx config not applied, the previous one stays live: {exc}')
            self._applied = routes
            self.last_error = None
            error = await self._reload() if reload else None
            if error is None and self._live != frozenset(routes):
                self._live = frozenset(routes)
                self.routes_changed.publish(None)  # URLs that depend on a route may change now
            return error

    async def _reload(self) -> str | None:
        if self.master is not None and self.master.pid is None:
            return None  # (re)starting: the master reads the new file when it starts
        if self.master is None and await asyncio.to_thread(self.nginx.master_pid) is None:
            log.warning('No nginx master runs %s yet: it reads the new config when it starts', self.paths.config)
            return None
        try:
            await asyncio.to_thread(self.nginx.reload)
        except NginxError as exc:
            return self._failed(f'nginx config written but not reloaded: {exc}')
        self.reloads += 1
        return None

    def _failed(self, message: str) -> str:
        log.error('%s', message)
        self.last_error = message
        return message

    def _routes(self) -> tuple[Route, ...]:
        routes = []
        for instance in store.list_all(self.engine):
            if instance.id is None or not SLUG_RE.fullmatch(instance.slug):
                log.warning('Instance %r has a slug nginx cannot route; skipped', instance.name)
                continue
            mode = self._path_mode(instance.name, instance.blueprint)
            if instance.executor == 'slurm':
                route = self._job_route(instance, mode)
            else:
                route = Route(instance.id, instance.slug, instance.internal_port, mode)
            routes.append(replace(route, alias=self._alias(instance.custom_hostname)))
        return tuple(routes)

    def _job_route(self, instance: Instance, mode: str) -> Route:
        """A Slurm instance: to its job's gate on its node, with the job's secret (none yet: no route)."""
        assert instance.id is not None
        secret = job_secret(self.settings, instance.name)
        host = instance.node_addr or ''
        if not (secret and TOKEN_RE.fullmatch(secret) and NODE_ADDR_RE.fullmatch(host)):
            return Route(instance.id, instance.slug, None, mode)
        return Route(instance.id, instance.slug, instance.internal_port, mode, upstream_host(host), secret)

    def _alias(self, host: str | None) -> str | None:
        """An instance's custom host name if nginx may serve it: never one of the panel's own
        names (an exact server name would take the panel's requests there)."""
        alias = routable_alias(host)
        if alias is None or alias in panel_hosts(self.settings):
            return None
        return alias

    def _path_mode(self, name: str, blueprint: str) -> str:
        return self.path_modes.mode(name, blueprint) if self.path_modes is not None else 'keep'

    def _render(self, routes: tuple[Route, ...]) -> str:
        paths = self.paths
        for path in (paths.pid, paths.error_log, paths.access_log, paths.temp, paths.empty):
            _check_path(path)
        return self._templates.get_template(TEMPLATE).render(
            template=str(self.settings.nginx_templates / TEMPLATE),
            user=_worker_user(),
            pid_path=paths.pid,
            error_log=paths.error_log,
            access_log=paths.access_log,
            temp_dir=paths.temp,
            empty_dir=paths.empty,
            listen=listen_address(self.settings.host, self.settings.port),
            panel_port=self.panel_port,
            panel_cookies=PANEL_COOKIES,
            api_token=self.api_token,
            proxy_secret=self.proxy_secret,
            instances=routes,
            desktops_dir=self._desktops_dir(),
            https=self._https(),
            **TUNING,
        )

    def _https(self) -> dict[str, Any] | None:
        """The HTTPS listener's values for the template (None: plain HTTP only)."""
        if self.settings.https_port is None or self.certificate is None:
            return None
        return {
            'listen': listen_address(self.settings.host, self.settings.https_port),
            'port': self.settings.https_port,
            'cert': self.certificate.cert,
            'key': self.certificate.key,
            'only': self.settings.https_only,
        }

    def _desktops_dir(self) -> Path:
        """Where persistent desktops' Selkies sockets are (``runtime.desktop.socket_path``)."""
        path = desktop.folder(self.settings, 0).parent
        _check_path(path)
        return path

    def _install(self, text: str) -> None:
        """Write the candidate next to the live file, let nginx judge it, then copy it over the
        live one. Both files always exist (no file appears or vanishes as configs change); a
        refused candidate stays for inspection."""
        candidate = self.paths.folder / 'nginx.conf.candidate'
        write_atomic(candidate, text, PRIVATE)  # 0600: the config may hold the API token
        self.nginx.test(candidate)
        write_atomic(self.paths.config, text, PRIVATE)

    def _rotate_access_log(self) -> None:
        log_file = self.paths.access_log
        with contextlib.suppress(OSError):
            if log_file.stat().st_size > ACCESS_LOG_MAX:
                log_file.replace(log_file.with_name('access.log.1'))
                self.nginx.reopen_logs()

    # ------------------------------------------------------------------ reading

    def slug_for_alias(self, host: str) -> str | None:
        """The slug of the instance nginx serves on the custom host name ``host`` (port ignored)."""
        name = host.lower().rpartition(':')[0] if host.count(':') == 1 else host.lower()
        return next((route.slug for route in self._live if route.alias and route.alias == name), None)

    def serves(self, instance_id: int, slug: str, port: int | None) -> bool:
        """True once nginx routes the instance to this internal port (its URLs work)."""
        return port is not None and any(
            route.id == instance_id and route.slug == slug and route.port == port for route in self._live
        )

    def status(self) -> ProxyStatus:
        running = self.master.pid is not None if self.master is not None else self.nginx.master_pid() is not None
        return ProxyStatus(
            mode=self.mode,
            running=running,
            config=str(self.paths.config),
            last_error=self.last_error,
            reloads=self.reloads,
            routes=len(self._applied or ()),
        )


def _quotable(token: str | None) -> str | None:
    """The API token is written into the config (mode 0600) only when it is a plain token nginx
    can quote; else every bearer request is decided by the panel."""
    return token if token and TOKEN_RE.fullmatch(token) else None


def listen_address(host: str, port: int) -> str:
    if ':' in host and not host.startswith('['):
        return f'[{host}]:{port}'
    return f'{host}:{port}'


def _worker_user() -> str | None:
    """As root, workers run as the panel's user (the default 'nobody' may not reach the data dir)."""
    if os.geteuid() != 0:
        return None
    return f'{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}'


def upstream_host(addr: str) -> str:
    """A node address as nginx's ``server host:port`` wants it: an IPv6 address in brackets."""
    return f'[{addr}]' if ':' in addr else addr


def _check_path(path: Path) -> None:
    if UNSAFE_PATH_CHARS.search(str(path)):
        raise NginxError(
            f'the path {path} holds a character an nginx config cannot carry (a quote, backslash, $ '
            'or line break): choose another AIKORE_DATA_DIR or set AIKORE_NGINX=off'
        )
