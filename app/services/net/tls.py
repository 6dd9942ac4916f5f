"""The certificate nginx serves HTTPS with: the user's (AIKORE_TLS_CERT / AIKORE_TLS_KEY), or
a self-signed one generated once into ``<data>/tls/`` for ``localhost``, the machine's host
name and addresses and AIKORE_PUBLIC_HOST, made again when that list of names changes.

To trust the generated one, import ``<data>/tls/cert.pem`` into the browser or the system's
store (it is its own authority); to replace it, set AIKORE_TLS_CERT and AIKORE_TLS_KEY.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from ...config import Settings
from ..files import PRIVATE
from .urls import split_entry

log = logging.getLogger(__name__)

DAYS = 3650


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    generated: bool


def names(settings: Settings) -> list[str]:
    """What the generated certificate covers, sorted (DNS names and IP addresses)."""
    found = {'localhost', '127.0.0.1', '::1', socket.gethostname()}
    if settings.public_host:
        found.add(split_entry(settings.public_host.strip().lower())[0].strip('[]'))
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.add(address.address.split('%', 1)[0])
    return sorted(name for name in found if name)


def _san(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f'DNS:{name}'
    return f'IP:{name}'


def ensure(settings: Settings) -> Certificate:
    """The certificate to serve (blocking: may run openssl once)."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        return Certificate(settings.tls_cert, settings.tls_key, generated=False)
    folder = settings.data_dir / 'tls'
    cert, key, listed = folder / 'cert.pem', folder / 'key.pem', folder / 'names.json'
    wanted = names(settings)
    try:
        current = json.loads(listed.read_text())
    except (OSError, ValueError):
        current = None
    if current == wanted and cert.exists() and key.exists():
        return Certificate(cert, key, generated=True)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    openssl = shutil.which('openssl') or 'openssl'
    subprocess.run(
        [openssl, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', str(DAYS),
         '-subj', '/CN=AiKore', '-keyout', str(key), '-out', str(cert),
         '-addext', 'subjectAltName=' + ','.join(_san(name) for name in wanted)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(PRIVATE)
    listed.write_text(json.dumps(wanted))
    log.info('Self-signed HTTPS certificate written to %s for %s (trust it, or set AIKORE_TLS_CERT/KEY)', cert,
             ', '.join(wanted))  # fmt: skip
    return Certificate(cert, key, generated=True)
