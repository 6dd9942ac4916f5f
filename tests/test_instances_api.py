"""Instance configuration through the API: defaults, update (rename, restart_required),
launch script, delete into trash, restore and purge."""

from __future__ import annotations

import httpx

from tests.helpers import Panel, python_server_blueprint


def test_create_defaults_and_listing(panel: Panel) -> None:
    low = int(panel.env['AIKORE_PORT_RANGE'].split('-')[0])
    first = panel.create('alpha')
    second = panel.create('Beta', gpu_ids=[], access_pattern='path', restart_policy='on-failure')
    assert first['slug'] == 'alpha' and second['slug'] == 'beta'
    assert first['public_port'] == low and second['public_port'] == low + 1  # free ports suggested
    assert first['output_path'] == 'alpha'
    assert first['urls'] == {'open': None, 'view': None}
    assert first['created_at'].endswith('Z')
    assert [i['name'] for i in panel.client.get('/instances').json()] == ['alpha', 'Beta']
    assert panel.client.get('/instances/999').status_code == 404
    shared = panel.create('gamma', public_port=low)  # two instances may share a public port
    assert shared['public_port'] == low


def test_update_rename_and_restart_required(panel: Panel) -> None:
    panel.put_blueprint('Server', python_server_blueprint())
    instance = panel.create('old-name', blueprint='Server')
    renamed = panel.client.patch(f'/instances/{instance["id"]}', json={'name': 'New-Name'})
    assert renamed.status_code == 200, renamed.text
    body = renamed.json()
    assert body['name'] == 'New-Name' and body['slug'] == 'new-name' and body['restart_required'] is False
    assert (panel.data_dir / 'instances' / 'New-Name' / 'launch.sh').is_file()
    assert not (panel.data_dir / 'instances' / 'old-name').exists()

    panel.client.post(f'/instances/{instance["id"]}/start')
    panel.wait_status(instance['id'], 'started')
    running = panel.client.patch(f'/instances/{instance["id"]}', json={'name': 'other'})
    assert running.status_code == 409 and 'Stop' in running.json()['detail']
    gpus = panel.client.patch(f'/instances/{instance["id"]}', json={'gpu_ids': [0], 'autostart': True})
    assert gpus.status_code == 200
    assert gpus.json()['restart_required'] is True and gpus.json()['gpu_ids'] == [0]
    cosmetic = panel.client.patch(f'/instances/{instance["id"]}', json={'access_pattern': 'subdomain'})
    assert cosmetic.json()['restart_required'] is False and cosmetic.json()['access_pattern'] == 'subdomain'
    assert panel.client.delete(f'/instances/{instance["id"]}').status_code == 409

    panel.client.post(f'/instances/{instance["id"]}/stop')
    panel.wait_status(instance['id'], 'stopped')
    switched = panel.client.patch(f'/instances/{instance["id"]}', json={'blueprint': 'Demo'})
    assert switched.status_code == 200 and switched.json()['blueprint'] == 'Demo'
    folder = panel.data_dir / 'instances' / 'New-Name'
    assert 'Demo' in (folder / 'launch.sh').read_text()
    assert 'serving' in (folder / 'launch.sh.bak').read_text()
    assert panel.client.patch(f'/instances/{instance["id"]}', json={'name': None}).status_code == 422


def test_script_read_write(panel: Panel) -> None:
    instance = panel.create('scripted')
    original = panel.client.get(f'/instances/{instance["id"]}/script')
    assert original.status_code == 200 and 'AIKORE-METADATA-START' in original.text
    assert original.headers['content-type'].startswith('text/plain')
    edited = original.text + '\n# edited by the user\n'
    assert panel.client.put(f'/instances/{instance["id"]}/script', content=edited.encode()).status_code == 204
    assert panel.client.get(f'/instances/{instance["id"]}/script').text == edited
    # The stock blueprint is untouched.
    assert '# edited by the user' not in panel.client.get('/blueprints/Demo').text


def test_delete_restore_purge(panel: Panel) -> None:
    instance = panel.create('trashy', gpu_ids=[], autostart=True)
    (panel.data_dir / 'instances' / 'trashy' / 'keepme.txt').write_text('precious')
    assert panel.client.delete(f'/instances/{instance["id"]}').status_code == 204
    assert panel.client.get(f'/instances/{instance["id"]}').status_code == 404
    assert not (panel.data_dir / 'instances' / 'trashy').exists()
    trash = panel.client.get('/trash').json()
    assert [t['name'] for t in trash] == ['trashy'] and trash[0]['deleted_at'].endswith('Z')

    # The name is free again; deleting the new one too keeps both in the trash.
    again = panel.create('trashy')
    assert panel.client.delete(f'/instances/{again["id"]}').status_code == 204
    assert sorted(t['name'] for t in panel.client.get('/trash').json()) == ['trashy', 'trashy-2']

    panel.create('trashy')
    assert panel.client.post('/trash/trashy/restore').status_code == 409  # name in use
    restored = panel.client.post('/trash/trashy-2/restore')
    assert restored.status_code == 201 and restored.json()['status'] == 'stopped'
    assert restored.json()['name'] == 'trashy-2'

    by_name = {i['name']: i for i in panel.client.get('/instances').json()}
    assert 'trashy-2' in by_name
    assert panel.client.delete(f'/instances/{by_name["trashy"]["id"]}').status_code == 204
    restored_first = panel.client.post('/trash/trashy/restore').json()
    assert restored_first['autostart'] is True
    assert (panel.data_dir / 'instances' / 'trashy' / 'keepme.txt').read_text() == 'precious'

    entries = panel.client.get('/trash').json()
    for entry in entries:
        assert panel.client.delete(f'/trash/{entry["name"]}').status_code == 204
    assert panel.client.get('/trash').json() == []
    assert panel.client.delete('/trash/nothing').status_code == 404


def test_download_whole_log(panel: Panel) -> None:
    panel.put_blueprint('Server', python_server_blueprint())
    instance = panel.create('chatty', blueprint='Server')
    panel.client.post(f'/instances/{instance["id"]}/start')
    panel.wait_status(instance['id'], 'started')
    with httpx.Client(base_url=panel.url, params={'token': panel.token}, timeout=15) as browser:
        response = browser.get(f'/download/logs/{instance["id"]}')
        assert response.status_code == 200
        assert response.headers['content-disposition'] == 'attachment; filename="chatty.log"'
        assert 'booting chatty' in response.text and 'serving' in response.text
        assert browser.get('/download/logs/999').status_code == 404
