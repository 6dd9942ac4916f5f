"""The Slurm executor on a real Slurm (``tests/slurm_kit.py``: two nodes with two fake GPUs each),
through the REST API and the panel's own nginx.

What one machine can show: jobs are queued with Slurm's reason and scheduled on GPUs and nodes
by Slurm itself, reached through nginx at the node address Slurm reports, followed in the log,
cancelled with their whole process tree, re-adopted after the panel is killed, and the gate in
front of each app refuses a connection without the job's secret. What it cannot show: that an
app bound to a node's loopback is out of reach from *other* machines (every node here is
127.0.0.1), nor a shared data directory mounted at another path on the nodes.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from app.config import Settings
from app.db import SLURM_COLUMNS, prepare_database
from app.lifecycle import InstanceStatus
from app.models import Executor, Instance
from app.services.catalog import store
from app.services.catalog.blueprints import ReadyCheck
from app.services.net.ports import _wanted as ports_wanted
from app.services.net.proxy import upstream_host
from app.services.runtime.executor import RunHandle
from app.services.runtime.job_gate import Gate, checked_head
from app.services.runtime.readiness import ReadinessProbe
from app.services.runtime.slurm import SlurmCommands, SlurmExecutor, gpu_count
from tests.helpers import HeldCall, Panel, blueprint, free_port, gone, wait_for, wait_until
from tests.netkit import ECHO_APP, auth, proxied_panel, wait_routed
from tests.slurm_kit import SlurmCluster

# The app, and a grandchild that leaves the job step's process group (setsid): only cgroup
# process tracking finds it when the job is cancelled.
SLURM_ECHO_BODY = (
    'echo "gpus=$CUDA_VISIBLE_DEVICES node=$SLURMD_NODENAME"\n'
    '(setsid bash -c "exec -a aikore-marker-$INSTANCE_NAME sleep 1000" &)\n'
    f'exec {sys.executable} -u {ECHO_APP}'
)
SLURM_ECHO = blueprint(SLURM_ECHO_BODY, name='SlurmEcho')
STALL_TIMEOUT = 2.0  # SlurmEchoShort's: far less than its job waits in the queue here
SLURM_ECHO_SHORT = blueprint(SLURM_ECHO_BODY, stall_timeout=STALL_TIMEOUT, name='SlurmEchoShort')


def slurm_panel(data_dir: Path, cluster: SlurmCluster) -> Panel:
    panel = proxied_panel(data_dir, AIKORE_SLURM_CONF=str(cluster.conf), AIKORE_SLURM_POLL='0.2')
    panel.put_blueprint('SlurmEcho', SLURM_ECHO)
    panel.put_blueprint('SlurmEchoShort', SLURM_ECHO_SHORT)
    return panel


def start(panel: Panel, instance_id: int) -> dict[str, Any]:
    response = panel.client.post(f'/instances/{instance_id}/start')
    assert response.status_code == 202, response.text
    return response.json()


def log_text(panel: Panel, instance_id: int) -> str:
    return str(panel.client.get(f'/instances/{instance_id}/logs', params={'offset': 0}).json()['text'])


def marker(name: str) -> psutil.Process | None:
    for process in psutil.process_iter(['cmdline']):
        if (process.info.get('cmdline') or [''])[0] == f'aikore-marker-{name}':
            return process
    return None


def test_slurm_instances_queue_run_route_stop_and_readopt(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    panel = slurm_panel(tmp_path / 'data', slurm_cluster)
    try:
        # Two GPUs each: one node each; a third waits for resources.
        ids = [panel.create(name, 'SlurmEcho', gpu_ids=[0, 1], executor='slurm')['id'] for name in ('ja', 'jb')]
        ids.append(panel.create('jc', 'SlurmEchoShort', gpu_ids=[0, 1], executor='slurm')['id'])
        assert panel.instance(ids[0])['public_port'] is None
        for instance_id in ids[:2]:
            assert start(panel, instance_id)['status'] == 'queued'
        first, second = (panel.wait_status(i, 'started', timeout=60) for i in ids[:2])
        assert {first['node'], second['node']} == {'vm1', 'vm2'}
        cluster = panel.client.get('/slurm/nodes').json()
        assert cluster['configured'] and cluster['unreachable_since'] is None
        assert {(n['name'], n['gpus'], n['gpus_used']) for n in cluster['nodes']} == {('vm1', 2, 2), ('vm2', 2, 2)}
        for instance in (first, second):
            text = wait_for(lambda i=instance: 'gpus=' in log_text(panel, i['id']) and log_text(panel, i['id']), 10)
            assert f'gpus=0,1 node={instance["node"]}' in text
            wait_routed(f'{panel.url}/instance/{instance["slug"]}/', instance['name'], 20, headers=auth(panel))
            # The gate on the node lets nothing through without the job's secret.
            assert httpx.get(f'http://127.0.0.1:{instance["internal_port"]}/', timeout=5).status_code == 403

        start(panel, ids[2])
        submitted = time.monotonic()
        seen: set[str] = set()  # what the panel said meanwhile, for a failure's message

        def waits_for_resources() -> dict[str, Any] | None:
            instance = panel.instance(ids[2])
            seen.add(f'{instance["status"]}: {instance["status_detail"]}')
            return instance if instance['status_detail'] == 'queued: Resources' else None

        try:
            queued = wait_for(waits_for_resources, 30, what='Resources')
        except AssertionError as exc:
            raise AssertionError(f'{exc}; the panel said {sorted(seen)}; squeue: {slurm_cluster.queue()}') from exc
        assert queued['status'] == 'queued'
        # The stall timer starts when the job runs, not when it is submitted: still queued (not
        # stalled) well past its stall timeout.
        wait_for(lambda: time.monotonic() - submitted > 2 * STALL_TIMEOUT, 10, 0.1, 'twice the stall timeout')
        assert panel.instance(ids[2])['status'] == 'queued'

        # Stop kills the job's whole tree (also what left its process group), and the third job runs.
        stray = wait_for(lambda: marker('ja'), 10, what='the stray process of ja')
        assert panel.client.post(f'/instances/{ids[0]}/stop').status_code == 202
        panel.wait_status(ids[0], 'stopped', timeout=30)
        wait_for(lambda: gone(stray), 10, what='the stray process to be killed with the job')
        third = panel.wait_status(ids[2], 'started', timeout=60)
        assert third['node'] == first['node']
        wait_routed(f'{panel.url}/instance/jc/', 'jc', 20, headers=auth(panel))

        # A local instance beside them (the cluster going away must not touch it).
        local = panel.create('loc', 'Echo')
        start(panel, local['id'])
        panel.wait_status(local['id'], 'started')

        # kill -9 the panel: the jobs go on and the next panel takes them back.
        jobs = {i: panel.instance(i)['slurm_job_id'] for i in ids[1:]}
        panel.kill()
        panel = slurm_panel(tmp_path / 'data', slurm_cluster)
        for instance_id, job in jobs.items():
            again = panel.wait_status(instance_id, 'started')
            assert again['slurm_job_id'] == job
        wait_routed(f'{panel.url}/instance/jb/', 'jb', 20, headers=auth(panel))

        # The controller goes away: statuses stay, flagged; local instances are unaffected.
        slurm_cluster.stop_controller()
        try:
            flagged = wait_for(
                lambda: (i := panel.instance(ids[1]))['cluster_unreachable_since'] and i, 60, what='the flag'
            )
            assert flagged['status'] == 'started'
            assert panel.instance(local['id'])['status'] == 'started'
            assert panel.client.post(f'/instances/{local["id"]}/restart').status_code == 202
            panel.wait_status(local['id'], 'started')
        finally:
            slurm_cluster.start_controller()
        wait_for(lambda: panel.instance(ids[1])['cluster_unreachable_since'] is None, 60, what='the flag to clear')

        # The re-adopted jobs stop as any other.
        for instance_id in ids[1:]:
            assert panel.client.post(f'/instances/{instance_id}/stop').status_code == 202
            panel.wait_status(instance_id, 'stopped', timeout=30)
        assert slurm_cluster.command('squeue', '-h', '-t', 'R,PD').stdout.strip() == ''
    finally:
        panel.stop()
        slurm_cluster.cancel_all()


def test_what_a_slurm_instance_cannot_do(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    panel = slurm_panel(tmp_path / 'data', slurm_cluster)
    try:
        refused = panel.client.post('/instances', json={'name': 'p', 'blueprint': 'SlurmEcho', 'executor': 'slurm',
                                                         'persistent': True})  # fmt: skip
        assert refused.status_code == 422 and 'desktop' in refused.text
        created = panel.create('q', 'SlurmEcho', executor='slurm')
        response = panel.client.post(f'/instances/{created["id"]}/activate')
        assert response.status_code == 422 and 'Slurm' in response.text
        response = panel.client.patch(f'/instances/{created["id"]}', json={'persistent': True})
        assert response.status_code == 422 and 'desktop' in response.text
        # A job Slurm will never take is refused at once, with Slurm's words; the row stays stopped.
        nowhere = panel.create('r', 'SlurmEcho', executor='slurm', slurm_partition='nope')
        response = panel.client.post(f'/instances/{nowhere["id"]}/start')
        assert response.status_code == 422 and 'partition' in response.text.lower()
        assert panel.instance(nowhere['id'])['status'] == 'stopped'
    finally:
        panel.stop()


def test_slurm_needs_a_configured_cluster(panel: Panel) -> None:
    response = panel.client.post('/instances', json={'name': 's', 'blueprint': 'Demo', 'executor': 'slurm'})
    assert response.status_code == 422 and 'AIKORE_SLURM' in response.text


def test_schema_1_rows_gain_the_slurm_columns(tmp_path: Path) -> None:
    """A schema-1 database (before the Slurm executor) upgrades in place: every row stays local."""
    db = tmp_path / 'aikore.db'
    engine = prepare_database(db)
    store.add(engine, Instance(name='old', slug='old', blueprint='Demo'))
    engine.dispose()
    with closing(sqlite3.connect(db)) as conn:  # back to schema 1: without the columns
        for definition in SLURM_COLUMNS:
            conn.execute(f'ALTER TABLE instances DROP COLUMN {definition.split()[0]}')
        conn.execute('PRAGMA user_version = 1')
        conn.commit()
    engine = prepare_database(db)
    row = store.list_all(engine)[0]
    assert row.executor == Executor.LOCAL and row.slurm_job_id is None and row.cluster_unreachable_since is None


def test_gate_head_check_andgpu_counts() -> None:
    """The gate's header check (the secret removed before the app sees the request) and how
    ``scontrol show node -d`` GPU fields are counted."""
    head = b'GET / HTTP/1.1\r\nHost: x\r\nX-AiKore-Job: s3cret\r\nAccept: */*\r\n\r\n'
    assert checked_head(head, b's3cret') == (True, False, b'GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n')
    assert checked_head(head, b'other')[0] is False
    assert checked_head(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n', b's3cret')[0] is False
    probe = b'GET / HTTP/1.1\r\nx-aikore-job: s3cret\r\nX-AiKore-Probe: tcp\r\n\r\n'
    assert checked_head(probe, b's3cret')[:2] == (True, True)
    fields = ('gpu:2', 'gpu:2(IDX:0-1)', 'gpu:0(IDX:N/A)', 'gpu:a100:4(S:0),mps:100', '')
    assert [gpu_count(text) for text in fields] == [2, 2, 0, 4, 0]


def job_line(cluster: SlurmCluster, job_id: str) -> str:
    return cluster.command('scontrol', 'show', 'job', '-o', job_id).stdout


def test_jobs_keep_other_users_off_their_node_and_share_it_with_ours(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """``sbatch --exclusive=user`` (the app listens on the node's loopback, shared by every job
    there): no other user's job beside ours, yet two of our instances still run on one node. A
    job whose secret is gone when the panel comes back is cancelled, its instance in error."""
    panel = slurm_panel(tmp_path / 'data', slurm_cluster)
    try:
        ids = [panel.create(n, 'SlurmEcho', gpu_ids=[0], executor='slurm', slurm_node='vm1')['id'] for n in 'kl']
        for instance_id in ids:
            start(panel, instance_id)
        running = [panel.wait_status(i, 'started', timeout=60) for i in ids]
        assert [i['node'] for i in running] == ['vm1', 'vm1']
        for instance in running:
            assert 'OverSubscribe=USER' in job_line(slurm_cluster, instance['slurm_job_id'])

        panel.kill()
        (tmp_path / 'data' / 'instances' / 'k' / 'run' / 'job-secret').unlink()
        panel = slurm_panel(tmp_path / 'data', slurm_cluster)
        failed = panel.wait_status(ids[0], 'error')
        assert 'job secret' in failed['status_detail']
        job = running[0]['slurm_job_id']
        wait_for(lambda: job not in slurm_cluster.command('squeue', '-h', '-t', 'R,PD', '-o', '%i').stdout, 30,
                 what='the secretless job to be cancelled')  # fmt: skip
        assert panel.wait_status(ids[1], 'started')['slurm_job_id'] == running[1]['slurm_job_id']
    finally:
        panel.stop()
        slurm_cluster.cancel_all()


async def test_a_job_submitted_while_the_queue_is_read_is_not_taken_for_ended(
    tmp_path: Path, slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instances started together: the second job, submitted while the poll for the first
    asked squeue, is missing from that answer. It was taken for ended (its instance recorded as
    stopped, the job left running, forgotten); it must be followed until it really ends."""
    env = {'AIKORE_DATA_DIR': str(tmp_path / 'data'), 'AIKORE_SLURM_CONF': str(slurm_cluster.conf)}
    settings = Settings.from_env({**env, 'AIKORE_SLURM_POLL': '0.1'})
    commands = SlurmCommands(settings)
    queue = HeldCall()  # the real squeue, its answer held back until released
    queue.patch(monkeypatch, commands, 'queue')
    slurm = SlurmExecutor(settings, commands)
    ended: list[str] = []

    async def submit_and_watch(name: str) -> str:
        options = [f'--job-name=aikore-{name}', f'--chdir={tmp_path}', '--wrap=sleep 120']
        job_id = await asyncio.to_thread(commands.submit, options, dict(os.environ))
        slurm.watch(RunHandle(name, 0, None, job_id=job_id), lambda: ended.append(job_id))
        return job_id

    try:
        first = await submit_and_watch('race-a')
        await asyncio.to_thread(queue.asked.wait, 10)  # the poll's squeue has answered, not yet returned
        second = await submit_and_watch('race-b')
        queue.release.set()
        await wait_until(lambda: queue.answers >= 3, 10, 'three looks at the queue')
        assert ended == [], f'taken for ended while Slurm still has them: {ended}\n{slurm_cluster.queue()}'
        for job_id in (first, second):
            await asyncio.to_thread(commands.cancel, job_id)
        await wait_until(lambda: sorted(ended) == sorted([first, second]), 30, 'both cancelled jobs seen ending')
    finally:
        queue.release.set()
        slurm.shutdown()
        slurm_cluster.cancel_all()


