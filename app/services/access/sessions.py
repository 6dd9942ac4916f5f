"""People's credentials: the password, one-time login links, browser sessions and the
throttle on failed logins.

The password is AIKORE_PASSWORD, else generated at the first start and kept only as a
scrypt hash in ``secrets.json``. A browser session is a random id in an HMAC-signed cookie;
the ids live in ``sessions.json`` (mode 0600) so they survive panel restarts and logout
revokes one for good.
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
from pathlib import Path

from . import auth

log = logging.getLogger(__name__)

SESSION_COOKIE = 'aikore_session'
SESSION_DAYS = 30
LOGIN_LINK_SECONDS = 3600
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


class Sessions:
    """Password check, one-time login links and signed session cookies."""

    def __init__(self, secrets_path: Path, sessions_path: Path, password_from_env: str | None) -> None:
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

    def new_login_link_token(self) -> str:
        """A token that logs one browser in once, within the hour."""
        return _new_token(self._login_links, LOGIN_LINK_SECONDS)

    def redeem_login_link(self, token: str) -> bool:
        return _redeem(self._login_links, token)

    def new_handoff_token(self) -> str:
        """A token that gives an instance's subdomain a session once, within a minute; only the
        hand-off endpoint takes it (never the login page)."""
        return _new_token(self._handoffs, HANDOFF_SECONDS)

    def redeem_handoff(self, token: str) -> bool:
        return _redeem(self._handoffs, token)

    # -- sessions ---------------------------------------------------------------------

    def open(self) -> str:
        """A new session; returns the cookie value."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = time.time() + SESSION_DAYS * 86400
            self._save()
        return f'{session_id}.{self._sign(session_id)}'

    def valid(self, cookie: str | None) -> bool:
        session_id = self._verified_id(cookie)
        return session_id is not None and self._sessions.get(session_id, 0.0) > time.time()

    def close(self, cookie: str | None) -> None:
        session_id = self._verified_id(cookie)
        if session_id is None:
            return
        with self._lock:
            if self._sessions.pop(session_id, None) is not None:
                self._save()

    def _verified_id(self, cookie: str | None) -> str | None:
        if not cookie or '.' not in cookie:
            return None
        session_id, signature = cookie.rsplit('.', 1)
        return session_id if hmac.compare_digest(signature, self._sign(session_id)) else None

    def _sign(self, session_id: str) -> str:
        mac = hmac.new(self.secret.encode(), session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip('=')

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.sessions_path.read_text())
        except (OSError, ValueError):
            return {}
        now = time.time()
        return {str(k): float(v) for k, v in data.items() if float(v) > now} if isinstance(data, dict) else {}

    def _save(self) -> None:
        auth.save_secrets(self.sessions_path, dict(self._sessions))


def _new_token(tokens: dict[str, float], seconds: float) -> str:
    now = time.time()
    for digest in [digest for digest, expires in tokens.items() if expires <= now]:
        del tokens[digest]  # never redeemed
    token = secrets.token_urlsafe(24)
    tokens[_digest(token)] = now + seconds
    return token


def _redeem(tokens: dict[str, float], token: str) -> bool:
    return tokens.pop(_digest(token), 0.0) > time.time()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
