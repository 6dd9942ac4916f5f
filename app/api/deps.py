"""Shared pieces of the API: the services handle, body limits, token auth middleware."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import ParamSpec, TypeVar
from urllib.parse import parse_qs

from fastapi import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..services import core as core_module
from ..services.access import auth
from ..services.access.sessions import SESSION_COOKIE, SESSION_DAYS
from ..services.catalog.validation import MAX_SCRIPT_BYTES
from ..services.core import Core
from ..services.errors import TooLarge, UnsupportedMedia
from .origin import CROSS_ORIGIN, cookie_change_refused, request_scheme

OPEN_PATHS = {'/health'}
BODY_METHODS = frozenset({'POST', 'PUT', 'PATCH'})
TEXT_BODY = '_aikore_text_body'
P = ParamSpec('P')
R = TypeVar('R')


def get_core() -> Core:
    return core_module.current()


async def read_limited_body(request: Request, limit: int = MAX_SCRIPT_BYTES) -> bytes:
    """The request body, refused with 413 past ``limit`` without reading it all into memory."""
    declared = request.headers.get('content-length')
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f'Body is {declared} bytes; the limit is {limit} bytes')
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise TooLarge(f'Body is larger than the limit of {limit} bytes')
    return bytes(body)


def request_token(scope: Scope) -> str | None:
    """The bearer token of a request: ``Authorization: Bearer …`` or ``?token=…``."""
    for name, value in scope.get('headers', []):
        if name == b'authorization':
            scheme, _, token = value.decode('latin-1').partition(' ')
            if scheme.lower() == 'bearer':
                return token.strip()
    query = parse_qs(scope.get('query_string', b'').decode('latin-1'))
    return query.get('token', [None])[0]


def authenticated(scope: Scope, *, instance_route: bool = False) -> bool:
    """The one decision "may this request act on the panel?", for the API, the proxy's
    auth_request and the pages: the API token (header or ?token=) or a logged-in browser
    session cookie issued for this request's Host passes. An instance-subdomain session passes
    only the proxy's auth_request (``instance_route``), never the panel's pages or API. (A change
    made with the cookie must also come from the panel's own origin: ``app.api.origin``.)"""
    if not core_module.started():
        return False
    if token_authenticated(scope):
        return True
    cookie = request_cookie(scope, SESSION_COOKIE)
    return core_module.current().sessions.valid(cookie, request_host(scope), instance_route=instance_route)


def token_authenticated(scope: Scope) -> bool:
    """The request carries the API token (never sent by a browser on its own: no forgery)."""
    return core_module.started() and auth.token_matches(request_token(scope), core_module.current().api_token)


def text_body(endpoint: Callable[P, R]) -> Callable[P, R]:
    """Marks a route whose body is text (a script), not JSON: ``json_body_only`` lets it pass."""
    setattr(endpoint, TEXT_BODY, True)
    return endpoint


async def json_body_only(request: Request) -> None:
    """A body declared as anything but JSON on a JSON route is refused with 415 before the route
    runs (an HTML form's urlencoded, multipart or text/plain body never reaches a service)."""
    if request.method not in BODY_METHODS:
        return
    declared = request.headers.get('content-type')
    if declared is None or getattr(getattr(request.scope.get('route'), 'endpoint', None), TEXT_BODY, False):
        return
    media = declared.partition(';')[0].strip().lower()
    if media != 'application/json' and not (media.startswith('application/') and media.endswith('+json')):
        raise UnsupportedMedia(f'This route takes a JSON body (Content-Type: application/json), not {media or "?"}')


def request_host(scope: Scope) -> str:
    """The origin the browser addressed (``Host``: name and port; nginx passes it on)."""
    for name, value in scope.get('headers', []):
        if name == b'host':
            return value.decode('latin-1').strip().lower()
    return ''


def over_https(scope: Scope) -> bool:
    """The browser came over HTTPS (``origin.request_scheme``: nginx's word only from nginx)."""
    return request_scheme(scope) == 'https'


def request_cookie(scope: Scope, name: str) -> str | None:
    for header, value in scope.get('headers', []):
        if header == b'cookie':
            cookies = SimpleCookie()
            try:
                cookies.load(value.decode('latin-1'))
            except CookieError:
                continue
            if name in cookies:
                return cookies[name].value
    return None


class TokenAuthMiddleware:
    """Every API request but the open ones needs the token; checked before any routing, so
    unknown routes, wrong methods and invalid bodies answer 401 too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] not in {'http', 'websocket'}:
            await self.app(scope, receive, send)
            return
        path = scope['path']
        root = scope.get('root_path', '')
        relative = path[len(root) :] if root and path.startswith(root) else path
        if relative in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not core_module.ready():
            await JSONResponse({'detail': 'AiKore is starting; try again in a moment'}, 503)(scope, receive, send)
            return
        if not authenticated(scope):
            if scope['type'] == 'websocket':
                await send({'type': 'websocket.close', 'code': 1008, 'reason': 'authentication required'})
                return
            await unauthorized()(scope, receive, send)
            return
        if not token_authenticated(scope) and cookie_change_refused(scope):
            await JSONResponse({'detail': CROSS_ORIGIN}, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def unauthorized() -> JSONResponse:
    """The API's 401: no valid token or session."""
    return JSONResponse(
        {'detail': 'Authentication required: send Authorization: Bearer <token> (or ?token=<token>)'},
        status_code=401,
        headers={'WWW-Authenticate': 'Bearer'},
    )


async def open_session(request: Request, response: Response, instance: str | None = None) -> Response:
    """A new login session for the origin ``request`` addressed, as a cookie on ``response``
    (the panel's, or with ``instance`` an instance session for that instance's subdomain)."""
    response.headers.append('set-cookie', await new_session_cookie(request, instance))
    return response


async def new_session_cookie(request: Request, instance: str | None = None) -> str:
    """A ``Set-Cookie`` value with a new session bound to the request's Host: host-only (no
    Domain), HttpOnly, SameSite=Lax, and Secure when the browser came over HTTPS."""
    sessions = core_module.current().sessions
    value = await asyncio.to_thread(sessions.open, request_host(request.scope), instance)  # writes sessions.json
    cookie = f'{SESSION_COOKIE}={value}; HttpOnly; Max-Age={SESSION_DAYS * 86400}; Path=/; SameSite=lax'
    return cookie + '; Secure' if over_https(request.scope) else cookie
