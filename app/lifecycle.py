"""The lifecycle of an instance: its statuses, the allowed transitions, and the named groups.

Pure (no I/O): every module that asks "may this instance do X now?" asks here, and every
status change is checked against ``TRANSITIONS`` by the one writer of instance rows
(``app.services.catalog.rows``). A new status (``installing`` for a clone, ``queued`` for a
cluster job) is one enum member, one line of the table and, where it applies, a group.
"""

from __future__ import annotations

from enum import StrEnum


class InstanceStatus(StrEnum):
    STOPPED = 'stopped'
    QUEUED = 'queued'  # a cluster job waits for its resources (Slurm's reason in ``status_detail``)
    STARTING = 'starting'
    STARTED = 'started'
    STALLED = 'stalled'
    STOPPING = 'stopping'
    ERROR = 'error'
    INSTALLING = 'installing'  # a clone's folder is being copied (no process; delete = cancel)

    @property
    def is_running(self) -> bool:
        """A process of the instance may exist in this state."""
        return self in RUNNING


S = InstanceStatus

# previous -> the statuses it may change to. A run that ends on its own goes to stopped (code 0)
# or error; a stop goes through stopping; a row whose run the panel no longer holds is set stopped.
TRANSITIONS: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    S.STOPPED: frozenset({S.STARTING, S.QUEUED}),
    S.ERROR: frozenset({S.STARTING, S.QUEUED, S.STOPPED}),
    # A cluster job: submitted -> queued; it runs -> starting (the stall timer starts only then).
    S.QUEUED: frozenset({S.STARTING, S.STOPPING, S.STOPPED, S.ERROR}),
    S.STARTING: frozenset({S.STARTED, S.STALLED, S.STOPPING, S.STOPPED, S.ERROR}),
    S.STALLED: frozenset({S.STARTED, S.STOPPING, S.STOPPED, S.ERROR}),
    S.STARTED: frozenset({S.STOPPING, S.STOPPED, S.ERROR}),
    S.STOPPING: frozenset({S.STOPPED, S.ERROR}),
    S.INSTALLING: frozenset({S.STOPPED, S.ERROR}),  # copied, or failed (or the panel stopped mid-copy)
}

# a process (or a cluster job) may exist
RUNNING = frozenset({S.QUEUED, S.STARTING, S.STARTED, S.STALLED, S.STOPPING})
SERVING = frozenset({S.STARTED, S.STALLED})  # the app answered once: its public port is mapped
READY = frozenset({S.STARTED})  # Open / View URLs exist
ACTIVATABLE = frozenset({S.STARTING, S.STARTED, S.STALLED})  # the port is mapped once the app serves
STARTABLE = frozenset(s for s, targets in TRANSITIONS.items() if S.STARTING in targets) - RUNNING
CANCELLABLE = frozenset({S.INSTALLING})  # deleting it cancels the copy and leaves nothing
DELETABLE = frozenset(S) - RUNNING - CANCELLABLE  # into the trash; also: renaming and changing the blueprint
QUEUED = frozenset({S.QUEUED})  # waiting for a cluster's resources
BUSY = frozenset({S.STARTING, S.STOPPING, S.INSTALLING})  # on the way to another state (the dashboard shows a spinner)


class IllegalTransition(Exception):
    """A status change the table does not allow."""

    def __init__(self, previous: InstanceStatus, new: InstanceStatus) -> None:
        super().__init__(f'{previous} -> {new} is not an allowed transition')
        self.previous = previous
        self.new = new


def allowed(previous: InstanceStatus, new: InstanceStatus) -> bool:
    return new in TRANSITIONS.get(previous, frozenset())


def check(previous: InstanceStatus, new: InstanceStatus) -> None:
    """Raise ``IllegalTransition`` unless ``previous`` may change to ``new``."""
    if not allowed(previous, new):
        raise IllegalTransition(previous, new)


def sources(new: InstanceStatus) -> frozenset[InstanceStatus]:
    """The statuses that may change to ``new`` (the writer's WHERE clause)."""
    return frozenset(s for s, targets in TRANSITIONS.items() if new in targets)
