"""One live run as the supervisor follows it, and the small facts about runs that the
supervisor and its re-adoption share."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .executor import LocalExecutor, RunHandle
from .slurm import SlurmExecutor

AnyExecutor = LocalExecutor | SlurmExecutor


@dataclass(eq=False)
class Run:
    """One live run of an instance, as the supervisor follows it."""

    instance_id: int
    handle: RunHandle
    port: int | None
    stopping: bool = False
    exit_code: int | None = None
    ready_at: float | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    ready_task: asyncio.Task[None] | None = None
    stop_task: asyncio.Task[None] | None = None
    persistent: bool = False  # as it was at start: a change applies at the next start
    desktop_task: asyncio.Task[None] | None = None
    executor: AnyExecutor | None = None  # None: the supervisor's local one
    host: str = '127.0.0.1'  # where the app (a Slurm job: its gate) listens
    probe_headers: dict[str, str] = field(default_factory=dict)  # a Slurm job's gate wants its secret

    @property
    def app_url(self) -> str:
        """The app's internal URL, which the persistent desktop's browser opens."""
        return f'http://127.0.0.1:{self.port}/'

    @property
    def name(self) -> str:
        return self.handle.name


class CorruptRunState(RuntimeError):
    """A file a run left behind cannot be read (reported as a start-up problem)."""


def ended(exit_code: int | None) -> dict[str, Any]:
    """The runtime fields of an instance whose run is over."""
    # internal_port stays for the next run
    return {'exit_code': exit_code, 'pid': None, 'pid_started_at': None, 'status_detail': None}


def append_note(log_file: Path, note: str) -> None:
    """A line of the panel's own in an instance's log (after its run ended: no runner writes it)."""
    with contextlib.suppress(OSError), log_file.open('a', encoding='utf-8') as handle:
        handle.write(note)
