"""The session gate in front of every page and websocket of the panel.

Open without a session: the login routes, /api (which has its own token/session check),
the proxy's auth endpoint, and NiceGUI's static code. Everything else needs a session (or
the API token): a browser is sent to the login page, anything else gets 401, and a
websocket is refused — also when its Origin is another site.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode

from nicegui import __version__ as nicegui_version
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..api.deps import authenticated, open_session, request_cookie, request_host, token_authenticated
from ..api.origin import CROSS_ORIGIN, cookie_change_refused, own_origin
from ..api.system import DOCS_SCRIPT, SWAGGER_ASSETS
from ..services import core as core_module
from ..services.access.sessions import SESSION_COOKIE
from .login import REFUSED_LINK, safe_next

# /metrics checks the token itself and answers 401 (a scraper cannot follow a login redirect).
OPEN_EXACT = {'/login', '/logout', '/favicon.ico', '/_aikore/auth', '/_aikore/session', '/metrics', DOCS_SCRIPT}
OPEN_PREFIXES = ('/api/', f'/_nicegui/{nicegui_version}/', f'{SWAGGER_ASSETS}/')


def is_open(path: str) -> bool:
    return path in OPEN_EXACT or path == '/api' or path.startswith(OPEN_PREFIXES)


class SessionGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] not in {'http', 'websocket'} or is_open(scope['path']):
            await self.app(scope, receive, send)
            return
        if scope['type'] == 'websocket':
            if authenticated(scope) and own_origin(scope) is not False:
                await self.app(scope, receive, send)
            else:
                await send({'type': 'websocket.close', 'code': 1008})
            return
        if authenticated(scope):
            if cross_origin(scope):
                await JSONResponse({'detail': CROSS_ORIGIN}, status_code=403)(scope, receive, send)
                return
            if token_in_address(scope):  # the token leaves the address bar (and the history)
                redirect = RedirectResponse(without_token(scope), status_code=303)
                opened = await open_session(Request(scope), redirect) if needs_session(scope) else redirect
                await opened(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope.get('method') == 'GET' and not scope['path'].startswith('/_nicegui'):
            query = scope.get('query_string', b'').decode('latin-1')
            target = scope['path'] + (f'?{query}' if query else '')
            refused = ''
            if has_token(scope):  # a wrong token link: to the login page (which says so), the token not kept
                target, refused = without_token(scope), f'&refused={REFUSED_LINK}'
            response: Response = RedirectResponse(f'/login?next={quote(target)}{refused}', status_code=303)
        else:
            response = JSONResponse({'detail': 'Log in first'}, status_code=401)
        await response(scope, receive, send)


def cross_origin(scope: Scope) -> bool:
    """The same rule for every transport (pages, uploads, socket.io long-polling and its
    websocket): a request that names another origin is refused, and a change made with the
    session cookie must show the panel's own origin."""
    if own_origin(scope) is False:
        return True
    return not token_authenticated(scope) and cookie_change_refused(scope)


def token_in_address(scope: Scope) -> bool:
    """A browser opening a page with ``?token=`` in its address: the token is taken out of the
    address (with a session when the browser has none: the page's websocket cannot carry it)."""
    if scope['type'] != 'http' or scope.get('method') != 'GET' or scope['path'].startswith('/_nicegui'):
        return False
    headers = dict(scope.get('headers') or [])
    return b'text/html' in headers.get(b'accept', b'') and has_token(scope)


def has_token(scope: Scope) -> bool:
    query = parse_qsl(scope.get('query_string', b'').decode('latin-1'), keep_blank_values=True)
    return any(key == 'token' for key, _ in query)


def needs_session(scope: Scope) -> bool:
    """The address's token is right and the browser has no session yet."""
    if not token_authenticated(scope):
        return False
    return not core_module.current().sessions.valid(request_cookie(scope, SESSION_COOKIE), request_host(scope))


def without_token(scope: Scope) -> str:
    query = [
        (key, value)
        for key, value in parse_qsl(scope.get('query_string', b'').decode('latin-1'), keep_blank_values=True)
        if key != 'token'
    ]
    return safe_next(scope['path'] + (f'?{urlencode(query)}' if query else ''))  # never another site
