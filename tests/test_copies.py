"""What a clone's copy takes and leaves (in-process, real files): environments, caches and run
state are left out, links stay links, progress is told, a stop request ends it, and only whole
path segments of the source's folder are rewritten in launch.sh."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

import pytest

from app.services.catalog import copies
from tests.helpers import wait_for


def make_source(root: Path) -> Path:
    source = root / 'src'
    for folder in ('app/__pycache__', 'app/sub', 'env/bin', 'conda/conda-meta', 'logs', 'run', 'tmp', '.cache'):
        (source / folder).mkdir(parents=True)
    (source / 'env' / 'pyvenv.cfg').write_text('home = /usr/bin\n')
    (source / 'app' / 'main.py').write_text('print(1)\n')
    (source / 'app' / 'sub' / 'data.bin').write_bytes(b'\0' * 1000)
    (source / 'app' / '__pycache__' / 'main.pyc').write_bytes(b'x')
    (source / 'logs' / 'output.log').write_text('old run\n')
    (source / '.rebuild').write_text('')
    (source / 'pins.txt').write_text('torch==2.7.1\n')
    (root / 'shared-models').mkdir()
    os.symlink(root / 'shared-models', source / 'app' / 'models')
    return source


def test_copy_leaves_out_environments_caches_and_run_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copies, 'PROGRESS_EVERY', 0.0)
    source = make_source(tmp_path)
    target = tmp_path / 'copy'
    target.mkdir()
    lines: list[str] = []
    counts: list[int] = []
    stats = copies.copy_folder(source, target, threading.Event(), lines.append, lambda s: counts.append(s.files))
    copied = sorted(str(path.relative_to(target)) for path in target.rglob('*'))
    assert copied == ['app', 'app/main.py', 'app/models', 'app/sub', 'app/sub/data.bin', 'pins.txt']
    assert (target / 'app' / 'models').is_symlink()
    assert os.readlink(target / 'app' / 'models') == str(tmp_path / 'shared-models')
    assert stats.files == 4 and stats.bytes == 1000 + len('print(1)\n') + len('torch==2.7.1\n')
    assert stats.environments == 2 and sum('Left out the environment' in line for line in lines) == 2
    assert counts == sorted(counts) and counts[-1] == 4


def test_a_stop_request_ends_the_copy(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    stop = threading.Event()
    stop.set()
    with pytest.raises(copies.CopyCancelled):
        copies.copy_folder(source, tmp_path, stop, lambda _line: None)


def test_files_are_copied_whole_holes_stay_holes_and_fifos_are_left_out(tmp_path: Path) -> None:
    source, target = tmp_path / 'src', tmp_path / 'copy'
    source.mkdir()
    target.mkdir()
    data = os.urandom(copies.CHUNK + 123)
    with (source / 'sparse.bin').open('wb') as handle:
        handle.write(data)
        handle.seek(8 * copies.CHUNK)
        handle.write(b'end')
        handle.truncate(12 * copies.CHUNK + 5)  # ends in a hole
    os.mkfifo(source / 'pipe')  # would block a copy that opened it
    os.utime(source / 'sparse.bin', (1_000_000, 1_000_000))
    stats = copies.copy_folder(source, target, threading.Event(), lambda _line: None)
    assert sorted(path.name for path in target.iterdir()) == ['sparse.bin']
    copied = target / 'sparse.bin'
    assert copied.read_bytes() == (source / 'sparse.bin').read_bytes()
    assert stats.bytes == copied.stat().st_size == 12 * copies.CHUNK + 5
    assert copied.stat().st_blocks * 512 < 4 * copies.CHUNK, 'the holes were not written'
    assert copied.stat().st_mtime == 1_000_000


def test_a_stop_request_ends_the_copy_within_a_huge_file(tmp_path: Path) -> None:
    source, target = tmp_path / 'src', tmp_path / 'copy'
    source.mkdir()
    target.mkdir()
    with (source / 'huge.bin').open('wb') as handle:
        handle.truncate(2**40)  # 1 TiB of holes: hours to read through
    stop = threading.Event()
    failures: list[BaseException] = []

    def copy() -> None:
        try:
            copies.copy_folder(source, target, stop, lambda _line: None)
        except BaseException as exc:
            failures.append(exc)

    # Should the copy write the holes or ignore the stop request, it fails at 1 GiB (EFBIG:
    # Python ignores SIGXFSZ) instead of filling the disk.
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**30, limits[1]))
    worker = threading.Thread(target=copy, daemon=True)
    worker.start()
    try:
        wait_for(lambda: (target / 'huge.bin').exists(), 10, what='the copy of the huge file under way')
    finally:
        stop.set()
        asked = time.monotonic()
        worker.join(timeout=30)
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        for path in (source / 'huge.bin', target / 'huge.bin'):
            path.unlink(missing_ok=True)
    assert not worker.is_alive() and time.monotonic() - asked < 5
    assert len(failures) == 1 and isinstance(failures[0], copies.CopyCancelled)


def test_only_whole_paths_to_the_source_are_rewritten(tmp_path: Path) -> None:
    script = tmp_path / 'launch.sh'
    old, new = Path('/data/instances/src'), Path('/data/instances/copy')
    script.write_text(
        'A=/data/instances/src\nB=/data/instances/src/app\nC=/data/instances/src2/app\nD="/data/instances/src"\n'
    )
    assert copies.rewrite_paths(script, old, new) == 3
    assert script.read_text() == (
        'A=/data/instances/copy\nB=/data/instances/copy/app\nC=/data/instances/src2/app\nD="/data/instances/copy"\n'
    )
