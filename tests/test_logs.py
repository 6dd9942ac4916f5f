"""The runner's log writing (order, rotation at line boundaries, exit file) and paged reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.models import LogChunk
from app.services.runtime import logs, runner
from app.services.runtime.supervisor import read_exit_file
from tests.helpers import wait_for

RUNNER = Path(runner.__file__)


def run_runner(
    tmp_path: Path, script: str, max_bytes: int = 1 << 20, backups: int = 3, base: int = 0
) -> tuple[int, Path, Path]:
    log, exit_file = tmp_path / 'output.log', tmp_path / 'exit'
    command = [sys.executable, '-I', '-S', str(RUNNER), '--log', str(log), '--max-bytes', str(max_bytes)]
    command += ['--backups', str(backups), '--cursor-file', str(logs.cursor_path(log)), '--base', str(base)]
    command += ['--exit-file', str(exit_file), '--', 'bash', '-c', script]
    code = subprocess.run(command, timeout=60, check=False).returncode
    return code, log, exit_file


def read_all(log: Path, offset: int = 0, limit: int = 4096) -> tuple[str, list[LogChunk]]:
    """Page through the log the way an API client does, until nothing new comes."""
    chunks = []
    while True:
        chunk = logs.read_chunk(log, offset, limit)
        chunks.append(chunk)
        if not chunk.text:
            return ''.join(c.text for c in chunks), chunks
        offset = chunk.next_offset


def test_runner_keeps_order_and_exit_code(tmp_path: Path) -> None:
    code, log, exit_file = run_runner(tmp_path, 'echo out; echo err >&2; echo out2; exit 7')
    assert code == 7
    assert log.read_text() == 'out\nerr\nout2\n'
    assert read_exit_file(exit_file, None) == 7


def test_runner_reports_signals_shell_style(tmp_path: Path) -> None:
    code, _, exit_file = run_runner(tmp_path, 'kill -9 $$')
    assert code == 137 and read_exit_file(exit_file, None) == 137


def test_runner_rotates_at_line_boundaries_and_loses_nothing(tmp_path: Path) -> None:
    _, log, _ = run_runner(tmp_path, 'seq 1 20000', max_bytes=16 * 1024, backups=20)
    files = [*sorted(tmp_path.glob('output.log.*'), key=lambda p: -int(p.suffix[1:])), log]
    assert len(files) > 3
    for path in files:
        text = path.read_text()
        assert text == '' or text.endswith('\n'), f'{path.name} ends mid-line'
        assert path.stat().st_size <= 16 * 1024 + 64
    numbers = [int(line) for path in files for line in path.read_text().splitlines()]
    assert numbers == list(range(20000 - len(numbers) + 1, 20001))


def test_runner_caps_backups(tmp_path: Path) -> None:
    run_runner(tmp_path, 'seq 1 50000', max_bytes=8 * 1024, backups=2)
    assert sorted(p.name for p in tmp_path.glob('output.log*')) == ['output.log', 'output.log.1', 'output.log.2']


def test_read_chunk_utf8_boundaries(tmp_path: Path) -> None:
    path = tmp_path / 'output.log'
    path.write_bytes('héllo wörld\n'.encode())
    whole = logs.read_chunk(path, 0)
    assert whole.text == 'héllo wörld\n' and whole.next_offset == path.stat().st_size and not whole.reset
    # A limit that cuts 'é' in half stops before it; the next read starts with it.
    first = logs.read_chunk(path, 0, limit=2)
    assert first.text == 'h' and first.next_offset == 1
    assert logs.read_chunk(path, first.next_offset).text.startswith('é')
    later = logs.read_chunk(path, 10_000)  # beyond the end: start over
    assert later.reset and later.offset == 0 and later.text == whole.text
    missing = logs.read_chunk(tmp_path / 'absent.log', 5)
    assert missing.text == '' and missing.reset


def test_paging_follows_rotation_without_gaps(tmp_path: Path) -> None:
    _, log, _ = run_runner(tmp_path, 'seq 1 20000', max_bytes=16 * 1024, backups=20)
    text, chunks = read_all(log)
    assert not any(c.reset for c in chunks)
    assert text.splitlines() == [str(n) for n in range(1, 20001)]


def test_paging_resets_when_text_was_rotated_away(tmp_path: Path) -> None:
    _, log, _ = run_runner(tmp_path, 'seq 1 20000', max_bytes=8 * 1024, backups=2)
    chunk = logs.read_chunk(log, 5)  # that text is gone: three files of about 8 KiB remain
    assert chunk.reset and chunk.offset > 5
    assert chunk.text.splitlines()[0].isdigit()
    text, _ = read_all(log, chunk.offset)
    assert text.splitlines()[-1] == '20000'


def test_a_new_run_resets_readers_of_the_previous_one(tmp_path: Path) -> None:
    _, log, _ = run_runner(tmp_path, 'echo first run; seq 1 100')
    first_text, first = read_all(log)
    old_offset = first[-1].next_offset
    base = logs.next_run_base(log)
    assert base == old_offset
    logs.rotate_for_new_run(log, backups=3)
    run_runner(tmp_path, 'echo second run', base=base)
    fresh = logs.read_chunk(log, old_offset - 10)
    assert fresh.reset and fresh.offset == base and fresh.text == 'second run\n'
    assert logs.read_chunk(log, 0) == fresh.model_copy(update={'reset': False})
    assert first_text.startswith('first run')


def test_rotate_for_new_run(tmp_path: Path) -> None:
    path = tmp_path / 'output.log'
    for run in range(4):
        logs.rotate_for_new_run(path, backups=2)
        path.write_text(f'run {run}\n')
    assert path.read_text() == 'run 3\n'
    assert (tmp_path / 'output.log.1').read_text() == 'run 2\n'
    assert (tmp_path / 'output.log.2').read_text() == 'run 1\n'
    assert not (tmp_path / 'output.log.3').exists()


def test_a_reader_following_a_rotating_log_gets_every_line_once(tmp_path: Path) -> None:
    """The API's reader pages through the log while the runner writes and rotates it (dozens
    of rotations): no reset, no line skipped or repeated."""
    log = tmp_path / 'output.log'
    command = [sys.executable, '-I', '-S', str(RUNNER), '--log', str(log), '--max-bytes', str(16 * 1024)]
    command += ['--backups', '200', '--cursor-file', str(logs.cursor_path(log)), '--base', '0']
    command += ['--exit-file', str(tmp_path / 'exit'), '--', 'seq', '1', '200000']
    writer = subprocess.Popen(command)
    try:
        wait_for(log.exists, 10, what='the log file')
        text, offset, resets = '', 0, 0
        while True:
            chunk = logs.read_chunk(log, offset, 4096)
            resets += chunk.reset
            text += chunk.text
            offset = chunk.next_offset
            if not chunk.text and writer.poll() is not None and not logs.read_chunk(log, offset).text:
                break
    finally:
        writer.kill()
        writer.wait()
    assert resets == 0
    assert text.splitlines() == [str(n) for n in range(1, 200001)]


def test_runner_copies_notes_into_its_log_on_lines_of_their_own(tmp_path: Path) -> None:
    """The panel's lines (the desktop's status) reach the log through the runner's FIFO: the
    runner stays the log's one writer, a note never splits a line, and the FIFO goes with the run."""
    log, fifo, go = tmp_path / 'output.log', tmp_path / 'notes' / 'x.fifo', tmp_path / 'go'
    fifo.parent.mkdir()
    script = f'printf partial; while [ ! -e {go} ]; do sleep 0.05; done; echo done'
    command = [sys.executable, '-I', '-S', str(RUNNER), '--log', str(log), '--max-bytes', str(1 << 20)]
    command += ['--backups', '2', '--cursor-file', str(logs.cursor_path(log)), '--base', '0']
    command += ['--exit-file', str(tmp_path / 'exit'), '--notes', str(fifo), '--', 'bash', '-c', script]
    process = subprocess.Popen(command)
    try:
        wait_for(lambda: fifo.exists() and log.exists() and 'partial' in log.read_text(), what='the run')
        assert logs.send_note(fifo, '[desktop] one')
        assert logs.send_note(fifo, '[desktop] two\nstill one line')
        wait_for(lambda: log.read_text().endswith('line\n'), what='the notes in the log')
        go.touch()
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
    assert log.read_text() == 'partial\n[desktop] one\n[desktop] two still one line\ndone\n'
    assert not fifo.exists()
    assert not logs.send_note(fifo, 'nobody reads this')
    plain = tmp_path / 'plain'
    plain.write_text('')
    assert not logs.send_note(plain, 'not a FIFO') and plain.read_text() == ''


