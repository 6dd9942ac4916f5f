"""Open/View URLs (API.md ``urls``) and the networking settings, without processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app import lifecycle
from app.config import ConfigError, Settings
from app.models import InstancePublic, InstanceStatus
from app.pages.instance_rows import ROW_DEFAULTS, compact, row_data
from app.services.net.proxy import listen_address
from app.services.net.urls import instance_urls, split_entry, why_unreachable


def instance(**fields: Any) -> InstancePublic:
    values: dict[str, Any] = {
        'id': 1, 'name': 'Comfy', 'slug': 'comfy', 'blueprint': 'Demo', 'status': 'started', 'pid': 10,
        'exit_code': None, 'internal_port': 40000, 'active': True, 'public_port': 9001,
        'access_pattern': 'port', 'created_at': datetime(2026, 1, 1, tzinfo=UTC),
    }  # fmt: skip
    return InstancePublic.model_validate({**values, **fields})


def urls(entry: str | None, proxy: bool = True, **fields: Any) -> tuple[str | None, str | None]:
    result = instance_urls(instance(**fields), entry, proxy)
    return result.open, result.view


def test_port_pattern_needs_the_port_mapped() -> None:
    assert urls('box.lan:9000') == ('http://box.lan:9001/', '/instance/comfy/')
    assert urls('box.lan:9000', active=False) == (None, '/instance/comfy/')
    assert urls('box.lan:9000', proxy=False) == ('http://box.lan:9001/', 'http://box.lan:9001/')
    assert urls('box.lan:9000', proxy=False, active=False) == (None, None)
    assert urls('[::1]:9000') == ('http://[::1]:9001/', '/instance/comfy/')


def test_subdomain_and_path_patterns_need_the_proxy() -> None:
    assert urls('box.lan:9000', access_pattern='subdomain') == ('http://comfy.box.lan:9000/', '/instance/comfy/')
    assert urls('box.lan', access_pattern='subdomain')[0] == 'http://comfy.box.lan/'
    assert urls('10.0.0.5:9000', access_pattern='subdomain')[0] is None  # an IP address has no subdomains
    assert urls('box.lan:9000', access_pattern='path')[0] == 'http://box.lan:9000/instance/comfy/'
    assert urls('box.lan:9000', proxy=False, access_pattern='path') == (None, 'http://box.lan:9001/')
    assert urls('box.lan:9000', proxy=False, access_pattern='subdomain', active=False) == (None, None)


@pytest.mark.parametrize('status', ['stopped', 'starting', 'stalled', 'stopping', 'error'])
def test_no_urls_unless_started(status: str) -> None:
    assert urls('box.lan:9000', status=status) == (None, None)
    assert urls(None) == (None, None)


def test_entry_and_listen_parsing() -> None:
    assert split_entry('box.lan:9000') == ('box.lan', '9000')
    assert split_entry('box.lan') == ('box.lan', None)
    assert split_entry('[::1]:80') == ('[::1]', '80')
    assert listen_address('0.0.0.0', 9000) == '0.0.0.0:9000'
    assert listen_address('::', 9000) == '[::]:9000'


def test_networking_settings() -> None:
    settings = Settings.from_env({})
    assert settings.nginx == 'auto' and settings.panel_port is None and settings.nginx_pid is None
    chosen = Settings.from_env(
        {'AIKORE_NGINX': 'External', 'AIKORE_PANEL_PORT': '9100', 'AIKORE_NGINX_PID': '/run/n.pid'}
    )
    assert (chosen.nginx, chosen.panel_port, str(chosen.nginx_pid)) == ('external', 9100, '/run/n.pid')
    with pytest.raises(ConfigError, match='AIKORE_NGINX'):
        Settings.from_env({'AIKORE_NGINX': 'sometimes'})
    with pytest.raises(ConfigError, match='AIKORE_PANEL_PORT'):
        Settings.from_env({'AIKORE_PANEL_PORT': '70000'})


@pytest.mark.parametrize(
    ('fields', 'opening', 'proxy_on', 'reason'),
    [
        ({'status': 'stopped'}, True, True, 'Start the instance first'),
        ({'status': 'starting'}, False, True, 'Not ready yet'),
        ({'access_pattern': 'port', 'active': False}, True, True, 'Activate its public port 9001 first'),
        ({'access_pattern': 'subdomain'}, True, True, 'A subdomain needs the panel reached by a host name'),
        ({'access_pattern': 'subdomain'}, False, True, 'Not reachable yet: nginx is taking the new route'),
        ({'access_pattern': 'path'}, True, True, 'Not reachable yet: nginx is taking the new route'),
        # Without nginx, View too goes by the public port: no word of nginx.
        ({'access_pattern': 'port', 'active': False}, False, False, 'Activate its public port 9001 first'),
        ({'access_pattern': 'port', 'active': False, 'public_port': None}, False, False, 'Not reachable: without the'),
        ({'access_pattern': 'path'}, True, False, 'Not reachable: without the reverse proxy (AIKORE_NGINX=off)'),
    ],
)
def test_the_dashboard_says_why_open_or_view_is_off(
    fields: dict[str, Any], opening: bool, proxy_on: bool, reason: str
) -> None:
    shown = why_unreachable(
        instance(**{'status': 'started', 'public_port': 9001, **fields}), opening=opening, proxy_on=proxy_on
    )
    assert shown.startswith(reason)


def test_each_app_has_its_own_origin() -> None:
    from app.services.net.urls import app_origin

    assert app_origin('comfy', 'box.lan:9000') == 'http://comfy.box.lan:9000'
    assert app_origin('comfy', '127.0.0.1:9000') == 'http://comfy.localhost:9000'  # loopback: *.localhost
    assert app_origin('comfy', '[::1]:9000', 'https') == 'https://comfy.localhost:9000'
    assert app_origin('comfy', '10.0.0.5:9000') is None  # no subdomains of an IP address
    # Reached on a loopback address, the subdomain pattern opens through the panel's hand-off.
    assert urls('127.0.0.1:9000', access_pattern='subdomain')[0] == 'http://127.0.0.1:9000/_aikore/app/comfy/'
    # Reached on another IP address, no app origin: View falls back to the public port (http only).
    assert urls('10.0.0.5:9000', access_pattern='path') == (None, 'http://10.0.0.5:9001/')
    assert instance_urls(instance(access_pattern='path'), '10.0.0.5:9000', True, 'https').view is None


def test_a_root_only_app_is_never_offered_the_path() -> None:
    opened, view = urls('box.lan:9000', access_pattern='path', path_mode='none')
    assert (opened, view) == ('http://box.lan:9000/_aikore/app/comfy/', '/_aikore/app/comfy/')
    assert urls('box.lan:9000', access_pattern='subdomain', path_mode='none')[0] == 'http://comfy.box.lan:9000/'
    assert urls('box.lan:9000', access_pattern='path', path_mode='strip')[1] == '/instance/comfy/'


def test_a_persistent_instance_opens_its_desktop_once_it_is_up() -> None:
    up = {'persistent': True, 'persistent_display': 100}
    assert urls('box.lan:9000', persistent=True) == ('http://box.lan:9001/', '/instance/comfy/')  # not up yet
    assert urls('box.lan:9000', **up) == ('http://box.lan:9000/desktop/comfy/', '/desktop/comfy/')
    assert urls('box.lan:9000', access_pattern='path', **up) == (
        'http://box.lan:9000/desktop/comfy/',
        '/desktop/comfy/',
    )
    # subdomain: Open on the instance's own origin; View framed from the panel's (Selkies allows
    # only same-origin framing)
    desktop = 'http://comfy.box.lan:9000/desktop/comfy/'
    assert urls('box.lan:9000', access_pattern='subdomain', **up) == (desktop, '/desktop/comfy/')
    assert urls('box.lan:9000', proxy=False, **up) == ('http://box.lan:9001/', 'http://box.lan:9001/')
    assert instance_urls(instance(**up), 'box.lan', True, 'https').open == 'https://box.lan/desktop/comfy/'


@pytest.mark.parametrize('status', list(InstanceStatus))
def test_every_status_has_a_row_on_the_dashboard(status: InstanceStatus) -> None:
    """A status added to the lifecycle shows with its group's colour and the actions its groups
    allow, without a line in the dashboard's code."""
    row = row_data(instance(status=status, pid=None if status not in lifecycle.RUNNING else 10), 'Test')
    assert row['status'] == str(status) and row['color']
    assert row['busy'] == (status in lifecycle.BUSY)
    assert row['can_delete'] == (status in lifecycle.DELETABLE | lifecycle.CANCELLABLE)  # installing: cancel
    assert row['renamable'] == (status in lifecycle.DELETABLE)
    assert row['can_start_stop'] == (status in lifecycle.STARTABLE or status in lifecycle.RUNNING - {'stopping'})
    expected = {'error': 'negative', 'started': 'positive', 'stopped': 'grey-7', 'starting': 'amber-8'}
    assert row['color'] == expected.get(status, row['color'])


