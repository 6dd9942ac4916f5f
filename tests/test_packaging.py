"""The panel installed as the image installs it (a wheel, not editable) finds all of its code,
its stock blueprints and its nginx template, from any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHECK = """
import app, app.main
from app.config import NGINX_TEMPLATES_DIR, STOCK_BLUEPRINTS_DIR
from app.api.system import DOCS_SCRIPT_FILE
assert app.__file__.startswith({root!r}), app.__file__
assert (STOCK_BLUEPRINTS_DIR / 'Demo.sh').is_file() and (STOCK_BLUEPRINTS_DIR / 'functions.sh').is_file()
assert (NGINX_TEMPLATES_DIR / 'nginx.conf.j2').is_file(), NGINX_TEMPLATES_DIR
assert DOCS_SCRIPT_FILE.is_file()
print('ok', STOCK_BLUEPRINTS_DIR)
"""


def test_installed_wheel_finds_code_blueprints_and_templates(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps', str(REPO), '-w', str(tmp_path / 'dist')],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, f'building the wheel failed:\n{built.stdout}\n{built.stderr}'
    (wheel,) = (tmp_path / 'dist').glob('aikore-*.whl')
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.startswith('app/')}
        archive.extractall(tmp_path / 'site')
    suffixes = {'.py', '.js', '.css'}
    sources = {str(path.relative_to(REPO)) for path in (REPO / 'app').rglob('*') if path.suffix in suffixes}
    assert sources - packed == set(), 'files of the package missing from the wheel'
    # The venv's own (editable) copy must not be what gets imported: the unpacked wheel comes first.
    env = {**os.environ, 'PYTHONPATH': str(tmp_path / 'site')}
    elsewhere = tmp_path / 'cwd'
    elsewhere.mkdir()
    checked = subprocess.run(
        [sys.executable, '-c', CHECK.format(root=str(tmp_path / 'site'))],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr
    assert str(tmp_path / 'site' / 'app' / 'bundled' / 'blueprints') in checked.stdout