def test_runner_without_a_notes_channel_runs_the_app_anyway(tmp_path: Path) -> None:
    log = tmp_path / 'output.log'
    command = [sys.executable, '-I', '-S', str(RUNNER), '--log', str(log), '--max-bytes', str(1 << 20)]
    command += ['--backups', '2', '--cursor-file', str(logs.cursor_path(log)), '--base', '0']
    command += ['--exit-file', str(tmp_path / 'exit'), '--notes', str(tmp_path / 'missing' / 'x.fifo')]
    assert subprocess.run([*command, '--', 'bash', '-c', 'echo ran'], timeout=60, check=False).returncode == 0
    assert log.read_text().startswith('[aikore] no channel for notes from the panel') and 'ran\n' in log.read_text()


def test_the_banner_is_the_runs_first_line_and_its_number_is_kept(tmp_path: Path) -> None:
    """The panel's "run N started" line is written by the runner as the run's first bytes, so
    it counts in the cursor like any output; the run's number stays in the cursor."""
    log, exit_file = tmp_path / 'output.log', tmp_path / 'exit'
    banner = logs.run_banner(3, 0.0)
    command = [sys.executable, '-I', '-S', str(RUNNER), '--log', str(log), '--max-bytes', str(1 << 20)]
    command += ['--backups', '3', '--cursor-file', str(logs.cursor_path(log)), '--base', '0']
    command += ['--exit-file', str(exit_file), '--run', '3', '--banner', banner, '--', 'echo', 'hello']
    assert subprocess.run(command, timeout=60, check=False).returncode == 0
    assert log.read_text() == f'{banner}\nhello\n'
    assert banner.startswith('──── run 3 started ') and banner.endswith(' ────')
    text, chunks = read_all(log)
    assert text == log.read_text() and chunks[-1].next_offset == log.stat().st_size  # bytes, not characters
    assert logs.read_cursor(log).run == 3


