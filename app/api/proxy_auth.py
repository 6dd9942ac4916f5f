"""``/_aikore/auth``: nginx's ``auth_request`` for the ``/instance/…`` and ``<slug>.<host>``
routes. The decision is ``app.api.deps.authenticated``, the same as for the API and pages.

nginx sets ``X-Original-URI`` (the client's own value never reaches this endpoint through
nginx) so a ``?token=`` on the instance URL counts; the Authorization and Cookie headers
come with the subrequest. 204 lets the request through, 401 refuses it and names the login
page in ``X-AiKore-Login`` (nginx redirects browsers there). A browser that came with a valid
``?token=`` also gets a session cookie for that host, so the page's own requests pass too; it
comes in ``X-AiKore-Set-Cookie``, the one header nginx copies onto the app's response (the
panel's app may set other cookies, e.g. NiceGUI's storage, which must never reach an app).
On a subdomain route that session is an instance session: valid on that host only, and only
here (``app.services.access.sessions``).
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Request, Response

from ..services import core as core_module
from ..services.access.sessions import HANDOFF_PATH, SESSION_COOKIE
from .deps import authenticated, new_session_cookie, request_cookie, request_host
from .origin import request_scheme


async def check(request: Request) -> Response:
    original = request.headers.get('x-original-uri') or '/'
    query = urlsplit(original).query
    scope = {**request.scope, 'query_string': query.encode('latin-1', errors='replace')}
    if not authenticated(scope, instance_route=True):
        return Response(status_code=401, headers={'X-AiKore-Login': login_url(request, original)})
    response = Response(status_code=204)
    if _wants_session_cookie(request, query):
        # In a header of its own: nginx copies this one, never the Set-Cookie of the subrequest.
        response.headers['X-AiKore-Set-Cookie'] = await new_session_cookie(request, _instance_of(request))
    return response


def _instance_of(request: Request) -> str | None:
    """On a subdomain route, the instance whose host this is (its session is an instance one)."""
    if request.headers.get('x-aikore-route') != 'subdomain':
        return None
    return request_host(request.scope).partition('.')[0]


def _wants_session_cookie(request: Request, query: str) -> bool:
    """A browser page load that passed with ?token= and holds no valid session yet."""
    if 'token' not in parse_qs(query) or 'text/html' not in request.headers.get('accept', ''):
        return False
    cookie = request_cookie(request.scope, SESSION_COOKIE)
    return not core_module.current().sessions.valid(cookie, request_host(request.scope), instance_route=True)


def login_url(request: Request, original: str) -> str:
    """Path routes: the panel's login page, back to the same URL after. Subdomain routes: the
    login page on the parent host, back to the subdomain URL after (through a one-time
    hand-off that gives the subdomain its own cookie: ``app.pages.login.subdomain_handoff``)."""
    if request.headers.get('x-aikore-route') != 'subdomain':
        return f'/login?next={quote(original, safe="")}'
    host = request.headers.get('host', '')
    scheme = request_scheme(request.scope)
    back = quote(f'{scheme}://{host}{original}', safe='')
    core = core_module.current()
    proxy = core.network.proxy
    if proxy is not None and proxy.slug_for_alias(host):
        # A custom host name is no subdomain of the panel's: the login page is on the panel's
        # public host (AIKORE_PUBLIC_HOST); without one, the hand-off page explains.
        public = core.settings.public_host
        return f'{scheme}://{public}/login?next={back}' if public else f'{HANDOFF_PATH}?next={back}'
    parent = host.partition('.')[2] or host
    return f'{scheme}://{parent}/login?next={back}'
