"""Database access for instances (the template's ``crud.py``): short sessions, plain rows."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import update as sa_update
from sqlalchemy.engine import Engine
from sqlmodel import select

from ...db import session_scope
from ...models import Instance, InstancePublic, InstanceStatus
from ..errors import NotFound

MAX_ID = 2**63


def get(engine: Engine, instance_id: int) -> Instance:
    if not 0 <= instance_id < MAX_ID:  # SQLite integers are 64-bit; larger ids exist nowhere
        raise NotFound(f'No instance with id {instance_id}')
    with session_scope(engine) as session:
        instance = session.get(Instance, instance_id)
    if instance is None:
        raise NotFound(f'No instance with id {instance_id}')
    return instance


def find_by_slug(engine: Engine, slug: str) -> Instance | None:
    with session_scope(engine) as session:
        return session.exec(select(Instance).where(Instance.slug == slug)).first()


def list_all(engine: Engine) -> list[Instance]:
    with session_scope(engine) as session:
        return list(session.exec(select(Instance).order_by(Instance.id)))  # type: ignore[arg-type]


def list_in_states(engine: Engine, states: Collection[InstanceStatus]) -> list[Instance]:
    with session_scope(engine) as session:
        query = select(Instance).where(Instance.status.in_(states))  # type: ignore[attr-defined]
        return list(session.exec(query))


def add(engine: Engine, instance: Instance) -> Instance:
    with session_scope(engine) as session:
        session.add(instance)
        session.flush()
        session.refresh(instance)
    return instance


def update(
    engine: Engine, instance_id: int, *, only_from: Collection[InstanceStatus] | None = None, **fields: Any
) -> Instance | None:
    """Write ``fields`` and answer the row as committed, in one statement (UPDATE ... RETURNING),
    so the answer never mixes a write with a row read before another writer's commit.
    ``only_from``: write only while the status is one of these (checked by the same statement);
    None when it was not (or the row is gone: ``get`` tells which)."""
    if not 0 <= instance_id < MAX_ID:
        raise NotFound(f'No instance with id {instance_id}')
    statement = sa_update(Instance).where(Instance.id == instance_id)  # type: ignore[arg-type]
    if only_from is not None:
        statement = statement.where(Instance.status.in_(only_from))  # type: ignore[attr-defined]
    statement = statement.values(**fields).returning(Instance)
    with session_scope(engine) as session:
        instance = session.scalars(statement, execution_options={'synchronize_session': False}).first()
    if instance is None and only_from is None:
        raise NotFound(f'No instance with id {instance_id}')
    return instance


def delete(engine: Engine, instance_id: int) -> None:
    with session_scope(engine) as session:
        instance = session.get(Instance, instance_id)
        if instance is not None:
            session.delete(instance)


def public_ports(engine: Engine) -> set[int]:
    """The public ports assigned to any instance."""
    with session_scope(engine) as session:
        return {port for port in session.exec(select(Instance.public_port)) if port is not None}


def to_public(instance: Instance) -> InstancePublic:
    public = InstancePublic.model_validate(instance, from_attributes=True)
    if not instance.status.is_running:
        public.internal_port = None  # the table keeps the last run's port (see Instance.internal_port)
    return public


def route_ports(engine: Engine) -> dict[int, int]:
    """Instance id -> the internal port it runs on or last ran on (nginx routes to these).
    Two columns, no objects: it runs at every start."""
    query = select(Instance.id, Instance.internal_port).where(Instance.internal_port.is_not(None))  # type: ignore[union-attr]
    with session_scope(engine) as session:
        return {row[0]: row[1] for row in session.exec(query) if row[0] is not None and row[1] is not None}


def satellites_of(engine: Engine, instance_id: int) -> list[Instance]:
    """The satellites of an instance (rows whose ``parent_id`` is it)."""
    with session_scope(engine) as session:
        query = select(Instance).where(Instance.parent_id == instance_id).order_by(Instance.id)  # type: ignore[arg-type]
        return list(session.exec(query))
