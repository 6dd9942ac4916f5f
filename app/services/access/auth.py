"""Credentials: the API bearer token (AIKORE_API_TOKEN, else generated once and kept in
``<data>/secrets.json`` with mode 0600)."""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from ..errors import Conflict
from ..files import PRIVATE, write_atomic

log = logging.getLogger(__name__)
_UPDATING = threading.Lock()


def load_secrets(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise RuntimeError(f'{path} is not valid JSON; fix or remove it') from None
    return data if isinstance(data, dict) else {}


def save_secrets(path: Path, data: dict[str, Any]) -> None:
    """Write the secrets file readable by its owner only (0600), atomically."""
    write_atomic(path, json.dumps(data, indent=2), PRIVATE)


def update_secrets(path: Path, **values: str) -> None:
    """Change some entries of the secrets file and keep the others (the API token, the password
    hash and the session secret share it): one change at a time."""
    with _UPDATING:
        data = load_secrets(path)
        data.update(values)
        save_secrets(path, data)


def api_token(path: Path, from_env: str | None) -> tuple[str, bool]:
    """The token the API accepts, and whether it was generated just now."""
    if from_env:
        return from_env, False
    data = load_secrets(path)
    token = data.get('api_token')
    if isinstance(token, str) and token:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return token, False
    data['api_token'] = secrets.token_urlsafe(32)
    save_secrets(path, data)
    return data['api_token'], True


def rotate_api_token(path: Path, from_env: str | None) -> str:
    """A new API token, stored in place of the old one (which the caller stops accepting). A
    token set by AIKORE_API_TOKEN is the environment's: refused with a sentence that says so."""
    if from_env:
        raise Conflict(
            "The API token is set by AIKORE_API_TOKEN in the panel's environment: change it there and restart the panel"
        )
    token = secrets.token_urlsafe(32)
    update_secrets(path, api_token=token)
    log.info('The API token was replaced; the old one is refused from now on')
    return token


def token_matches(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def proxy_secret(token: str) -> str:
    """The value the panel's own nginx sends in ``X-AiKore-Proxy`` so the panel believes its
    forwarding headers (``X-Real-IP``): derived from the API token, so the panel and the config
    it writes agree across restarts, and nobody who lacks the token can produce it."""
    return hmac.new(token.encode(), b'aikore-proxy-header', 'sha256').hexdigest()


def stored_api_token(path: Path) -> str | None:
    """The token kept in the secrets file, or None when there is none (nothing is created)."""
    token = load_secrets(path).get('api_token')
    return token if isinstance(token, str) and token else None
