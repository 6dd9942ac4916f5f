"""Login and logout: plain HTML forms (no websocket needed before a session exists)."""

from __future__ import annotations

import asyncio
import html
import logging
import math
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from nicegui import app

from ..api.deps import authenticated, open_session, request_cookie, request_host
from ..api.origin import CROSS_ORIGIN, client_address, own_origin, request_scheme
from ..services import core as core_module
from ..services.access.sessions import HANDOFF_PATH, SESSION_COOKIE
from ..services.files import disk_full
from ..services.net.urls import APP_PATH, app_origin

log = logging.getLogger(__name__)
DISK_FULL_LOGIN = 'The disk of the data directory is full: no session can be opened. Free some space and try again.'
# The gate's word for "a link's token was wrong" (in the login page's address), and what the page says.
REFUSED_LINK = 'link'
WRONG_LINK = 'The token in that link is not valid (it may have been replaced): log in with the password.'

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>AiKore — log in</title>
<style>
body {{ margin: 0; min-height: 100vh; display: grid; place-items: center; background: #121212;
       color: #e5e7eb; font-family: system-ui, sans-serif; }}
form {{ background: #1e1e1e; padding: 2rem; border-radius: 12px; width: min(90vw, 340px);
       box-shadow: 0 8px 30px #0008; }}
h1 {{ margin: 0 0 1.2rem; font-size: 1.6rem; }}
input[type=password] {{ width: 100%; box-sizing: border-box; padding: .7rem; border-radius: 8px;
       border: 1px solid #444; background: #111; color: inherit; font-size: 1rem; }}
button {{ margin-top: 1rem; width: 100%; padding: .7rem; border: 0; border-radius: 8px;
       background: #5898d4; color: white; font-size: 1rem; cursor: pointer; }}
.error {{ color: #f87171; margin: 0 0 1rem; }}
</style></head>
<body><form method="post" action="/login">
<h1>AiKore</h1>
{error}
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{next}">
<button type="submit">Log in</button>
</form></body></html>
"""


def safe_next(target: str | None) -> str:
    """Only same-site paths: never an open redirect."""
    if not target or not target.startswith('/') or target.startswith('//') or '\\' in target:
        return '/'
    return target


def client_key(request: Request) -> str:
    """The login throttle's key: the client's address (nginx's X-Real-IP only when nginx sent it)."""
    return client_address(request.scope)


def login_form(next_path: str, error: str = '', status_code: int = 200) -> HTMLResponse:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ''
    kept = next_path if next_path.startswith(('http://', 'https://')) else safe_next(next_path)  # checked on use
    return HTMLResponse(PAGE.format(error=shown, next=html.escape(kept)), status_code=status_code)


async def subdomain_handoff(request: Request, target: str) -> str | None:
    """Where a logged-in browser goes for ``target`` on an instance's subdomain route.

    ``target`` must be an absolute URL on ``<slug>.<the host this page was reached on>`` (same
    port) where ``<slug>`` is an instance's: the panel's cookie does not reach that host, so the
    browser carries a one-time token to ``/_aikore/session`` there, which nginx hands to the
    panel, and the panel sets that host's own session cookie. None for any other target: never
    an open redirect, and a token never goes to a host that is not an instance's route.
    """
    parts = urlsplit(target)
    netloc = parts.netloc.lower()
    if parts.scheme not in {'http', 'https'} or not await _instance_host(request, netloc):
        return None
    core = core_module.current()
    path = safe_next(urlunsplit(('', '', parts.path or '/', parts.query, '')))
    token = core.sessions.new_handoff_token(netloc)
    return f'{parts.scheme}://{netloc}{HANDOFF_PATH}?once={token}&next={quote(path, safe="")}'


async def _instance_host(request: Request, netloc: str) -> bool:
    """``netloc`` is an instance's own origin: ``<slug>.<the panel's host>`` for an instance's
    slug, or the custom host name nginx serves an instance on (any port: it may sit behind
    the user's own proxy)."""
    core = core_module.current()
    proxy = core.network.proxy
    if proxy is not None and proxy.slug_for_alias(netloc):
        return True
    panel_host = request.headers.get('host', '').lower()
    if not panel_host or not netloc.endswith(f'.{panel_host}'):
        return False
    return await core.instances.find_by_slug(netloc[: -len(panel_host) - 1]) is not None


async def destination(request: Request, next_target: str) -> str:
    return await subdomain_handoff(request, next_target) or safe_next(next_target)


async def logged_in(request: Request, next_target: str) -> Response:
    target = await destination(request, next_target)
    try:
        if request.method == 'POST' and not target.startswith('/'):
            # The CSP's form-action 'self' also covers the redirects that follow a form post: a hop
            # to an instance's subdomain is made by the next page instead (a new navigation).
            return await open_session(request, continue_page(target))
        return await open_session(request, RedirectResponse(target, status_code=303))
    except OSError as exc:
        if not disk_full(exc):
            raise
        log.warning('No session could be opened: the disk of the data directory is full')
        return login_form(next_target, DISK_FULL_LOGIN, 507)


def continue_page(target: str) -> HTMLResponse:
    shown = html.escape(target)
    return HTMLResponse(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>AiKore</title>'
        f'<meta http-equiv="refresh" content="0;url={shown}"></head>'
        f'<body><p>Logged in. <a href="{shown}">Continue</a>.</p></body></html>'
    )


@app.get('/login', include_in_schema=False)
async def login_page(request: Request, next: str = '/', once: str | None = None, refused: str = '') -> Response:
    """``refused``: why the gate sent the browser here (``REFUSED_LINK``: a link's wrong token)."""
    sessions = core_module.current().sessions
    if once is not None:
        if sessions.redeem_login_link(once):
            return await logged_in(request, next)
        return login_form(next, 'This login link was used already or has expired: log in with the password.', 401)
    if authenticated(request.scope):
        return RedirectResponse(await destination(request, next), status_code=303)
    return login_form(next, WRONG_LINK if refused == REFUSED_LINK else '')


@app.post('/login', include_in_schema=False)
async def login_submit(request: Request, password: str = Form(''), next: str = Form('/')) -> Response:
    sessions = core_module.current().sessions
    client = client_key(request)
    wait = sessions.throttle.retry_after(client)
    if wait > 0:
        return login_form(next, f'Too many failed logins: try again in {math.ceil(wait)} s.', 429)
    if not await asyncio.to_thread(sessions.password_matches, password):
        sessions.throttle.failed(client)
        return login_form(next, 'Wrong password.', 401)
    sessions.throttle.succeeded(client)
    return await logged_in(request, next)


@app.get(APP_PATH + '/{slug}/{rest:path}', include_in_schema=False)
async def app_handoff(request: Request, slug: str, rest: str = '') -> Response:
    """The way from the panel's origin into an app's own one (urls.APP_PATH): a logged-in
    browser asking for ``/instance/<slug>/…`` on the panel's origin (nginx sends browsers here),
    or following Open/View, is sent to the same path on ``<slug>.<host>`` with a one-time token
    that gives that origin its own session. An app page thus never runs in the panel's origin."""
    core = core_module.current()
    instance = await core.instances.find_by_slug(slug)
    if instance is None or not core.network.proxy_on:
        return _app_page(f'No instance is routed at {html.escape(slug)!r}.', 404)
    scheme = request_scheme(request.scope)
    origin = app_origin(slug, core.settings.public_host or request.headers.get('host', ''), scheme)
    if origin is None:
        return _app_page(
            f'{html.escape(instance.name)} runs in its own origin, {slug}.&lt;host&gt;, '
            'and an IP address has no subdomains: '
            'reach AiKore by a host name (or on localhost), or set AIKORE_PUBLIC_HOST to a name whose '
            'subdomains resolve here. Its public port works too, once activated.',
            409,
        )
    path = '/' + rest
    prefix = f'/instance/{slug}'
    if core.network.path_modes.mode(instance.name, instance.blueprint) == 'none' and path.startswith(prefix + '/'):
        path = path[len(prefix) :]  # aikore.path = none: the app only works at its origin's root
    query = urlencode([(key, value) for key, value in parse_qsl(request.url.query, True) if key != 'token'])
    path = safe_next(path + (f'?{query}' if query else ''))
    token = core.sessions.new_handoff_token(urlsplit(origin).netloc)
    return RedirectResponse(f'{origin}{HANDOFF_PATH}?once={token}&next={quote(path, safe="")}', status_code=302)


def _app_page(sentence: str, status_code: int) -> HTMLResponse:
    """``sentence`` is HTML made by the panel (anything of the user's in it is escaped)."""
    head = '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>AiKore</title></head>'
    body = f'{head}<body><p>{sentence}</p></body></html>'
    return HTMLResponse(body, status_code=status_code)


@app.get(HANDOFF_PATH, include_in_schema=False)
async def session_handoff(request: Request, once: str = '', next: str = '/') -> Response:
    """Reached on an instance's own origin (nginx passes this one path to the panel). The token
    works only on the host it was made for, and the session it opens is an instance session:
    valid on that host, for reaching that instance through nginx, never the panel's pages or API."""
    host = request_host(request.scope)
    if core_module.current().sessions.redeem_handoff(once, host):
        redirect = RedirectResponse(safe_next(next), status_code=303)
        response = await open_session(request, redirect, instance=host.partition('.')[0])
        return _frameable(request, response)
    if not once:  # an instance's custom host with no AIKORE_PUBLIC_HOST to send a login to
        sentence = '<p>Log in to the AiKore panel, then open this instance from there (Open or View).</p>'
    else:
        sentence = '<p>This sign-in link was used already or has expired. <a href="/">Try again</a>.</p>'
    return HTMLResponse(f'<!DOCTYPE html><title>AiKore</title>{sentence}', status_code=401)


def _frameable(request: Request, response: Response) -> Response:
    """The dashboard's View frames the app's origin. ``<host>`` and ``<slug>.<host>`` are the same
    site for a registrable name (the Lax cookie works in the frame), but ``localhost`` and
    ``<slug>.localhost`` are not, and a Lax cookie is neither set nor sent in a cross-site frame.
    There (a secure context even on http) the cookie is ``SameSite=None; Secure; Partitioned``:
    kept apart per top-level site, so only pages of the same top-level site (the dashboard) see it."""
    host = (request.headers.get('host') or '').rpartition(':')[0] or request.headers.get('host') or ''
    scheme = request_scheme(request.scope)
    if not (host.lower().endswith('.localhost') or scheme == 'https'):
        return response
    headers = response.raw_headers
    for index, (key, value) in enumerate(headers):
        if key == b'set-cookie' and value.startswith(SESSION_COOKIE.encode() + b'='):
            fixed = value.replace(b'SameSite=lax', b'SameSite=none').replace(b'samesite=lax', b'SameSite=none')
            headers[index] = (key, fixed + b'; Secure; Partitioned')
    return response


@app.get('/logout', include_in_schema=False)
@app.post('/logout', include_in_schema=False)
async def logout(request: Request) -> Response:
    """A page of another origin may not log the user out (a POST must show the panel's own
    origin; a GET only must not show another one: a typed address or a bookmark is fine)."""
    shown = own_origin(request.scope)
    if shown is False or (shown is None and request.method == 'POST'):
        return JSONResponse({'detail': CROSS_ORIGIN}, status_code=403)
    core_module.current().sessions.close(request_cookie(request.scope, SESSION_COOKIE))
    response = RedirectResponse('/login', status_code=303)
    response.delete_cookie(SESSION_COOKIE, path='/')
    return response
