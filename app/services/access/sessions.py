"""People's credentials: the password, one-time login links, browser sessions and the
throttle on failed logins.

The password is AIKORE_PASSWORD, else generated at the first start and kept only as a
scrypt hash in ``secrets.json`` (the user may change it then). A browser session is a random
id in an HMAC-signed cookie; the ids live in ``sessions.json`` (mode 0600) so they survive
panel restarts and logout revokes one for good.

Each session is bound, server-side, to the origin (the ``Host``: name and port) it was
issued for and is refused on any other: cookies ignore ports, so a browser also sends the
panel's cookie to an activated instance's public port, and whoever receives it there cannot
use it on the panel under another Host. A session issued on an instance's subdomain (the
hand-off, or ``?token=`` on that host) is an *instance* session: it only lets requests
through nginx's auth_request for that host, never the panel's pages or API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Conflict, Forbidden, InvalidInput
from . import auth

log = logging.getLogger(__name__)

SESSION_COOKIE = 'aikore_session'
# NiceGUI's per-browser storage cookie (UI preferences only, no credential); named apart from
# the ``session`` cookie many apps use, and stripped with SESSION_COOKIE from what apps receive.
STORAGE_COOKIE = 'aikore_storage'
PANEL_COOKIES = (SESSION_COOKIE, STORAGE_COOKIE)
PASSWORD_MIN = 8
PASSWORD_MAX = 1024
SESSION_DAYS = 30
LOGIN_LINK_SECONDS = 3600
# Where an instance's origin (its subdomain or custom host) redeems a hand-off token (nginx passes it to the panel).
HANDOFF_PATH = '/_aikore/session'

# A logged-in browser carries one of these to an instance's subdomain (a host its cookie does not reach).
HANDOFF_SECONDS = 60
SCRYPT = {'n': 2**14, 'r': 8, 'p': 1}
FAILURES_ALLOWED = 5
FAILURE_WINDOW = 300.0
LOCKOUT_BASE = 2.0


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return 'scrypt$' + base64.b64encode(salt).decode() + '$' + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_text, digest_text = stored.split('$')
        salt, digest = base64.b64decode(salt_text), base64.b64decode(digest_text)
    except ValueError:
        return False
    if scheme != 'scrypt':
        return False
    candidate = hashlib.scrypt(password.encode(), salt=salt, dklen=len(digest), **SCRYPT)
    return hmac.compare_digest(candidate, digest)


class LoginThrottle:
    """After a few failures from one client, each further try waits longer (2 s, 4 s, … 5 min)."""

    def __init__(self) -> None:
        self._failures: defaultdict[str, deque[float]] = defaultdict(deque)
        self._locked_until: dict[str, float] = {}

    def retry_after(self, client: str) -> float:
        return max(0.0, self._locked_until.get(client, 0.0) - time.monotonic())

    def failed(self, client: str) -> None:
        now = time.monotonic()
        failures = self._failures[client]
        failures.append(now)
        while failures and now - failures[0] > FAILURE_WINDOW:
            failures.popleft()
        excess = len(failures) - FAILURES_ALLOWED
        if excess >= 0:
            self._locked_until[client] = now + min(FAILURE_WINDOW, LOCKOUT_BASE * 2**excess)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
        self._locked_until.pop(client, None)


@dataclass(frozen=True)
class Session:
    """One login, as kept in ``sessions.json``: when it ends, the origin it was issued for
    (``host[:port]``, lower case) and, for an instance-subdomain session, that instance's slug."""

    expires: float
    host: str
    instance: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {'expires': self.expires, 'host': self.host, 'instance': self.instance}

    @classmethod
    def from_json(cls, data: object) -> Session | None:
        """None for anything else, e.g. an entry of an older panel (bound to no origin)."""
        if not isinstance(data, dict) or not isinstance(data.get('host'), str):
            return None
        instance = data.get('instance')
        try:
            return cls(float(data['expires']), data['host'], instance if isinstance(instance, str) else None)
        except (KeyError, TypeError, ValueError):
            return None


