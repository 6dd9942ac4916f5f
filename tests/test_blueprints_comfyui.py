"""The ComfyUI and FluxGym blueprints' decisions, offline (issue 15 item 4): the stock ComfyUI
script runs with its downloads stubbed (git, the venv, pip and ComfyUI itself are small fakes
that record what they were asked), so the CPU branch and the import check are seen for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.config import Settings
from app.services.catalog.blueprints import parse_metadata

STOCK = Settings.from_env({}).stock_blueprints_dir
FUNCTIONS = STOCK / 'functions.sh'

STUBS = """
source "{functions}"
aikore_git_sync() {{  # a checkout whose entry imports a module its requirements omit
  mkdir -p "$2/comfy" "$2/models"
  printf 'import json\\nimport comfy\\nimport aikore_absent_module\\nfrom PIL import Image\\n' >"$2/main.py"
  printf 'torch\\ntorchvision\\ntorchaudio\\ntorchaudio>=2\\nnumpy\\n' >"$2/requirements.txt"
}}
aikore_venv_create() {{ :; }}
"""

FAKE_PYTHON = """#!/usr/bin/env bash
# pip and ComfyUI are recorded; anything else (the import check) is the real interpreter.
if [[ "$1" == -m && "$2" == pip ]]; then echo "pip ${{*:3}}" >>"{record}"; exit 0; fi
if [[ "$1" == main.py ]]; then echo "main $*" >>"{record}"; exit 0; fi
if [[ "$1" == -c && "$*" == *import_module* ]]; then exit 1; fi  # torch is not installed
exec {python} "$@"
"""


def run_comfyui(tmp_path: Path, **env: str) -> tuple[str, str]:
    record, bin_dir, instance = tmp_path / 'record', tmp_path / 'bin', tmp_path / 'instance'
    for folder in (bin_dir, instance, tmp_path / 'models'):
        folder.mkdir()
    fake = bin_dir / 'python'
    fake.write_text(FAKE_PYTHON.format(record=record, python=sys.executable))
    fake.chmod(0o755)
    functions = tmp_path / 'functions.sh'
    functions.write_text(STUBS.format(functions=FUNCTIONS))
    environment = {
        'PATH': f'{bin_dir}:/usr/bin:/bin', 'HOME': str(tmp_path), 'AIKORE_FUNCTIONS': str(functions),
        'WEBUI_PORT': '40001', 'MODELS_DIR': str(tmp_path / 'models'), 'INSTANCE_DIR': str(instance),
        'COMFYUI_PYTHON': 'python', **env,
    }  # fmt: skip
    result = subprocess.run(
        ['bash', str(STOCK / 'ComfyUI.sh')], cwd=instance, env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr, record.read_text()


def test_comfyui_starts_on_the_cpu_without_a_driver(tmp_path: Path) -> None:
    output, record = run_comfyui(tmp_path, AIKORE_FORCE_NO_GPU='1')
    assert 'WARNING: no NVIDIA driver found: ComfyUI runs on the CPU (--cpu)' in output
    assert 'pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu' in record
    assert 'torchaudio' not in record
    requirements = (tmp_path / 'instance' / 'comfyui-requirements.txt').read_text()
    assert 'torchaudio' not in requirements and 'numpy' in requirements
    logged = next(line for line in output.splitlines() if 'its requirements do not install; installing:' in line)
    assert 'aikore_absent_module' in logged and 'comfy' not in logged.split('installing:')[1]  # the import check
    assert any(line.startswith('pip install') and 'aikore_absent_module' in line for line in record.splitlines())
    assert 'Starting ComfyUI on http://127.0.0.1:40001 (GPUs: none set, CPU only)' in output
    main = next(line for line in record.splitlines() if line.startswith('main '))
    assert ' --cpu' in main and '--port 40001' in main


def test_comfyui_torch_index_can_be_chosen(tmp_path: Path) -> None:
    _, record = run_comfyui(
        tmp_path, AIKORE_FORCE_NO_GPU='1', TORCH_INDEX_URL='http://mirror/whl', CUDA_VISIBLE_DEVICES='1'
    )
    assert 'pip install torch torchvision --index-url http://mirror/whl' in record


def test_missing_imports_ignore_stdlib_and_local_modules(tmp_path: Path) -> None:
    (tmp_path / 'localmod.py').write_text('')
    (tmp_path / 'main.py').write_text('import os, localmod\nimport yaml_absent_x\nfrom PIL_absent_y import z\n')
    script = f'source {FUNCTIONS}; aikore_missing_imports {tmp_path} main.py'
    env = {**os.environ, 'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}'}
    result = subprocess.run(['bash', '-c', script], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0 and result.stdout.split() == ['PIL_absent_y', 'yaml_absent_x'], result


def test_path_modes_of_the_stock_apps() -> None:
    assert parse_metadata((STOCK / 'ComfyUI.sh').read_text(), 'ComfyUI').path_mode == 'strip'
    assert parse_metadata((STOCK / 'FluxGym.sh').read_text(), 'FluxGym').path_mode == 'none'


def test_python_for_takes_the_setting_else_the_first_usable_candidate() -> None:
    """A blueprint's own setting (e.g. COMFYUI_PYTHON) wins; without it, the first candidate that runs."""
    python = Path(sys.executable).name
    script = (
        f'source {FUNCTIONS}; aikore_python_for /opt/chosen/python {python}; '
        f'aikore_python_for "" no-such-python-x {python}'
    )
    env = {**os.environ, 'PATH': f'{Path(sys.executable).parent}:{os.environ["PATH"]}'}
    result = subprocess.run(['bash', '-c', script], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0 and result.stdout.split() == ['/opt/chosen/python', python], result
