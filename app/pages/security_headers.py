"""Security headers on every response of the panel (a second line behind escaping everything).

A Content-Security-Policy as strict as NiceGUI allows: scripts only from the panel itself,
plus the inline ``<script>`` tags of the served page, which get a fresh nonce per response;
``'unsafe-eval'`` because NiceGUI compiles Vue templates and runs ``run_javascript`` code in the
browser. What this stops: scripts from any other origin, inline event handlers, ``javascript:``
URLs, and scripts added to the page after it loaded. What it cannot tell apart is a ``<script>``
tag written into the HTML itself (it would get the nonce too): that is escaping's job, the
first line (NiceGUI escapes element data; our own pages escape what they show). Pages of the panel may be
framed only by the panel itself (CSP ``frame-ancestors`` and X-Frame-Options for old browsers).
"""

from __future__ import annotations

import re
import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCRIPT_TAG = re.compile(rb'<script(?=[\s>])', re.IGNORECASE)
NONCE_BYTES = 18


def content_security_policy(nonce: str) -> str:
    return '; '.join(
        (
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}' 'unsafe-eval'",
            "style-src 'self' 'unsafe-inline'",  # Quasar sets styles at run time; the utility classes are inline
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",  # the page's own websocket and fetches (same host and port)
            "media-src 'self' data: blob:",
            "worker-src 'self' blob:",
            'frame-src http: https:',  # View embeds an instance, served from an origin of its own
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'self'",
        )
    )


NO_INLINE_SCRIPTS = content_security_policy('').replace(" 'nonce-'", '')
STATIC_HEADERS = {
    'X-Frame-Options': 'SAMEORIGIN',
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'same-origin',  # a ?token= in an address never leaves the panel in a Referer
    'Cross-Origin-Opener-Policy': 'same-origin',
}


class SecurityHeaders:
    """ASGI middleware: adds the headers above to every HTTP response and nonces the inline
    scripts of HTML pages (the body of an HTML response is buffered to do so: pages are small)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        nonce = ''
        start: Message | None = None
        body = bytearray()

        async def send_with_headers(message: Message) -> None:
            nonlocal start, nonce
            if message['type'] == 'http.response.start':
                headers = MutableHeaders(scope=message)
                for name, value in STATIC_HEADERS.items():
                    headers.setdefault(name, value)
                if headers.get('content-type', '').startswith('text/html'):
                    nonce = secrets.token_urlsafe(NONCE_BYTES)  # a page: its inline scripts get this one
                    headers['Content-Security-Policy'] = content_security_policy(nonce)
                    start = message  # held until the whole page is here
                    return
                headers['Content-Security-Policy'] = NO_INLINE_SCRIPTS  # not a page: no nonce to make
                await send(message)
            elif message['type'] == 'http.response.body' and start is not None:
                body.extend(message.get('body', b''))
                if message.get('more_body', False):
                    return
                page = SCRIPT_TAG.sub(b'<script nonce="' + nonce.encode() + b'"', bytes(body))
                headers = MutableHeaders(scope=start)
                if 'content-length' in headers:
                    headers['content-length'] = str(len(page))
                await send(start)
                await send({'type': 'http.response.body', 'body': page})
            else:
                await send(message)

        await self.app(scope, receive, send_with_headers)