class Sessions:
    """Password check and change, one-time login links and origin-bound session cookies."""

    def __init__(self, secrets_path: Path, sessions_path: Path, password_from_env: str | None) -> None:
        self.secrets_path = secrets_path
        self.sessions_path = sessions_path
        self.throttle = LoginThrottle()
        self._password_from_env = password_from_env
        self._lock = threading.Lock()
        self._login_links: dict[str, float] = {}
        self._handoffs: dict[str, float] = {}
        data = auth.load_secrets(secrets_path)
        self.generated_password: str | None = None
        changed = False
        if not data.get('session_secret'):
            data['session_secret'] = secrets.token_urlsafe(32)
            changed = True
        if not password_from_env and not data.get('password_hash'):
            self.generated_password = secrets.token_urlsafe(12)
            data['password_hash'] = hash_password(self.generated_password)
            changed = True
        if changed:
            auth.save_secrets(secrets_path, data)
        self.secret = str(data['session_secret'])
        self._password_hash = str(data.get('password_hash', ''))
        self._sessions = self._load()

    # -- password and login links -------------------------------------------------------

    def password_matches(self, password: str) -> bool:
        if self._password_from_env:
            return hmac.compare_digest(password.encode(), self._password_from_env.encode())
        return verify_password(password, self._password_hash)

    def change_password(self, current: str, new: str, keep: str | None) -> int:
        """Replace the password (blocking: scrypt, writes secrets.json) and end every session but
        the cookie ``keep`` (the caller's own, if any); answers how many sessions ended."""
        if self._password_from_env:
            raise Conflict(
                "The password is set by AIKORE_PASSWORD in the panel's environment: change it there "
                'and restart the panel'
            )
        if not PASSWORD_MIN <= len(new) <= PASSWORD_MAX:
            raise InvalidInput(f'The new password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long')
        if not self.password_matches(current):
            raise Forbidden('The current password is wrong: the password was not changed')
        stored = hash_password(new)
        auth.update_secrets(self.secrets_path, password_hash=stored)
        self._password_hash = stored
        log.info('The login password was changed')
        return self.close_others(keep)

    def new_login_link_token(self) -> str:
        """A token that logs one browser in once, within the hour."""
        return _new_token(self._login_links, LOGIN_LINK_SECONDS)

    def redeem_login_link(self, token: str) -> bool:
        return _redeem(self._login_links, token)

    def new_handoff_token(self, host: str) -> str:
        """A token that gives the instance subdomain ``host`` a session once, within a minute;
        only the hand-off endpoint on that very host takes it (never the login page)."""
        return _new_token(self._handoffs, HANDOFF_SECONDS, bound=host.lower())

    def redeem_handoff(self, token: str, host: str) -> bool:
        return _redeem(self._handoffs, token, bound=host.lower())

    # -- sessions ---------------------------------------------------------------------

    def open(self, host: str, instance: str | None = None) -> str:
        """A new session for the origin ``host`` (an instance session when ``instance`` names
        the slug whose subdomain ``host`` is); returns the cookie value."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = Session(time.time() + SESSION_DAYS * 86400, host.lower(), instance)
            try:
                self._save()
            except OSError:
                del self._sessions[session_id]  # not kept on disk: not given out (e.g. the disk is full)
                raise
        return f'{session_id}.{self._sign(session_id)}'

    def valid(self, cookie: str | None, host: str, *, instance_route: bool = False) -> bool:
        """Whether ``cookie`` is a live session issued for the origin ``host``. Instance sessions
        pass only where ``instance_route`` (nginx's auth_request for an instance)."""
        session = self._session(cookie)
        if session is None or session.expires <= time.time() or session.host != host.lower():
            return False
        return instance_route or session.instance is None

    def close(self, cookie: str | None) -> None:
        session_id = self._verified_id(cookie)
        if session_id is None:
            return
        with self._lock:
            if self._sessions.pop(session_id, None) is not None:
                self._save()

    def close_others(self, keep: str | None) -> int:
        """End every session but the one of the cookie ``keep`` (all when None); answers how many."""
        kept = self._verified_id(keep)
        with self._lock:
            others = [session_id for session_id in self._sessions if session_id != kept]
            for session_id in others:
                del self._sessions[session_id]
            if others:
                self._save()
        if others:
            log.info('%d other session(s) logged out', len(others))
        return len(others)

    def _session(self, cookie: str | None) -> Session | None:
        session_id = self._verified_id(cookie)
        return None if session_id is None else self._sessions.get(session_id)

    def _verified_id(self, cookie: str | None) -> str | None:
        if not cookie or '.' not in cookie:
            return None
        session_id, signature = cookie.rsplit('.', 1)
        if not cookie.isascii():  # never ours (and compare_digest refuses non-ASCII text)
            return None
        return session_id if hmac.compare_digest(signature, self._sign(session_id)) else None

    def _sign(self, session_id: str) -> str:
        mac = hmac.new(self.secret.encode(), session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip('=')

    def _load(self) -> dict[str, Session]:
        try:
            data = json.loads(self.sessions_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        now = time.time()
        loaded = {str(key): Session.from_json(value) for key, value in data.items()}
        return {key: session for key, session in loaded.items() if session is not None and session.expires > now}

    def _save(self) -> None:
        auth.save_secrets(self.sessions_path, {key: session.to_json() for key, session in self._sessions.items()})


def _new_token(tokens: dict[str, float], seconds: float, bound: str = '') -> str:
    """A one-time token; with ``bound`` it redeems only together with the same value."""
    now = time.time()
    for digest in [digest for digest, expires in tokens.items() if expires <= now]:
        del tokens[digest]  # never redeemed
    token = secrets.token_urlsafe(24)
    tokens[_digest(f'{bound} {token}')] = now + seconds
    return token


def _redeem(tokens: dict[str, float], token: str, bound: str = '') -> bool:
    return tokens.pop(_digest(f'{bound} {token}'), 0.0) > time.time()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
