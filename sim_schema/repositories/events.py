"""Events: create, mark processed, and the reads of the event queue."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from psycopg import sql

from ..errors import AlreadyExists, LifecycleError, NotFound
from ..models import Event, EventCreate
from ..values import param
from ._sql import (
    Conn,
    columns,
    fetch_all,
    fetch_one,
    insert_sql,
    row_values,
    select_rows,
)

_NAMES = tuple(EventCreate.model_fields)
_INSERT = insert_sql(
    EventCreate,
    _NAMES,
    returning=Event,
    on_conflict=sql.SQL("ON CONFLICT (simulation_id, event_id) DO NOTHING"),
)


async def create_event(conn: Conn, event: EventCreate) -> Event:
    """Insert an event (its `event_id` is the client's); `AlreadyExists` if the id is taken,
    `NotFound` if the simulation does not exist."""
    row = await fetch_one(conn, Event, _INSERT, row_values(event, _NAMES))
    if row is None:
        raise AlreadyExists(
            f"event {event.event_id} of simulation {event.simulation_id!r} already exists"
        )
    return row


async def get_event(conn: Conn, simulation_id: str, event_id: UUID) -> Event:
    """The event; `NotFound` if the simulation has no event with this id."""
    rows = await select_rows(
        conn, Event, {"simulation_id": simulation_id, "event_id": event_id}, order="event_id"
    )
    if not rows:
        raise NotFound(f"event {event_id} of simulation {simulation_id!r} not found")
    return rows[0]


async def mark_event_processed(
    conn: Conn, simulation_id: str, event_id: UUID, result: Any = None
) -> Event:
    """Mark an unprocessed event processed with its result (any JSON value) and processed_at.

    Only one caller can process an event: `LifecycleError` if it already was (so two
    workers sharing the queue learn which one lost), `NotFound` if there is no such event.
    """
    query = sql.SQL(
        "UPDATE events SET processed = true, processing_result = %s, processed_at = now()"
        " WHERE simulation_id = %s AND event_id = %s AND NOT processed RETURNING {}"
    ).format(columns(Event))
    params = (param("events", "processing_result", result), simulation_id, event_id)
    row = await fetch_one(conn, Event, query, params)
    if row is not None:
        return row
    current = await get_event(conn, simulation_id, event_id)
    raise LifecycleError(
        f"event {event_id} of simulation {simulation_id!r} was already processed"
        f" at {current.processed_at}"
    )


async def list_unprocessed_events(
    conn: Conn, simulation_id: str, *, limit: int | None = None
) -> list[Event]:
    """The work queue: unprocessed events by priority (highest first), then step, then age."""
    query = sql.SQL(
        "SELECT {} FROM events WHERE simulation_id = %s AND NOT processed"
        " ORDER BY priority DESC, step, created_at, event_id LIMIT %s"
    ).format(columns(Event))
    return await fetch_all(conn, Event, query, (simulation_id, limit))


async def list_agent_events(
    conn: Conn,
    simulation_id: str,
    agent_id: str,
    *,
    role: Literal["source", "target"] | None = None,
) -> list[Event]:
    """Events the agent sent (`role="source"`), received (`"target"`) or either, by step."""
    if role == "source":
        condition = sql.SQL("source_id = %(agent_id)s")
    elif role == "target":
        condition = sql.SQL("target_id = %(agent_id)s")
    else:
        condition = sql.SQL("(source_id = %(agent_id)s OR target_id = %(agent_id)s)")
    query = sql.SQL(
        "SELECT {} FROM events WHERE simulation_id = %(simulation_id)s AND {}"
        " ORDER BY step, created_at, event_id"
    ).format(columns(Event), condition)
    return await fetch_all(
        conn, Event, query, {"simulation_id": simulation_id, "agent_id": agent_id}
    )


async def list_events(
    conn: Conn,
    simulation_id: str,
    *,
    event_type: str | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
) -> list[Event]:
    """Events in step order, optionally of one type and within steps [start_step, end_step]."""
    return await select_rows(
        conn,
        Event,
        {"simulation_id": simulation_id, "event_type": event_type},
        order="step, created_at, event_id",
        start_step=start_step,
        end_step=end_step,
    )
