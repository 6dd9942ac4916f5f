"""A damaged database stops the panel with one clear sentence naming the file and what to do,
keeps a copy of the damaged file, and never shows a traceback or an empty panel."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from tests.helpers import REPO, Panel, free_port


def run_panel(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m app`` on ``data_dir``; it must give up quickly on its own."""
    env = {**os.environ, 'AIKORE_DATA_DIR': str(data_dir), 'AIKORE_PORT': str(free_port()), 'AIKORE_NGINX': 'off'}
    return subprocess.run([sys.executable, '-m', 'app'], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def assert_refused(result: subprocess.CompletedProcess[str], db: Path, *words: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert 'Traceback' not in output, output
    last = output.strip().splitlines()[-1]
    assert last.startswith('aikore: ') and str(db) in last, last
    for word in words:
        assert word in last, (word, last)
    return last


def test_garbage_file_is_refused_with_a_sentence(tmp_path: Path) -> None:
    data = tmp_path / 'data'
    data.mkdir()
    db = data / 'aikore.db'
    db.write_bytes(os.urandom(64 * 1024))
    assert_refused(run_panel(data), db, 'not a readable SQLite database', 'backup')
    assert len(db.read_bytes()) == 64 * 1024, 'the file was left as it was'


def test_damaged_page_is_detected_at_start_and_a_copy_kept(tmp_path: Path) -> None:
    data = tmp_path / 'data'
    panel = Panel(data, AIKORE_NGINX='off', AIKORE_STOP_ON_EXIT='1').start()
    try:
        for index in range(40):  # enough rows for the table to span several pages
            panel.create(f'row-{index:02d}-' + 'x' * 30)
    finally:
        panel.stop()
    db = data / 'aikore.db'
    with closing(sqlite3.connect(db)) as conn:
        conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')
        page_size = conn.execute('PRAGMA page_size').fetchone()[0]
        pages = conn.execute('PRAGMA page_count').fetchone()[0]
    assert pages >= 3, pages
    with db.open('r+b') as handle:  # scribble over a page in the middle, keep the header intact
        handle.seek(page_size * (pages // 2) + 16)
        handle.write(os.urandom(page_size - 32))
    damaged = db.read_bytes()
    line = assert_refused(run_panel(data), db, 'damaged', 'backup')
    copies = list(data.glob('aikore.db.damaged-*'))
    assert len(copies) == 1 and copies[0].read_bytes() == damaged, (copies, line)
    assert copies[0].name in line
