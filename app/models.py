"""SQLModel tables and API schemas.

Follows the full-stack template's split: ``InstanceBase`` holds what a user chooses,
``InstanceCreate``/``InstanceUpdate`` are what the API accepts, ``Instance`` is the table
(user choices + runtime state), ``InstancePublic`` is what the API answers.
Field values are checked by ``app.services.catalog.validation`` so the UI and the API share one set
of rules; the schemas here only fix the types.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, field_serializer
from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from .lifecycle import InstanceStatus as InstanceStatus  # owned by the lifecycle; re-exported


class AccessPattern(StrEnum):
    PORT = 'port'
    SUBDOMAIN = 'subdomain'
    PATH = 'path'


class Executor(StrEnum):
    """Where an instance runs: on this machine, or as a job on a Slurm cluster's nodes."""

    LOCAL = 'local'
    SLURM = 'slurm'


class RestartPolicy(StrEnum):
    NEVER = 'never'
    ON_FAILURE = 'on-failure'


def utc_now() -> datetime:
    """Aware UTC timestamp, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0)


def iso_utc(value: datetime) -> str:
    """``2026-11-21T10:00:00Z`` (a naive value is taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None, microsecond=0).isoformat() + 'Z'


# The shapes of names, one rule each, for validation, the database upgrade and nginx routes.
NAME_MAX = 48  # instance names and slugs
INSTANCE_NAME_RE = re.compile(rf'[A-Za-z0-9][A-Za-z0-9_-]{{0,{NAME_MAX - 1}}}')
SLUG_RE = re.compile(rf'[a-z0-9][a-z0-9_-]{{0,{NAME_MAX - 1}}}')  # a name, lower-cased
# A DNS host name (an instance's custom host: served by nginx, so nothing else may pass)
HOSTNAME_RE = re.compile(r'[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*')
OUTPUT_SEGMENT_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')


class InstanceBase(SQLModel):
    name: str
    blueprint: str
    gpu_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    autostart: bool = False
    persistent: bool = False
    public_port: int | None = None
    access_pattern: AccessPattern = AccessPattern.PORT
    output_path: str | None = None
    restart_policy: RestartPolicy = RestartPolicy.NEVER
    executor: Executor = Executor.LOCAL
    # Slurm only (None: the cluster's default): the partition, a node to run on, the job's time limit
    slurm_partition: str | None = None
    slurm_node: str | None = None
    slurm_time_limit: str | None = None


class InstanceCreate(InstanceBase):
    pass


class InstanceUpdate(SQLModel):
    name: str | None = None
    blueprint: str | None = None
    gpu_ids: list[int] | None = None
    autostart: bool | None = None
    persistent: bool | None = None
    public_port: int | None = None
    access_pattern: AccessPattern | None = None
    output_path: str | None = None
    restart_policy: RestartPolicy | None = None
    custom_hostname: str | None = None  # served like <slug>.<host> too ('' or null: none)
    executor: Executor | None = None
    slurm_partition: str | None = None
    slurm_node: str | None = None
    slurm_time_limit: str | None = None


class Instance(InstanceBase, table=True):
    __tablename__ = 'instances'
    __table_args__ = {'sqlite_autoincrement': True}  # ids of deleted instances are never reused

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(index=True, unique=True, max_length=NAME_MAX)
    status: InstanceStatus = InstanceStatus.STOPPED
    pid: int | None = None
    pid_started_at: float | None = None  # psutil create_time of ``pid``: a PID alone can be reused
    exit_code: int | None = None
    # The port of the current run, else of the last one: kept so the next run gets it again and
    # nginx's routes stay valid (no reload at start or stop). The API shows it only while running.
    internal_port: int | None = None
    active: bool = False
    persistent_port: int | None = None
    persistent_display: int | None = None
    parent_id: int | None = Field(default=None, foreign_key='instances.id')
    restart_count: int = 0
    created_at: datetime = Field(default_factory=utc_now)
    # The host name the original AiKore served this instance on (its use_custom_hostname), kept by
    # the upgrade and shown; the proxy does not route it (the instance's origin is <slug>.<host>).
    custom_hostname: str | None = None
    # A Slurm run: its job, the node it runs on and that node's address (nginx's upstream), what
    # its status waits for ("queued: Resources"), and since when the cluster does not answer.
    slurm_job_id: str | None = None
    node: str | None = None
    node_addr: str | None = None
    status_detail: str | None = None
    cluster_unreachable_since: datetime | None = None


