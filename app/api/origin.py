"""Where a request comes from: the panel's own pages or another origin, and the client's address.

Cookies ignore ports, and every other port or subdomain of the panel's host is "same site", so
the SameSite=Lax session cookie also rides along with a form that a page there submits to the
panel. A change authenticated by that cookie must therefore prove it comes from the panel's own
origin: its ``Origin`` header (every current browser sends one with POST/PUT/PATCH/DELETE),
else ``Sec-Fetch-Site: same-origin``. A cookie request with neither header is refused too: no
browser that could be tricked into a forgery sends such a request, and a script or curl has the
API token (``Authorization: Bearer``), which is never checked here.

"The panel's own origin" is the host the browser reached it on (its ``Host`` header; through the
panel's nginx that is the public port's host:port) or AIKORE_PUBLIC_HOST.

Forwarding headers (``X-Real-IP``, ``X-Forwarded-Proto``) are believed only when the panel's
own nginx sent the request: nginx adds ``X-AiKore-Proxy: <secret>`` on the locations that pass
to the panel (the secret is derived from the API token, in the config file of mode 0600), and a
client's own copy of that header is replaced by nginx's.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import Scope

from ..services import core as core_module
from ..services.access import auth

STATE_CHANGING = frozenset({'POST', 'PUT', 'PATCH', 'DELETE'})
PROXY_HEADER = b'x-aikore-proxy'
CROSS_ORIGIN = (
    "Refused: a change made with the session cookie must come from the panel's own page (its Origin "
    'or Sec-Fetch-Site header did not show that). Scripts use Authorization: Bearer <token> instead.'
)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get('headers', []):
        if key == name:
            return bytes(value).decode('latin-1')
    return None


def own_origin(scope: Scope) -> bool | None:
    """True when the request shows it comes from the panel's own origin, False when it shows
    another one, None when it carries neither ``Origin`` nor ``Sec-Fetch-Site``."""
    origin = header(scope, b'origin')
    if origin is not None:
        return origin_matches(origin, scope)
    site = header(scope, b'sec-fetch-site')
    if site is not None:
        return site in {'same-origin', 'none'}  # none: the user's own navigation (address bar, bookmark)
    return None


def origin_matches(origin: str, scope: Scope) -> bool:
    """``origin`` names the host and port the request was sent to (or AIKORE_PUBLIC_HOST)."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in {'http', 'https'} or not parts.hostname:
        return False  # includes "null" (sandboxed frames, file: pages)
    try:
        origin_port = parts.port
    except ValueError:
        return False
    allowed = [header(scope, b'host') or '']
    if core_module.started() and core_module.current().settings.public_host:
        allowed.append(core_module.current().settings.public_host or '')
    return any(_same_host(parts.hostname, origin_port, candidate) for candidate in allowed if candidate)


def _same_host(name: str, port: int | None, host_header: str) -> bool:
    """A ``Host`` value without a port is a default port: the Origin must not name one either
    (the scheme in front of the panel, e.g. a TLS terminator, is not known here)."""
    try:
        target = urlsplit(f'//{host_header.strip()}')
        target_port = target.port
    except ValueError:
        return False
    return (target.hostname or '') == name.lower() and target_port == port


def cookie_change_refused(scope: Scope) -> bool:
    """A state-changing request that is not shown to come from the panel's own origin."""
    return scope.get('method', 'GET') in STATE_CHANGING and own_origin(scope) is not True


def from_proxy(scope: Scope) -> bool:
    """The request came through the panel's own nginx (it carries the secret only nginx knows)."""
    if not core_module.started():
        return False
    sent = header(scope, PROXY_HEADER)
    return sent is not None and auth.token_matches(sent, auth.proxy_secret(core_module.current().api_token))


def request_scheme(scope: Scope) -> str:
    """``https`` or ``http``: how the browser reached the panel. The panel's own scheme, or, when
    the panel's nginx sent the request, the first value of its ``X-Forwarded-Proto``."""
    if scope.get('scheme') in {'https', 'wss'}:
        return 'https'
    forwarded = header(scope, b'x-forwarded-proto')
    if forwarded and from_proxy(scope) and forwarded.split(',')[0].strip().lower() == 'https':
        return 'https'
    return 'http'


def client_address(scope: Scope) -> str:
    """The client's address: nginx's ``X-Real-IP`` when nginx sent the request, else the peer."""
    client = scope.get('client')
    peer = str(client[0]) if client else 'unknown'
    forwarded = header(scope, b'x-real-ip')
    return forwarded.strip() if forwarded and from_proxy(scope) else peer
