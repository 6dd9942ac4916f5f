"""HTTPS on a port of its own (issue 9): the generated self-signed certificate serves the panel
and an instance; a user certificate replaces it; AIKORE_HTTPS_ONLY redirects plain HTTP."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx

from tests.helpers import Panel, free_port
from tests.netkit import auth, proxied_panel, started


def served_certificate(port: int) -> str:
    return ssl.get_server_certificate(('127.0.0.1', port))


def pem(path: Path) -> str:
    return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(path.read_text()))


def test_generated_then_user_certificate(tmp_path: Path) -> None:
    data = tmp_path / 'data'
    https = free_port()
    panel = proxied_panel(data, AIKORE_HTTPS_PORT=str(https))
    second: Panel | None = None
    try:
        cert = data / 'tls' / 'cert.pem'
        assert (data / 'tls' / 'key.pem').stat().st_mode & 0o077 == 0
        base = f'https://localhost:{https}'
        context = ssl.create_default_context(cafile=str(cert))  # trusted as its own authority
        assert httpx.get(f'{base}/api/health', verify=context).status_code == 200
        instance = started(panel, 'secure')
        reply = httpx.get(f'{base}/instance/secure/', headers=auth(panel), verify=context)
        assert reply.status_code == 200 and reply.json()['name'] == 'secure'
        assert reply.json()['headers'].get('X-Forwarded-Proto') == 'https'
        assert instance['status'] == 'started'
        panel.stop()

        own = tmp_path / 'own'
        own.mkdir()
        subprocess.run(
            ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=mine',
             '-keyout', str(own / 'key.pem'), '-out', str(own / 'cert.pem'), '-addext', 'subjectAltName=DNS:localhost'],
            check=True, capture_output=True,
        )  # fmt: skip
        second = Panel(data, AIKORE_NGINX='managed', AIKORE_HTTPS_PORT=str(https), AIKORE_HTTPS_ONLY='1',
                       AIKORE_TLS_CERT=str(own / 'cert.pem'), AIKORE_TLS_KEY=str(own / 'key.pem')).start()  # fmt: skip
        assert served_certificate(https) == pem(own / 'cert.pem')
        mine = ssl.create_default_context(cafile=str(own / 'cert.pem'))
        assert httpx.get(f'{base}/api/health', verify=mine).status_code == 200
        # AIKORE_HTTPS_ONLY: plain HTTP redirects to the HTTPS port (probes of /api/health stay plain).
        plain = httpx.get(f'http://localhost:{second.port}/api/instances')
        assert plain.status_code == 308 and plain.headers['location'] == f'https://localhost:{https}/api/instances'
        assert httpx.get(f'http://localhost:{second.port}/api/health').status_code == 200
        assert second.login_link().startswith(f'https://127.0.0.1:{https}/login?once='), 'one login, on HTTPS'
    finally:
        if second is not None:
            second.stop()
        panel.stop()
