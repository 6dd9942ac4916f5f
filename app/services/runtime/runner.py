"""The process that runs one instance: it is the instance's session and group leader.

It starts the launch script with stdout and stderr on one pipe and writes that pipe, in
order, into ``logs/output.log``, rotating it when it grows past a size cap. When the
script exits it writes the exit code to a small file and exits with the same code. It
needs nothing from the panel: if the panel dies (even SIGKILL), the instance keeps
running and logging, and the next panel reads the exit file.

Run as ``python -I -S runner.py --log F --max-bytes N --backups K --cursor-file F --base N
--exit-file F [--run N --banner TEXT] [--notes FIFO] -- cmd...``; the banner (the panel's
"run N started ..." line) is the run's first line, written by the runner so that it counts in
the run's bytes like any output;
stdlib only, imported by nothing, so it starts in a few milliseconds.

Notes: the panel has lines of its own for this log (the persistent desktop's status and errors).
It must not append to ``output.log`` itself (this process is its only writer: readers count
bytes, and rotation renames the file under a second writer), so the runner makes a FIFO
(``--notes``) and copies whole lines from it into the log, between the app's chunks and starting
on a line of their own. A panel writes a line with one ``write`` of less than PIPE_BUF bytes, so
two notes never mix. The FIFO is opened read-write, so it never reads as ended when no panel has
it open (a panel killed and restarted just opens it again).
"""

from __future__ import annotations

# The C modules, not ``signal`` and ``selectors``: those pull in enum and collections, half of
# this process's start-up CPU (it starts once per instance start; 20 at once compete for it).
import _signal as signal
import errno
import os
import select
import sys
import time

CHUNK = 256 * 1024
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DRAIN_IDLE_SECONDS = 0.3


class RotatingLog:
    """Appends bytes to a file and rotates it (output.log -> .1 -> .2 ...) past a size cap.

    Rotation happens at a line boundary, so lines stay whole (a file may pass the cap by the
    rest of the line in progress); text without line ends (``\r`` progress bars) is written
    at once, never held back.

    Readers page through the log with a cursor that keeps counting across files and runs;
    the cursor file says where this run and the current file start in that count, so a
    reader can find a position in the rotated files instead of losing it.
    """

    def __init__(self, path: str, max_bytes: int, backups: int, cursor_file: str, run_base: int, run: int = 0) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.cursor_file = cursor_file
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        self.lost = 0  # bytes of output dropped while the disk was full (said in the log afterwards)
        self.at_line_start = True  # the last byte written ended a line (a note starts on its own)
        self.run_base = run_base
        self.run = run  # the run's number, kept in the cursor for the next run to count on
        self.file_base = run_base - self.size
        self.save_cursor()

    def save_cursor(self, rotating: bool = False) -> None:
        """``rotating``: the files are about to be renamed; readers wait for the next save."""
        temp = f'{self.cursor_file}.tmp'
        flag = ', "rotating": true' if rotating else ''
        run = f', "run": {self.run}' if self.run else ''
        with open(temp, 'w') as handle:
            handle.write(f'{{"run_base": {self.run_base}, "file_base": {self.file_base}{run}{flag}}}\n')
        os.replace(temp, self.cursor_file)

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, data: bytes) -> None:
        while self.size + len(data) > self.max_bytes:
            room = self.max_bytes - self.size
            # Rotate after the last line that fits, else after the line in progress.
            cut = data.rfind(b'\n', 0, max(room, 0)) + 1 or data.find(b'\n') + 1
            if cut == 0:  # no line end in this chunk: let the line go on, unless it is huge
                if self.size + len(data) <= 2 * self.max_bytes:
                    break
                cut = len(data)
            self._write(data[:cut])
            data = data[cut:]
            if not self.rotate():
                break  # the disk is full: go on in this file (or drop) rather than stop the app
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        """Append ``data``; while the disk is full it is dropped and counted, never fatal: an app
        must not die because its log cannot grow. The first write that fits says what was lost."""
        if not self.say_lost():
            self.lost += len(data)
            return
        if not self._append(data):
            self.lost += len(data)

    def say_lost(self) -> bool:
        """Write where output was dropped and how much, if any was; False while there is no room."""
        if not self.lost:
            return True
        note = f'\n[aikore] {self.lost} bytes of output were lost here: the disk was full\n'.encode()
        if not self._append(note):
            return False
        self.lost = 0
        return True

    def note(self, line: bytes) -> None:
        """A whole line of the panel's, on a line of its own."""
        self.write(line if self.at_line_start else b'\n' + line)

    def _append(self, data: bytes) -> bool:
        if data:
            self.at_line_start = data.endswith(b'\n')
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
                self.size += written
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            return not view  # a part may have been written: the count says only what was not
        return True

    def rotate(self) -> bool:
        """False when the disk is too full even to note the rotation (nothing was renamed)."""
        try:
            self.save_cursor(rotating=True)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            return False
        os.close(self.fd)
        for index in range(self.backups - 1, 0, -1):
            older = f'{self.path}.{index}'
            if os.path.exists(older):
                os.replace(older, f'{self.path}.{index + 1}')
        os.replace(self.path, f'{self.path}.1')
        self.fd = self._open()
        self.file_base += self.size
        self.size = 0
        self.save_cursor()
        return True


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    split = argv.index('--')
    options, command = argv[:split], argv[split + 1 :]
    parsed = {options[i].lstrip('-'): options[i + 1] for i in range(0, len(options), 2)}
    return parsed, command