async def test_the_jobs_are_still_followed_after_a_look_at_the_queue_fails(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    """The cluster stops answering, and the panel's own step for that fails (the database busy,
    say): the poller went with it, for good (every Stop then waited, no job's end was recorded).
    It logs the fault and looks again: the job's end, once the cluster answers, is seen."""
    live = slurm_cluster.conf.read_text()
    # The same cluster, its controller on a port nobody listens on (answers at once, not in 10 s).
    dead = re.sub(r'SlurmctldPort=\d+', f'SlurmctldPort={free_port()}', live) + '\nMessageTimeout=1\n'
    conf = tmp_path / 'slurm.conf'
    conf.write_text(live)
    env = {'AIKORE_DATA_DIR': str(tmp_path / 'data'), 'AIKORE_SLURM_CONF': str(conf), 'AIKORE_SLURM_POLL': '0.1'}
    slurm = SlurmExecutor(Settings.from_env(env))
    heard: list[datetime | None] = []

    async def reachability(since: datetime | None) -> None:
        heard.append(since)
        if since is not None:
            raise RuntimeError('database is locked')

    slurm.on_reachability = reachability
    ended: list[str] = []
    try:
        options = ['--job-name=aikore-outage', f'--chdir={tmp_path}', '--wrap=sleep 120']
        job_id = await asyncio.to_thread(slurm.commands.submit, options, dict(os.environ))
        slurm.watch(RunHandle('outage', 0, None, job_id=job_id), lambda: ended.append(job_id))
        conf.write_text(dead)
        await wait_until(lambda: len(heard) == 1, 20, 'the outage to be noticed')
        conf.write_text(live)
        await wait_until(lambda: len(heard) == 2, 20, 'the cluster to answer again')
        assert heard[1] is None and not ended
        await asyncio.to_thread(slurm.commands.cancel, job_id)
        await wait_until(lambda: ended == [job_id], 30, 'the cancelled job to be seen ending')
    finally:
        conf.write_text(live)
        slurm.shutdown()
        slurm_cluster.cancel_all()


def test_switching_to_slurm_satellites_and_the_trash(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """A local instance switched to Slurm loses its public port and active flag (a job's port is on
    its node); satellites and Slurm do not mix (a satellite runs its parent's code here); a Slurm
    instance restored from the trash is still one."""
    panel = slurm_panel(tmp_path / 'data', slurm_cluster)
    try:
        local = panel.create('m', 'Echo')
        start(panel, local['id'])
        panel.wait_status(local['id'], 'started')
        assert panel.client.post(f'/instances/{local["id"]}/activate').status_code == 200
        assert panel.client.post(f'/instances/{local["id"]}/stop').status_code == 202
        stopped = panel.wait_status(local['id'], 'stopped')
        assert stopped['active'] and stopped['public_port'] is not None
        switched = panel.client.patch(f'/instances/{local["id"]}', json={'executor': 'slurm'})
        assert switched.status_code == 200, switched.text
        for now in (switched.json(), panel.instance(local['id'])):  # the answer says so
            assert now['executor'] == 'slurm' and now['public_port'] is None and not now['active']

        parent = panel.create('n', 'Echo')
        satellite = panel.client.post(f'/instances/{parent["id"]}/satellites', json={'name': 'n-sat'})
        assert satellite.status_code == 201, satellite.text
        refused = panel.client.patch(f'/instances/{satellite.json()["id"]}', json={'executor': 'slurm'})
        assert refused.status_code == 409 and 'satellite' in refused.text
        refused = panel.client.post(f'/instances/{local["id"]}/satellites', json={'name': 'm-sat'})
        assert refused.status_code == 409 and 'Slurm' in refused.text

        job = panel.create('o', 'SlurmEcho', executor='slurm', gpu_ids=[0, 1], slurm_partition='gpu',
                           slurm_node='vm2', slurm_time_limit='10')  # fmt: skip
        assert panel.client.delete(f'/instances/{job["id"]}').status_code == 204
        restored = panel.client.post('/trash/o/restore')
        assert restored.status_code == 201, restored.text
        back = restored.json()
        assert (back['executor'], back['gpu_ids'], back['public_port']) == ('slurm', [0, 1], None)
        assert (back['slurm_partition'], back['slurm_node'], back['slurm_time_limit']) == ('gpu', 'vm2', '10')
    finally:
        panel.stop()


async def test_the_probe_takes_no_gate_refusal_for_ready(tmp_path: Path) -> None:
    """Through a job's gate, a wrong (or missing) secret gets the gate's 403: not ready, for an
    http check as for a tcp one; the right secret reaches the app."""

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b'\r\n\r\n')
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
        await writer.drain()
        writer.close()

    app_server = await asyncio.start_server(app, '127.0.0.1', 0)
    gate = Gate(b's3cret', app_server.sockets[0].getsockname()[1])
    gate_server = await asyncio.start_server(gate.serve, '127.0.0.1', 0)
    port = gate_server.sockets[0].getsockname()[1]
    try:
        for kind in ('http', 'tcp'):
            for secret, ready in (('wrong', False), ('', False), ('s3cret', True)):
                probe = ReadinessProbe(ReadyCheck(kind), port, tmp_path / 'log', headers={'X-AiKore-Job': secret})
                assert await probe.ready() is ready, (kind, secret)
    finally:
        for server in (gate_server, app_server):
            server.close()
            await server.wait_closed()


def test_a_slurm_instance_is_never_port_mapped_and_ipv6_nodes_are_bracketed() -> None:
    job = Instance(name='j', slug='j', blueprint='Demo', executor=Executor.SLURM, active=True, public_port=9005,
                   status=InstanceStatus.STARTED, internal_port=40000)  # fmt: skip
    assert ports_wanted(job) is None
    assert ports_wanted(Instance(**{**job.model_dump(), 'executor': Executor.LOCAL})) == (9005, 40000)
    assert [upstream_host(a) for a in ('vm1', '10.0.0.7', 'fe80::1')] == ['vm1', '10.0.0.7', '[fe80::1]']