def test_the_separator_starts_a_line_after_a_run_that_ended_mid_line(tmp_path: Path) -> None:
    path = tmp_path / 'output.log'
    assert not logs.ends_mid_line(path)  # no file yet
    path.write_text('')
    assert not logs.ends_mid_line(path)
    path.write_text('10% done\r')
    assert logs.ends_mid_line(path) and logs.run_banner(2, 0.0, True).startswith('\n──── run 2 started ')
    path.write_text('done\n')
    assert not logs.ends_mid_line(path)


def test_a_reader_at_the_end_of_a_run_goes_on_into_the_next(tmp_path: Path) -> None:
    """Between the new run's set-up and its first output, a reader at the end of the last run
    is told nothing new (no reset: a view keeps the last run's text), then reads the new run
    from its separator on."""
    _, log, _ = run_runner(tmp_path, 'echo first run')
    _, chunks = read_all(log)
    end = chunks[-1].next_offset
    cursor = logs.begin_run(log, backups=3)
    assert (cursor.run_base, cursor.run) == (end, 1)
    assert logs.read_chunk(log, end) == LogChunk(text='', offset=end, next_offset=end, reset=False)
    banner = logs.run_banner(cursor.run, 0.0)
    log_, exit_file = str(log), str(tmp_path / 'exit')
    command = [sys.executable, '-I', '-S', str(RUNNER), '--log', log_, '--max-bytes', str(1 << 20), '--backups', '3']
    command += ['--cursor-file', str(logs.cursor_path(log)), '--base', str(end), '--exit-file', exit_file]
    command += ['--run', str(cursor.run), '--banner', banner, '--', 'echo', 'second run']
    subprocess.run(command, timeout=60, check=True)
    chunk = logs.read_chunk(log, end)
    assert not chunk.reset and chunk.text == f'{banner}\nsecond run\n'
    assert logs.begin_run(log, backups=3).run == 2
