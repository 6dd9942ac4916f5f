"""Whether an app lets itself be shown inside another page (the dashboard's View frame).

Some apps refuse to be framed by any other origin (JupyterLab sends ``Content-Security-Policy:
frame-ancestors 'self'``; others ``X-Frame-Options``). Since every app runs in an origin of its
own, the dashboard is always "another origin" to it: such an app would show an error page in
the frame. The panel asks the app itself (on its internal port, as the proxy would) and the
View tab offers a new tab instead. An answer that cannot be had (app not up yet) counts as
"frames fine": the frame is tried.
"""

from __future__ import annotations

import logging

import httpx

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0


def refuses_framing(headers: httpx.Headers) -> bool:
    """The response's headers forbid framing by another origin."""
    if headers.get('x-frame-options', '').strip():
        return True  # DENY or SAMEORIGIN (ALLOW-FROM is obsolete and ignored by browsers)
    for policy in headers.get_list('content-security-policy'):
        for directive in policy.split(';'):
            name, _, sources = directive.strip().partition(' ')
            if name.lower() == 'frame-ancestors' and '*' not in sources.split():
                return True
    return False


async def app_refuses_framing(port: int, path: str) -> bool:
    """Ask the app on 127.0.0.1:``port`` for ``path`` (following its redirects, e.g. to a login page)."""
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT, follow_redirects=True, max_redirects=5) as client:
            response = await client.get(f'http://127.0.0.1:{port}{path}', headers={'Sec-Fetch-Dest': 'iframe'})
    except httpx.HTTPError as exc:
        log.debug('Framing probe of port %s failed: %s', port, exc)
        return False
    return refuses_framing(response.headers)
