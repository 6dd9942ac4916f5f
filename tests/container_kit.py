"""Podman for the container tests and benchmarks (no docker daemon on these machines).

The settings that work here are those of shared/notes/container.md: a containers.conf with
ulimits the machine allows, runc, cgroupfs, host networking; a storage.conf with its own
graphroot. Both, podman's image store and the debootstrap base live in CACHE, which survives
between runs on the same machine: the base is made once (~1 min), and a rebuild after a code
change reuses every layer but the last ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import REPO, free_port, wait_for
from tests.netkit import public_range

ROOT = os.geteuid() == 0
CACHE = Path(
    os.environ.get('AIKORE_TEST_CACHE') or ('/var/cache/aikore-test' if ROOT else '~/.cache/aikore-test')
).expanduser()
# Run-time state (locks, mounts): /run is emptied at boot, as podman expects of it.
RUN = (
    Path('/run/aikore-test')
    if ROOT
    else Path(os.environ.get('XDG_RUNTIME_DIR') or tempfile.gettempdir()) / 'aikore-test'
)
BASE = 'docker.io/library/debian:bookworm-slim'
IMAGE = 'localhost/aikore:test'
HOST_CA = Path('/etc/ssl/certs/ca-certificates.crt')
BUILD_TIMEOUT = 1800
DEFAULT_MIRROR = 'http://deb.debian.org/debian'
DEFAULT_SECURITY = 'http://deb.debian.org/debian-security'
PUID, PGID = 4321, 4322  # the account a test container runs as (no such user on the host)
STOP_TIMEOUT = 60  # > the image's supervisord stopwaitsecs (AIKORE_STOP_GRACE + 20 s)

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{run}/libpod"
"""
STORAGE_CONF = """\
[storage]
driver = "overlay"
runroot = "{run}/storage"
graphroot = "{cache}/storage"
"""


class PodmanError(RuntimeError):
    """podman (or the base image's debootstrap) could not do what was asked; the text says why."""