@pytest.mark.parametrize('status', list(InstanceStatus))
def test_a_row_travels_without_its_defaults(status: InstanceStatus) -> None:
    """The browser gets each row less its default values and fills them back in: the same row,
    in a fraction of the bytes for the usual stopped one."""
    running = status in lifecycle.RUNNING
    row = row_data(instance(status=status, pid=10 if running else None, persistent=running), 'Test', 'x', ['b'])
    assert set(ROW_DEFAULTS) <= set(row)
    assert {**ROW_DEFAULTS, **compact(row)} == row
    plain = row_data(instance(status='stopped', pid=None, active=False), '')
    assert len(json.dumps(compact(plain))) < len(json.dumps(plain)) / 3


def test_a_row_without_a_proxy_says_view_goes_by_the_public_port() -> None:
    started = instance(status='started', pid=10, access_pattern='port', active=False, public_port=9001)
    assert row_data(started, 'Test')['view_title'].startswith('Not reachable yet: nginx')
    assert row_data(started, 'Test', proxy_on=False)['view_title'] == 'Activate its public port 9001 first'


def test_activate_is_coloured_only_when_it_can_be_pressed() -> None:
    stopped = instance(status='stopped', pid=None, access_pattern='port', active=False, public_port=9001)
    started = instance(status='started', pid=10, access_pattern='port', active=False, public_port=9001)
    assert (row_data(stopped, '')['activate_enabled'], row_data(stopped, '')['activate_color']) == (False, 'grey-8')
    assert (row_data(started, '')['activate_enabled'], row_data(started, '')['activate_color']) == (True, 'primary')
