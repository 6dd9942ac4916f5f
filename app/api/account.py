"""/api/account: the user's own credentials: change the password, replace the API token, log
out every other session. Thin routes over ``Sessions`` and ``Core.rotate_api_token``."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..services.access.sessions import PASSWORD_MAX, PASSWORD_MIN, SESSION_COOKIE
from ..services.core import Core
from ..services.errors import Forbidden, TooManyAttempts
from .deps import get_core, request_cookie
from .origin import client_address

router = APIRouter(prefix='/account', tags=['account'])
CoreDep = Annotated[Core, Depends(get_core)]
FROM_ENVIRONMENT = "The value is set by the panel's environment (AIKORE_PASSWORD / AIKORE_API_TOKEN): change it there"


class PasswordChange(BaseModel):
    model_config = ConfigDict(strict=True, extra='forbid')
    current: str = Field(description='The password in use now')
    new: str = Field(description=f'The new password, {PASSWORD_MIN} to {PASSWORD_MAX} characters')


class NewToken(BaseModel):
    token: str = Field(description='The new API token; shown this once (`aikore token` prints it later)')


class SessionsClosed(BaseModel):
    closed: int = Field(description='How many other sessions were logged out')


@router.put(
    '/password',
    status_code=204,
    responses={
        403: {'description': 'The current password is wrong: nothing was changed'},
        409: {'description': FROM_ENVIRONMENT},
        422: {'description': f'The new password is not {PASSWORD_MIN} to {PASSWORD_MAX} characters long'},
        429: {'description': 'Too many wrong current passwords in a row: try again later'},
    },
)
async def change_password(body: PasswordChange, request: Request, core: CoreDep) -> Response:
    """Change the login password. Every other browser session is logged out at once; the
    caller's own session (if it called with one) stays. The API token is not affected."""
    keep = request_cookie(request.scope, SESSION_COOKIE)
    client, throttle = client_address(request.scope), core.sessions.throttle
    wait = throttle.retry_after(client)  # the same throttle as the login: no guessing with a stolen session
    if wait > 0:
        raise TooManyAttempts(f'Too many wrong passwords: try again in {math.ceil(wait)} s')
    try:
        await asyncio.to_thread(core.sessions.change_password, body.current, body.new, keep)
    except Forbidden:
        throttle.failed(client)
        raise
    throttle.succeeded(client)
    return Response(status_code=204)


@router.post('/token', responses={409: {'description': FROM_ENVIRONMENT}})
async def rotate_token(core: CoreDep) -> NewToken:
    """Replace the API token. The old token is refused from the moment this answers (by the API,
    the pages and the proxy in front of instances), so a client that called with it must use the
    new one from now on. Browser sessions are not affected."""
    return NewToken(token=await core.rotate_api_token())


@router.post('/logout-others')
async def logout_others(request: Request, core: CoreDep) -> SessionsClosed:
    """Log out every browser session but the caller's own (all of them when the caller used the
    API token), at once; instance-subdomain sessions included."""
    keep = request_cookie(request.scope, SESSION_COOKIE)
    return SessionsClosed(closed=await asyncio.to_thread(core.sessions.close_others, keep))
