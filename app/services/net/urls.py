"""The Open and View URLs of an instance (DESIGN "Networking" and "Origins", API.md ``urls``).

``entry`` is how the user reaches the panel: AIKORE_PUBLIC_HOST, else the Host of their
request (``host`` or ``host:port``). An app never runs in the panel's origin: each one has its
own, ``<slug>.<host>`` on the panel's port (``<slug>.localhost`` when the panel is reached on a
loopback address; none when it is reached on another IP address). Browsers that ask for
``/instance/<slug>/…`` on the panel's origin are sent to the same path on the app's origin
through :data:`APP_PATH`, which hands the user's session over (``app.pages.login``).

Open follows the access pattern: ``port`` -> ``http://<host>:<public_port>/`` (only while the
port is mapped), ``subdomain`` -> ``<scheme>://<slug>.<host>[:<entry port>]/``, ``path`` ->
``<scheme>://<entry>/instance/<slug>/``; an app whose path mode is ``none`` is never offered
the path: it opens at its origin's root. View (what the dashboard embeds) is, in this order,
the path route in the app's origin, the app origin's root (``none``), the public port (not
from an HTTPS dashboard: an http frame is mixed content), else nothing and a reason. Both are
null unless the instance is ``started``. A persistent instance whose desktop is up
(``persistent_display`` set) opens and views its desktop, ``/desktop/<slug>/`` (Selkies' own
client: the app reaches the user's browser only as video): on the instance's own origin for
``subdomain``, else on the entry's; View frames it from the panel's origin (Selkies allows only
same-origin framing).
"""

from __future__ import annotations

import ipaddress
import socket

from ...config import Settings
from ...lifecycle import READY
from ...models import HOSTNAME_RE, AccessPattern, InstancePublic, InstanceUrls

APP_PATH = '/_aikore/app'  # /_aikore/app/<slug>/<path on the app's origin>: the panel hands the session over
NOT_STARTED = 'Start the instance first'  # why an instance that does not run has no URL


def split_entry(entry: str) -> tuple[str, str | None]:
    """``'host:9000'`` -> ``('host', '9000')``; ``'[::1]:9000'`` -> ``('[::1]', '9000')``."""
    if entry.startswith('['):
        host, _, rest = entry.partition(']')
        port = rest[1:] if rest.startswith(':') else None
        return host + ']', port or None
    host, sep, port = entry.rpartition(':')
    if not sep or not port.isdigit():
        return entry, None
    return host, port


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip('[]'))
    except ValueError:
        return False
    return True


def routable_alias(host: str | None) -> str | None:
    """A custom host name nginx may serve (a plain DNS name, not an address), else None."""
    if not host or len(host) > 253 or not HOSTNAME_RE.fullmatch(host) or is_ip(host):
        return None
    return host.lower()


def panel_hosts(settings: Settings) -> set[str]:
    """The names the panel itself may be reached on: never an instance's custom host name (an
    exact nginx server name would take the panel's requests there)."""
    names = {'localhost', socket.gethostname().lower(), settings.host.lower()}
    if settings.public_host:
        names.add(split_entry(settings.public_host.lower())[0])
    return names


def app_host(slug: str, host: str) -> str | None:
    """The host name of an instance's own origin for a panel reached at ``host``: ``<slug>.<host>``;
    ``<slug>.localhost`` for a loopback address (browsers resolve it to loopback themselves);
    None for any other IP address, which has no subdomains."""
    if not is_ip(host):
        return f'{slug}.{host}'
    if ipaddress.ip_address(host.strip('[]')).is_loopback:
        return f'{slug}.localhost'
    return None


def app_origin(slug: str, entry: str, scheme: str = 'http') -> str | None:
    """``<scheme>://<app host>[:<entry port>]``, or None when the app can have no origin of its own."""
    host, port = split_entry(entry.strip().lower())
    name = app_host(slug, host)
    return None if name is None else f'{scheme}://{name}' + (f':{port}' if port else '')


def instance_urls(instance: InstancePublic, entry: str | None, proxy_on: bool, scheme: str = 'http') -> InstanceUrls:
    if instance.status not in READY or not entry:
        return InstanceUrls()
    entry = entry.strip().lower()
    host, entry_port = split_entry(entry)
    by_port = f'http://{host}:{instance.public_port}/' if instance.active and instance.public_port else None
    if proxy_on and instance.persistent and instance.persistent_display is not None:
        return desktop_urls(instance, entry, host, entry_port, scheme)
    origin = app_origin(instance.slug, entry, scheme) if proxy_on else None
    if origin is None:
        return InstanceUrls(
            open=by_port if instance.access_pattern == AccessPattern.PORT else None,
            view=by_port if scheme == 'http' else None,
        )
    rooted = instance.path_mode == 'none'
    through_panel = f'{scheme}://{entry}{APP_PATH}/{instance.slug}/'  # the app origin's root, session handed over
    opened: str | None = by_port
    if instance.access_pattern == AccessPattern.PATH:
        opened = through_panel if rooted else f'{scheme}://{entry}/instance/{instance.slug}/'
    elif instance.access_pattern == AccessPattern.SUBDOMAIN:
        opened = through_panel if is_ip(host) else f'{origin}/'
    view = f'{APP_PATH}/{instance.slug}/' if rooted else f'/instance/{instance.slug}/'
    return InstanceUrls(open=opened, view=view)


def desktop_urls(instance: InstancePublic, entry: str, host: str, entry_port: str | None, scheme: str) -> InstanceUrls:
    """Open and View of a persistent instance: its streamed desktop (Selkies' client needs a
    secure context: https, or http on localhost). View stays on the panel's origin: Selkies'
    page allows only same-origin framing (``frame-ancestors 'self'``)."""
    path = f'/desktop/{instance.slug}/'
    if instance.access_pattern == AccessPattern.SUBDOMAIN and not is_ip(host):
        origin = f'{scheme}://{instance.slug}.{host}' + (f':{entry_port}' if entry_port else '')
        return InstanceUrls(open=origin + path, view=path)
    return InstanceUrls(open=f'{scheme}://{entry}{path}', view=path)


def why_unreachable(instance: InstancePublic, *, opening: bool = True, proxy_on: bool = True) -> str:
    """Why Open (``opening``) or View has no URL for this instance now; ``proxy_on``: whether
    the panel has a reverse proxy (without one, an app is reached on its public port only)."""
    if not instance.status.is_running:
        return NOT_STARTED
    if instance.status not in READY:
        return 'Not ready yet'
    if not proxy_on:
        return _without_proxy(instance)
    if opening and instance.access_pattern == AccessPattern.PORT and not instance.active:
        return f'Activate its public port {instance.public_port} first'
    if opening and instance.access_pattern == AccessPattern.SUBDOMAIN:
        return (
            'A subdomain needs the panel reached by a host name or localhost, not an IP address '
            '(or set AIKORE_PUBLIC_HOST)'
        )
    return (
        'Not reachable yet: nginx is taking the new route, or the panel was reached by an IP address '
        '(each app runs in its own origin, <slug>.<host>: use a host name, localhost or AIKORE_PUBLIC_HOST, '
        'or activate its public port)'
    )


def _without_proxy(instance: InstancePublic) -> str:
    """With ``AIKORE_NGINX=off`` an app is reached on its active public port, over http, only."""
    if instance.public_port and not instance.active:
        return f'Activate its public port {instance.public_port} first'
    return (
        'Not reachable: without the reverse proxy (AIKORE_NGINX=off) an app is reached only on its active '
        'public port, over http'
    )
