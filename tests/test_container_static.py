"""The container's files, checked without building: the Dockerfile passes hadolint (errors fail),
compose.yaml parses with podman-compose and keeps what the issue asks of it, the shell scripts
pass shellcheck, and the build context leaves out what the image does not need."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=f'{VENV_BIN}:/usr/bin:/usr/local/bin')
    assert found, f'{name} is missing: pip install -e .[dev] (make setup does)'
    return found


def test_hadolint_finds_no_error() -> None:
    result = subprocess.run([tool('hadolint'), '--no-color', '--failure-threshold', 'error', 'Dockerfile'],
                            cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_parses_and_keeps_its_promises(tmp_path: Path) -> None:
    result = subprocess.run([tool('podman-compose'), '-f', str(REPO / 'compose.yaml'), 'config'],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    for expected in ('9000:9000', '9443:9443', '9001-9020:9001-9020', ':/config', 'driver: nvidia', 'count: all',
                     '- gpu', 'video', 'shm_size', 'stop_grace_period', 'unless-stopped', '/api/health'):  # fmt: skip
        assert expected in text, f'{expected!r} missing from the parsed compose file:\n{text}'
    assert '# pid: host' in (REPO / 'compose.yaml').read_text()


def test_stop_grace_period_outlasts_the_panel_stop() -> None:
    """compose's stop_grace_period > supervisord's stopwaitsecs (grace + 20 s) > AIKORE_STOP_GRACE."""
    compose = (REPO / 'compose.yaml').read_text()
    period = int(compose.split('stop_grace_period:')[1].split()[0].rstrip('s'))
    grace = int(compose.split('AIKORE_STOP_GRACE:')[1].split()[0].strip('"'))
    assert period > grace + 20


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = ['container/entrypoint.sh', 'container/nginx-run.sh']
    result = subprocess.run(['shellcheck', *scripts], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_context_is_small() -> None:
    ignored = (REPO / '.dockerignore').read_text().splitlines()
    assert '*' in ignored  # everything out, then what the Dockerfile copies back in
    for needed in ('!app/', '!blueprints/', '!container/', '!pyproject.toml', '!README.md'):
        assert needed in ignored