def env() -> dict[str, str]:
    """The environment every podman command runs with (writes the two config files once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    containers = CACHE / 'containers.conf'
    storage = CACHE / 'storage.conf'
    for path, text in ((containers, CONTAINERS_CONF), (storage, STORAGE_CONF)):
        wanted = text.format(run=RUN, cache=CACHE)
        if not path.exists() or path.read_text() != wanted:
            path.write_text(wanted)
    return {**os.environ, 'CONTAINERS_CONF': str(containers), 'CONTAINERS_STORAGE_CONF': str(storage)}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(['podman', *args], env=env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise PodmanError(f'podman {" ".join(args)} exited with {result.returncode}: {result.stderr.strip()[-3000:]}')
    return result


def require_podman() -> None:
    """Fails with a plain sentence when this machine cannot run podman (never a silent skip)."""
    if shutil.which('podman') is None:
        raise PodmanError('podman is not installed: run `bash container/install-deps.sh --test` (make test does)')
    result = podman('info', '--format', '{{.Host.OCIRuntime.Name}}', check=False, timeout=60)
    if result.returncode != 0:
        raise PodmanError(f'podman cannot run on this machine: {result.stderr.strip()[-2000:]}')


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """One base creation or build at a time on this machine (two test sessions may run)."""
    with (CACHE / f'{name}.lock').open('w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def image_exists(name: str) -> bool:
    return podman('image', 'exists', name, check=False).returncode == 0


def apt_mirrors() -> tuple[str, str]:
    """The Debian mirror and security mirror this machine's apt uses (a closed network may only
    reach those), else deb.debian.org."""
    text = ''
    for path in [Path('/etc/apt/sources.list'), *sorted(Path('/etc/apt/sources.list.d').glob('*.sources'))]:
        with contextlib.suppress(OSError):
            text += path.read_text() + '\n'
    uris = re.findall(r'(?m)^\s*(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(https?://\S+)', text)
    main = next((uri for uri in uris if uri.rstrip('/').endswith('/debian')), DEFAULT_MIRROR)
    security = next((uri for uri in uris if uri.rstrip('/').endswith('/debian-security')), DEFAULT_SECURITY)
    return main, security


def ensure_base() -> float:
    """``debian:bookworm-slim`` in podman's store, made with debootstrap from Debian's own packages
    when missing (no registry is reachable). Answers the seconds it took (0 when it was there)."""
    if image_exists(BASE):
        return 0.0
    if not ROOT or (shutil.which('debootstrap') is None and not Path('/usr/sbin/debootstrap').exists()):
        raise PodmanError('making the base image needs root and debootstrap (bash container/install-deps.sh --test)')
    with locked('base'):
        if image_exists(BASE):
            return 0.0
        began = time.monotonic()
        main, security = apt_mirrors()
        rootfs = CACHE / 'bookworm-rootfs'
        shutil.rmtree(rootfs, ignore_errors=True)
        try:
            _run(['debootstrap', '--variant=minbase', 'bookworm', str(rootfs), main], 900)
            (rootfs / 'etc/apt/sources.list').write_text(
                f'deb {main} bookworm main\ndeb {main} bookworm-updates main\ndeb {security} bookworm-security main\n'
            )
            for cached in (rootfs / 'var/cache/apt/archives').glob('*.deb'):
                cached.unlink()
            tar = subprocess.Popen(['tar', '-C', str(rootfs), '-c', '.'], stdout=subprocess.PIPE)
            imported = subprocess.run(
                ['podman', 'import', '--change', 'CMD ["bash"]', '-', 'localhost/bookworm-min'],
                stdin=tar.stdout, env=env(), capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            tar.wait(60)
            if imported.returncode != 0 or tar.returncode != 0:
                raise PodmanError(f'podman import of the base failed: {imported.stderr.strip()[-2000:]}')
            podman('tag', 'localhost/bookworm-min', BASE)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        return time.monotonic() - began


def build(tag: str = IMAGE, context: Path = REPO) -> float:
    """``podman build`` of the repository's Dockerfile; answers the seconds it took. The host's CA
    bundle is lent to the build read-only (a TLS-intercepting proxy may sit between it and PyPI)."""
    ensure_base()
    command = ['build', '--format', 'docker', '--network=host', '--pull=never', '--layers', '-t', tag]
    if HOST_CA.is_file():
        command += ['--volume', f'{HOST_CA}:/run/host-ca.crt:ro', '--build-arg', 'PIP_CERT=/run/host-ca.crt']
    with locked('build'):
        began = time.monotonic()
        podman(*command, '-f', str(context / 'Dockerfile'), str(context), timeout=BUILD_TIMEOUT)
        elapsed = time.monotonic() - began
    podman('image', 'prune', '-f', check=False)  # the previous build's dangling top layers
    return elapsed


def image_size(tag: str = IMAGE) -> int:
    return int(podman('image', 'inspect', '--format', '{{.Size}}', tag).stdout.strip())


def remove_container(name: str) -> None:
    podman('rm', '-f', '-t', '0', name, check=False, timeout=120)


def _run(command: list[str], timeout: float) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise PodmanError(f'{command[0]} exited with {result.returncode}: {(result.stderr or result.stdout)[-2000:]}')


@dataclass
class Container:
    """One run of the image: its name, its ports on the host (host networking) and its /config."""

    image: str
    config: Path
    name: str = field(default_factory=lambda: f'aikore-test-{uuid.uuid4().hex[:8]}')
    port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    port_range: str = field(default_factory=public_range)
    token: str = ''

    @property
    def url(self) -> str:
        """HTTPS: the image's default is AIKORE_HTTPS_ONLY=1 (plain HTTP redirects there)."""
        return f'https://localhost:{self.https_port}'

    @property
    def plain_url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def trust(self) -> ssl.SSLContext:
        """The container's generated certificate, trusted as its own authority (as a user would)."""
        return ssl.create_default_context(cafile=str(self.config / 'tls' / 'cert.pem'))

    def run(self, *env: str) -> None:
        """``env``: more ``NAME=value`` settings."""
        settings = [f'AIKORE_PORT={self.port}', f'AIKORE_HTTPS_PORT={self.https_port}',
                    f'AIKORE_PORT_RANGE={self.port_range}', 'AIKORE_STOP_GRACE=5', *env]  # fmt: skip
        podman(
            'run', '-d', '--name', self.name, '--network', 'host', '--stop-timeout', str(STOP_TIMEOUT),
            '-e', f'PUID={PUID}', '-e', f'PGID={PGID}', *[arg for item in settings for arg in ('-e', item)],
            '-v', f'{self.config}:/config', self.image,
        )  # fmt: skip

    def login(self) -> None:
        """The API token as a user gets it: ``aikore token`` inside the container, as PUID:PGID."""
        self.token = podman('exec', '--user', f'{PUID}:{PGID}', self.name, 'aikore', 'token').stdout.strip()
        assert self.token, 'aikore token printed nothing'

    def healthy(self) -> bool:
        """Plain HTTP, as the image's HEALTHCHECK asks (/api/health is never redirected); then the
        HTTPS listener with the certificate the container generated."""
        try:
            if httpx.get(f'{self.plain_url}/api/health', timeout=1).status_code != 200:
                return False
            return httpx.get(f'{self.url}/api/health', timeout=1, verify=self.trust()).status_code == 200
        except (httpx.HTTPError, OSError, ssl.SSLError):
            return False

    def wait_healthy(self, timeout: float = 60) -> float:
        began = time.monotonic()
        wait_for(self.healthy, timeout, 0.02, f'the container to answer /api/health:\n{self.logs()[-3000:]}')
        return time.monotonic() - began

    def logs(self) -> str:
        result = podman('logs', self.name, check=False)
        return result.stdout + result.stderr

    def api(self, method: str, path: str, expected: int = 200, **kwargs: Any) -> Any:
        headers = {'Authorization': f'Bearer {self.token}'}
        response = httpx.request(
            method, f'{self.url}/api{path}', headers=headers, timeout=15, verify=self.trust(), **kwargs
        )
        assert response.status_code == expected, response.text
        return response.json() if response.content else None

    def wait_status(self, instance_id: int, status: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            current = self.api('GET', f'/instances/{instance_id}')
            return current if current['status'] == status else None

        return wait_for(reached, timeout, 0.05, f'instance {instance_id} to be {status}')

    def proxied(self, slug: str) -> str | None:
        headers = {'Authorization': f'Bearer {self.token}'}
        try:
            response = httpx.get(f'{self.url}/instance/{slug}/', headers=headers, timeout=2, verify=self.trust())
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None
