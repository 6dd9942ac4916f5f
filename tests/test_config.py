"""Settings from AIKORE_* variables: defaults, the data directory layout, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, Settings


def test_defaults_for_a_bare_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.data_dir == tmp_path / 'data'
    assert (settings.host, settings.port, settings.port_range) == ('127.0.0.1', 9000, (9001, 9020))
    assert settings.api_token is None and settings.stop_on_exit is False
    settings.ensure_layout()
    assert sorted(p.name for p in settings.data_dir.iterdir()) == [
        'blueprints', 'instances', 'models', 'nginx', 'outputs', 'trash'
    ]  # fmt: skip


def test_values_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            'AIKORE_DATA_DIR': str(tmp_path / 'cfg'),
            'AIKORE_HOST': '0.0.0.0',
            'AIKORE_PORT': '8000',
            'AIKORE_PORT_RANGE': '50001-50010',
            'AIKORE_API_TOKEN': 'secret',
            'AIKORE_STOP_ON_EXIT': 'yes',
            'AIKORE_STOP_GRACE': '2.5',
        }
    )
    assert settings.data_dir == tmp_path / 'cfg' and settings.db_path == tmp_path / 'cfg' / 'aikore.db'
    assert (settings.host, settings.port, settings.port_range) == ('0.0.0.0', 8000, (50001, 50010))
    assert settings.api_token == 'secret' and settings.stop_on_exit and settings.stop_grace == 2.5


@pytest.mark.parametrize(
    ('name', 'value', 'message'),
    [
        ('AIKORE_PORT', 'ninety', 'not a number'),
        ('AIKORE_PORT', '70000', 'not a TCP port'),
        ('AIKORE_PORT_RANGE', '9020-9001', 'low-high'),
        ('AIKORE_PORT_RANGE', 'lots', 'must look like'),
        ('AIKORE_STOP_GRACE', '0', 'at least'),
        ('AIKORE_LOG_MAX_BYTES', '10', 'at least'),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        Settings.from_env({name: value})
    assert name in str(error.value)