def spawn(command: list[str], write_fd: int) -> int:
    pid = os.fork()
    if pid == 0:  # child: the launch script, in our process group
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(write_fd, 1)
            os.dup2(write_fd, 2)
            os.execvp(command[0], command)
        except BaseException as exc:
            os.write(2, f'[aikore] cannot start {command[0]}: {exc}\n'.encode())
        os._exit(127)
    return pid


def exit_code(status: int) -> int:
    """Shell convention: the exit status, or 128 + signal number."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


class Notes:
    """The FIFO the panel writes its lines to; whole lines go to the log."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:  # noqa: SIM105 - contextlib would cost this process start-up time
            os.unlink(path)  # a FIFO an earlier run left (its runner was killed)
        except FileNotFoundError:
            pass
        os.mkfifo(path, 0o600)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.pending = b''

    def read(self, log: RotatingLog) -> None:
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        self.pending += data
        end = self.pending.rfind(b'\n') + 1
        if end:
            log.note(self.pending[:end])
            self.pending = self.pending[end:]

    def close(self) -> None:
        os.close(self.fd)
        try:  # noqa: SIM105
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def open_notes(path: str | None, log: RotatingLog) -> Notes | None:
    """The notes FIFO, or None (said in the log) where it cannot be made: the app runs anyway."""
    if not path:
        return None
    try:
        return Notes(path)
    except OSError as exc:
        log.write(f'[aikore] no channel for notes from the panel ({path}): {exc}\n'.encode())
        return None


def pump(read_fd: int, child_pid: int, log: RotatingLog, notes: Notes | None = None) -> int:
    """Copy the pipe to the log until the child exits, then drain what is left."""
    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    if notes is not None:
        poller.register(notes.fd, select.POLLIN)
    pidfd = os.pidfd_open(child_pid)
    poller.register(pidfd, select.POLLIN)
    status: int | None = None
    deadline = 0.0
    while True:
        timeout_ms = None if status is None else max(0.0, deadline - time.monotonic()) * 1000
        events = poller.poll(timeout_ms)
        if status is not None and not events:
            break  # child gone and the pipe stayed quiet: grandchildren may hold it open
        for fd, _ in events:
            if notes is not None and fd == notes.fd:
                notes.read(log)
                continue
            if fd == pidfd:
                poller.unregister(pidfd)
                os.close(pidfd)
                status = os.waitpid(child_pid, 0)[1]
                deadline = time.monotonic() + DRAIN_IDLE_SECONDS
                continue
            data = os.read(read_fd, CHUNK)
            if not data:
                poller.unregister(read_fd)
                if status is None:
                    status = os.waitpid(child_pid, 0)[1]
                return exit_code(status)
            log.write(data)
            if status is not None:
                deadline = time.monotonic() + DRAIN_IDLE_SECONDS
    assert status is not None
    return exit_code(status)


def write_exit_file(path: str, code: int) -> None:
    """Record the exit code; on a full disk there is no room for it: the panel then takes the
    runner's own exit status (the same code) instead."""
    temp = f'{path}.tmp'
    try:
        with open(temp, 'w') as handle:
            handle.write(f'{os.getpid()} {code} {time.time():.3f}\n')
        os.replace(temp, path)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        try:  # noqa: SIM105 - contextlib would cost this process start-up time
            os.unlink(temp)
        except OSError:
            pass


def main(argv: list[str]) -> int:
    options, command = parse_args(argv)
    # SIGTERM to the group is meant for the app; we stay to record how it ended.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    log = RotatingLog(
        options['log'],
        int(options['max-bytes']),
        int(options['backups']),
        options['cursor-file'],
        int(options['base']),
        int(options.get('run', '0')),
    )
    if options.get('banner'):
        log.write(os.fsencode(options['banner']) + b'\n')  # the bytes the panel passed
    notes = open_notes(options.get('notes'), log)
    read_fd, write_fd = os.pipe()
    child = spawn(command, write_fd)
    os.close(write_fd)
    code = pump(read_fd, child, log, notes)
    if notes is not None:
        notes.close()
    log.say_lost()  # if there is room now
    write_exit_file(options['exit-file'], code)
    return code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
