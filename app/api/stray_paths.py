"""API paths the /api mount cannot route (Starlette's path pattern stops at a line break) get
the API's own JSON 404 instead of falling through to the pages' HTML 404."""

from __future__ import annotations

import re

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

CONTROL = re.compile(r'[\x00-\x1f\x7f]')


class StrayApiPaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get('path', '')
        if scope['type'] == 'http' and path.startswith('/api/') and CONTROL.search(path):
            await JSONResponse({'detail': 'No such API route'}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)
