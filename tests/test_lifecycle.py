"""The supervisor through the REST API, on real processes: Demo lifecycle, readiness kinds,
stall, crash and restart policy, and stopping a script that resists."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil

from tests.helpers import Panel, blueprint, gone, python_server_blueprint, wait_for


def group_members(pgid: int) -> list[int]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def app_process(runner_pid: int) -> psutil.Process:
    """The launch script's process (the runner's only child)."""
    children = wait_for(lambda: psutil.Process(runner_pid).children(), 5, what='the app process')
    return children[0]


def page(port: int) -> httpx.Response:
    return httpx.get(f'http://127.0.0.1:{port}/', timeout=5)


def test_demo_full_lifecycle(panel: Panel) -> None:
    created = panel.create('demo-one', gpu_ids=[])
    assert created['status'] == 'stopped'
    assert (panel.data_dir / 'instances' / 'demo-one' / 'launch.sh').is_file()

    response = panel.client.post(f'/instances/{created["id"]}/start')
    assert response.status_code == 202
    assert response.json()['status'] == 'starting'
    assert panel.client.post(f'/instances/{created["id"]}/start').status_code == 409

    started = panel.wait_status(created['id'], 'started', timeout=20)
    runner_pid, port = started['pid'], started['internal_port']
    assert runner_pid and port
    html = page(port).text
    assert '<h1>demo-one</h1>' in html and 'CUDA_VISIBLE_DEVICES' in html and '(all)' in html and 'Uptime' in html

    # The log holds the coloured start-up lines, the \r progress bar and one line per request.
    for _ in range(40):
        assert page(port).status_code == 200
    log = wait_for(lambda: _log_if(panel, created['id'], 'GET / 200'), 5, what='request lines in the log')
    assert '\x1b[' in log['text'] and '\r' in log['text']
    assert log['offset'] == 0 and log['reset'] is False
    assert log['next_offset'] == len(log['text'].encode())

    # Paging: from the middle, and from the end (nothing new).
    middle = log['next_offset'] // 2
    part = panel.client.get(f'/instances/{created["id"]}/logs', params={'offset': middle}).json()
    assert part['offset'] == middle and not part['reset']
    assert log['text'].encode()[middle:].decode(errors='replace').startswith(part['text'][:20])
    end = panel.client.get(f'/instances/{created["id"]}/logs', params={'offset': part['next_offset']}).json()
    assert end['reset'] is False and end['next_offset'] >= part['next_offset']

    # A restart starts a fresh log: reading from the old offset says reset and starts over.
    old_offset = end['next_offset']
    assert panel.client.post(f'/instances/{created["id"]}/restart').status_code == 202
    restarted = panel.wait_status(created['id'], 'started', timeout=30)
    assert restarted['pid'] != runner_pid
    assert group_members(runner_pid) == []
    fresh = panel.client.get(f'/instances/{created["id"]}/logs', params={'offset': old_offset}).json()
    assert fresh['reset'] is True and fresh['offset'] >= old_offset  # the cursor keeps counting
    assert 'Demo listening' in fresh['text']
    assert (panel.data_dir / 'instances' / 'demo-one' / 'logs' / 'output.log.1').is_file()

    # Stop: the whole process group is gone.
    pid = restarted['pid']
    assert group_members(pid)
    response = panel.client.post(f'/instances/{created["id"]}/stop')
    assert response.status_code == 202 and response.json()['status'] in {'stopping', 'stopped'}
    stopped = panel.wait_status(created['id'], 'stopped', timeout=15)
    assert stopped['pid'] is None and stopped['internal_port'] is None
    assert group_members(pid) == []
    assert gone(pid)


def _log_if(panel: Panel, instance_id: int, needle: str) -> dict | None:
    chunk = panel.client.get(f'/instances/{instance_id}/logs', params={'offset': 0}).json()
    return chunk if needle in chunk['text'] else None


def test_readiness_kinds(panel: Panel) -> None:
    """http, tcp and log are ready only once the app answers; none is ready at once."""
    kinds = {'http': 'http', 'tcp': 'tcp', 'log': 'log:^serving$'}
    ids = {}
    for kind, ready in kinds.items():
        panel.put_blueprint(f'Ready-{kind}', python_server_blueprint(delay=1.0, ready=ready))
        ids[kind] = panel.create(f'ready-{kind}', blueprint=f'Ready-{kind}')['id']
    panel.put_blueprint('Ready-none', python_server_blueprint(delay=30, ready='none'))
    ids['none'] = panel.create('ready-none', blueprint='Ready-none')['id']

    for instance_id in ids.values():
        assert panel.client.post(f'/instances/{instance_id}/start').status_code == 202
    for kind in kinds:
        started = panel.wait_status(ids[kind], 'started', timeout=20)
        # Seen as started means it answers now.
        assert page(started['internal_port']).status_code == 200, kind
    none = panel.wait_status(ids['none'], 'started', timeout=5)
    try:
        page(none['internal_port'])
        answered = True
    except httpx.HTTPError:
        answered = False
    assert not answered, 'ready=none is started without waiting for the app'


def test_stalled_then_started(panel: Panel) -> None:
    script = blueprint(
        'echo waiting for the go file\nwhile [ ! -f go ]; do sleep 0.05; done\necho READY now\nexec sleep 300',
        ready='log:READY',
        stall_timeout=1,
    )
    panel.put_blueprint('Slow', script)
    instance = panel.create('slowpoke', blueprint='Slow')
    panel.client.post(f'/instances/{instance["id"]}/start')
    assert panel.wait_status(instance['id'], 'starting', 'stalled')['status'] in {'starting', 'stalled'}
    panel.wait_status(instance['id'], 'stalled', timeout=10)
    (panel.data_dir / 'instances' / 'slowpoke' / 'go').touch()
    panel.wait_status(instance['id'], 'started', timeout=10)


def test_crash_gives_error_with_exit_code(panel: Panel) -> None:
    panel.put_blueprint('Server', python_server_blueprint())
    instance = panel.create('crashy', blueprint='Server')
    panel.client.post(f'/instances/{instance["id"]}/start')
    started = panel.wait_status(instance['id'], 'started')
    app_process(started['pid']).kill()
    failed = panel.wait_status(instance['id'], 'error', timeout=5)
    assert failed['exit_code'] == 137  # 128 + SIGKILL
    assert failed['pid'] is None
    wait_for(lambda: not group_members(started['pid']), 5, what='the group to be gone')


def test_on_failure_restarts_after_a_crash(tmp_path: Path) -> None:
    panel = Panel(tmp_path / 'data', AIKORE_STOP_ON_EXIT='1', AIKORE_RESTART_BACKOFF='0.1').start()
    try:
        panel.put_blueprint('Server', python_server_blueprint())
        instance = panel.create('phoenix', blueprint='Server', restart_policy='on-failure')
        panel.client.post(f'/instances/{instance["id"]}/start')
        first = panel.wait_status(instance['id'], 'started')
        app_process(first['pid']).kill()
        again = wait_for(
            lambda: (i := panel.instance(instance['id']))['status'] == 'started' and i['pid'] != first['pid'] and i,
            15,
            what='the automatic restart',
        )
        assert again['restart_count'] == 1
        assert page(again['internal_port']).status_code == 200
    finally:
        panel.stop()


def test_on_failure_gives_up_after_the_cap(tmp_path: Path) -> None:
    panel = Panel(
        tmp_path / 'data', AIKORE_STOP_ON_EXIT='1', AIKORE_RESTART_BACKOFF='0.05', AIKORE_RESTART_MAX='2'
    ).start()
    try:
        panel.put_blueprint('Crash', blueprint('echo run >> runs.txt\nexit 3', ready='none'))
        instance = panel.create('doomed', blueprint='Crash', restart_policy='on-failure')
        panel.client.post(f'/instances/{instance["id"]}/start')
        wait_for(lambda: 'not restarting it again' in panel.log_text(), 15, what='the give-up message')
        final = panel.instance(instance['id'])
        assert final['status'] == 'error' and final['exit_code'] == 3
        assert final['restart_count'] == 2
        runs = (panel.data_dir / 'instances' / 'doomed' / 'runs.txt').read_text().splitlines()
        assert len(runs) == 3  # the first run and two restarts
    finally:
        panel.stop()


def test_stop_kills_term_ignoring_script_and_grandchildren(panel: Panel) -> None:
    script = blueprint(
        "trap '' TERM\n"
        'bash -c "trap \'\' TERM; sleep 300 & sleep 301 & wait" &\n'
        'setsid bash -c "trap \'\' TERM; sleep 302" &\n'
        'echo spawned\n'
        'while true; do sleep 0.2; done',
        ready='log:spawned',
    )
    panel.put_blueprint('Stubborn', script)
    instance = panel.create('stubborn', blueprint='Stubborn')
    panel.client.post(f'/instances/{instance["id"]}/start')
    started = panel.wait_status(instance['id'], 'started')
    runner = psutil.Process(started['pid'])
    tree = wait_for(lambda: len(c := runner.children(recursive=True)) >= 6 and c, 10, what='the grandchildren')
    escaped = [p for p in tree if os.getpgid(p.pid) != started['pid']]
    assert escaped, 'the setsid grandchild left the group'

    panel.client.post(f'/instances/{instance["id"]}/stop')
    assert panel.instance(instance['id'])['status'] in {'stopping', 'stopped'}
    panel.wait_status(instance['id'], 'stopped', timeout=15)  # grace is 2 s in tests
    assert group_members(started['pid']) == []
    assert [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_blueprint_environment_and_process_group(panel: Panel) -> None:
    names = [
        'WEBUI_PORT',
        'INSTANCE_NAME',
        'INSTANCE_SLUG',
        'INSTANCE_DIR',
        'INSTANCE_OUTPUT_DIR',
        'MODELS_DIR',
        'CUDA_DEVICE_ORDER',
        'CUDA_VISIBLE_DEVICES',
        'SUBFOLDER',
        'AIKORE_DATA_DIR',
        'BLUEPRINT',
        'TMPDIR',
        'AIKORE_FUNCTIONS',
        'AIKORE_API_TOKEN',
    ]
    dump = ''.join(f'echo "{name}=${{{name}-<unset>}}"\n' for name in names)
    panel.put_blueprint('EnvDump', blueprint(dump + 'echo "PWD=$PWD"\necho dumped\nexec sleep 300', ready='log:dumped'))
    instance = panel.create('Env-Check', blueprint='EnvDump', gpu_ids=[1, 0], output_path='renders/env')
    panel.client.post(f'/instances/{instance["id"]}/start')
    started = panel.wait_status(instance['id'], 'started')
    text = panel.client.get(f'/instances/{instance["id"]}/logs').json()['text']
    env = dict(line.split('=', 1) for line in text.splitlines() if '=' in line)
    data, folder = panel.data_dir, panel.data_dir / 'instances' / 'Env-Check'
    assert env == {
        'WEBUI_PORT': str(started['internal_port']),
        'INSTANCE_NAME': 'Env-Check',
        'INSTANCE_SLUG': 'env-check',
        'INSTANCE_DIR': str(folder),
        'INSTANCE_OUTPUT_DIR': str(data / 'outputs' / 'renders' / 'env'),
        'MODELS_DIR': str(data / 'models'),
        'CUDA_DEVICE_ORDER': 'PCI_BUS_ID',
        'CUDA_VISIBLE_DEVICES': '0,1',
        'SUBFOLDER': '/instance/env-check/',
        'AIKORE_DATA_DIR': str(data),
        'BLUEPRINT': 'EnvDump',
        'TMPDIR': str(folder / 'tmp'),
        'AIKORE_FUNCTIONS': str(Path(__file__).resolve().parent.parent / 'blueprints' / 'functions.sh'),
        'AIKORE_API_TOKEN': '<unset>',  # the panel's secrets never reach a blueprint
        'PWD': str(folder),
    }
    assert (data / 'outputs' / 'renders' / 'env').is_dir() and (folder / 'tmp').is_dir()
    runner = started['pid']
    assert os.getpgid(runner) == runner and os.getsid(runner) == runner  # its own session and group
    assert all(os.getpgid(pid) == runner for pid in group_members(runner))
