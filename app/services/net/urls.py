"""The Open and View URLs of an instance (DESIGN "Networking", API.md ``urls``).

``entry`` is how the user reaches the panel: AIKORE_PUBLIC_HOST, else the Host of their
request (``host`` or ``host:port``). Open follows the access pattern: ``port`` ->
``http://<host>:<public_port>/`` (only while the port is mapped), ``subdomain`` ->
``<scheme>://<slug>.<host>[:<entry port>]/``, ``path`` -> ``<scheme>://<entry>/instance/<slug>/``;
the last two need the proxy, and a subdomain of a bare IP address cannot exist. View is
what the dashboard embeds: the same-origin path URL when the proxy runs, else the port URL.
Both are null unless the instance is ``started``. A persistent instance whose desktop is up
(``persistent_display`` set) opens and views its desktop, ``/desktop/<slug>/``: on the
instance's own origin for ``subdomain``, else on the entry's.
"""

from __future__ import annotations

import ipaddress

from ...lifecycle import READY
from ...models import AccessPattern, InstancePublic, InstanceUrls


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


def instance_urls(instance: InstancePublic, entry: str | None, proxy_on: bool, scheme: str = 'http') -> InstanceUrls:
    if instance.status not in READY or not entry:
        return InstanceUrls()
    host, entry_port = split_entry(entry.strip().lower())
    by_port = f'http://{host}:{instance.public_port}/' if instance.active and instance.public_port else None
    path = f'/instance/{instance.slug}/'
    opened: str | None = None
    if instance.access_pattern == AccessPattern.PORT:
        opened = by_port
    elif proxy_on and instance.access_pattern == AccessPattern.PATH:
        opened = f'{scheme}://{entry.strip().lower()}{path}'
    elif proxy_on and instance.access_pattern == AccessPattern.SUBDOMAIN and not is_ip(host):
        opened = f'{scheme}://{instance.slug}.{host}' + (f':{entry_port}' if entry_port else '') + '/'
    if proxy_on and instance.persistent and instance.persistent_display is not None:
        return desktop_urls(instance, entry.strip().lower(), host, entry_port, scheme)
    return InstanceUrls(open=opened, view=path if proxy_on else by_port)


def desktop_urls(instance: InstancePublic, entry: str, host: str, entry_port: str | None, scheme: str) -> InstanceUrls:
    """Open and View of a persistent instance: its streamed desktop (Selkies' client needs a
    secure context: https, or http on localhost). View stays on the panel's origin: Selkies'
    page allows only same-origin framing (``frame-ancestors 'self'``)."""
    path = f'/desktop/{instance.slug}/'
    if instance.access_pattern == AccessPattern.SUBDOMAIN and not is_ip(host):
        origin = f'{scheme}://{instance.slug}.{host}' + (f':{entry_port}' if entry_port else '')
        return InstanceUrls(open=origin + path, view=path)
    return InstanceUrls(open=f'{scheme}://{entry}{path}', view=path)


def why_unreachable(instance: InstancePublic, *, opening: bool = True) -> str:
    """Why Open (``opening``) or View has no URL for this instance now."""
    if not instance.status.is_running:
        return 'Start the instance first'
    if instance.status not in READY:
        return 'Not ready yet'
    if opening and instance.access_pattern == AccessPattern.SUBDOMAIN:
        return 'A subdomain needs the panel reached by a host name, not an IP address (or set AIKORE_PUBLIC_HOST)'
    if instance.access_pattern == AccessPattern.PORT and not instance.active:
        return f'Activate its public port {instance.public_port} first'
    return 'Not reachable yet: nginx is taking the new route'