class InstanceUrls(BaseModel):
    open: str | None = None
    view: str | None = None


class InstancePublic(InstanceBase):
    id: int
    slug: str
    status: InstanceStatus
    pid: int | None
    exit_code: int | None
    internal_port: int | None
    active: bool
    restart_count: int = 0
    # The persistent desktop's X display while it is up (None otherwise); its Selkies listens on
    # a unix socket (no port): persistent_port stays None.
    persistent_display: int | None = None
    persistent_port: int | None = None
    urls: InstanceUrls = Field(default_factory=InstanceUrls)
    created_at: datetime
    restart_required: bool | None = None
    # How the app lives under /instance/<slug>/ (its launch.sh metadata, else its blueprint's): keep | strip | none
    path_mode: str = 'keep'
    custom_hostname: str | None = None  # kept from the original AiKore (see Instance.custom_hostname)
    slurm_job_id: str | None = None
    node: str | None = None
    status_detail: str | None = None
    cluster_unreachable_since: datetime | None = None
    # Set on a satellite: the instance whose code, launch script and environment it runs.
    parent_id: int | None = None
    # While a clone is ``installing``: how far its copy got (e.g. "1200 files, 35 MB").
    progress: str | None = None

    @field_serializer('created_at')
    def _created_at_iso(self, value: datetime) -> str:
        return iso_utc(value)

    @field_serializer('cluster_unreachable_since')
    def _unreachable_iso(self, value: datetime | None) -> str | None:
        return iso_utc(value) if value is not None else None


class CloneRequest(SQLModel):
    """A clone: a new name; the other fields default to the source's (the public port to a free one)."""

    name: str
    gpu_ids: list[int] | None = None
    public_port: int | None = None
    output_path: str | None = None
    autostart: bool | None = None
    access_pattern: AccessPattern | None = None
    restart_policy: RestartPolicy | None = None


class SatelliteCreate(SQLModel):
    """A satellite of an instance: its own name, GPUs, public port and output folder."""

    name: str
    gpu_ids: list[int] = Field(default_factory=list)
    public_port: int | None = None
    output_path: str | None = None
    autostart: bool = False
    access_pattern: AccessPattern = AccessPattern.PORT
    restart_policy: RestartPolicy = RestartPolicy.NEVER


class VersionsReport(BaseModel):
    """What runs inside an instance's environment (None: absent or unknown)."""

    environment: str | None  # the venv or conda env checked; None: none found, the system python3 was
    python: str | None
    torch: str | None
    cuda: str | None  # the CUDA runtime torch was built with
    xformers: str | None
    driver: str | None  # the NVIDIA driver of the host
    pip_check: list[str] | None  # `pip check` problems; None when pip is not there


class TrashEntry(BaseModel):
    name: str
    deleted_at: str
    original_name: str
    blueprint: str


class BlueprintInfo(BaseModel):
    name: str
    source: str  # "stock" | "custom"
    category: str
    description: str
    display_name: str
    ready: str
    stall_timeout: float
    gpu: str = ''  # aikore.gpu: required | optional | none ('' when the blueprint does not say)
    disk: str = ''  # aikore.disk: what an install takes, e.g. "20 GB"


class LogChunk(BaseModel):
    text: str
    offset: int
    next_offset: int
    reset: bool


class OrphanFolder(BaseModel):
    """An instance folder with no row in the database (the database was lost or replaced)."""

    name: str
    blueprint: str  # from its launch.sh metadata ('' when it has none)
    adoptable: bool  # the folder's name is a valid instance name not taken by another instance
