"""Events: create, read, and the event queue that worker pools share.

The queue (docs/operations.md, "The event queue"): a worker claims events with
`claim_events`, which stamps them with its name and a lease end in one statement
(`FOR UPDATE SKIP LOCKED`: concurrent workers never get the same event), then completes
each with `mark_event_processed(..., worker=...)`, gives it back with `release_event`,
or reports a failure with `fail_event`, which puts it back for another attempt or, after
`max_attempts` claims, dead-letters it. A worker that dies loses nothing: when its lease
ends its events are claimed again, and if it comes back, its completion is refused
(`LifecycleError`) and overwrites nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from uuid import UUID

from psycopg import sql

from ..errors import AlreadyExists, ConfigurationError, LifecycleError, NotFound
from ..models import Event, EventCreate
from ..paging import Cursor
from ..values import param
from ._sql import (
    Conn,
    columns,
    fetch_all,
    fetch_one,
    insert_sql,
    order_by,
    row_values,
    select_rows,
)

DEFAULT_MAX_ATTEMPTS = 5  # claims before a failing event is dead-lettered

_NAMES = tuple(EventCreate.model_fields)
_INSERT = insert_sql(
    EventCreate,
    _NAMES,
    returning=Event,
    on_conflict=sql.SQL("ON CONFLICT (simulation_id, event_id) DO NOTHING"),
)
EVENT_ORDER = ("step", "created_at", "event_id")
QUEUE_ORDER = ("-priority", "step", "created_at", "event_id")  # the claim order
_CLAIMABLE = (
    "NOT processed AND dead_lettered_at IS NULL"
    " AND (claimed_until IS NULL OR claimed_until <= now())"
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
        conn, Event, {"simulation_id": simulation_id, "event_id": event_id}, order=("event_id",)
    )
    if not rows:
        raise NotFound(f"event {event_id} of simulation {simulation_id!r} not found")
    return rows[0]


# --- the queue ---------------------------------------------------------------------------


def _check_claim_options(worker: str, limit: int, lease_seconds: float, attempts: int) -> None:
    if not isinstance(worker, str) or not worker:
        raise ConfigurationError(f"worker must be a non-empty name, got {worker!r}")
    if type(limit) is not int or limit < 1:
        raise ConfigurationError(f"limit must be an int >= 1, got {limit!r}")
    if not lease_seconds > 0:
        raise ConfigurationError(f"lease_seconds must be > 0, got {lease_seconds!r}")
    if type(attempts) is not int or attempts < 1:
        raise ConfigurationError(f"max_attempts must be an int >= 1, got {attempts!r}")


# One statement: the pick skips rows other claims hold locked, and READ COMMITTED re-checks
# a picked row's claim when it locks it. Every CASE tests `e.attempts`, the locked row's
# current value: an event out of attempts is dead-lettered instead of claimed.
_GIVE_UP = "e.attempts >= %(max_attempts)s"
_CLAIM = sql.SQL(
    "WITH picked AS MATERIALIZED ("
    " SELECT event_id FROM events WHERE simulation_id = %(simulation_id)s AND " + _CLAIMABLE
    + " {types} ORDER BY {order}"
    " LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    " UPDATE events e SET"
    " claimed_by = CASE WHEN " + _GIVE_UP + " THEN e.claimed_by ELSE %(worker)s END,"
    " claimed_until = CASE WHEN NOT " + _GIVE_UP
    + " THEN now() + %(lease)s * interval '1 second' END,"
    " attempts = CASE WHEN " + _GIVE_UP + " THEN e.attempts ELSE e.attempts + 1 END,"
    " dead_lettered_at = CASE WHEN " + _GIVE_UP + " THEN now() END,"
    " last_error = CASE WHEN " + _GIVE_UP + " THEN concat_ws('; ', e.last_error,"
    " 'given up after ' || e.attempts || ' attempts: the last lease ('"
    " || coalesce(e.claimed_by, 'no worker') || ') ended without a result')"
    " ELSE e.last_error END"
    " FROM picked WHERE e.simulation_id = %(simulation_id)s AND e.event_id = picked.event_id"
    " RETURNING {columns}"
)


def _claim_sql(with_types: bool) -> sql.Composed:
    types = sql.SQL("AND event_type = ANY(%(event_types)s)" if with_types else "")
    return _CLAIM.format(
        types=types,
        order=order_by(QUEUE_ORDER),
        columns=sql.SQL(", ").join(sql.Identifier("e", n) for n in Event.model_fields),
    )


_CLAIM_ANY, _CLAIM_TYPES = _claim_sql(False), _claim_sql(True)


def _queue_key(e: Event) -> tuple[Any, ...]:
    return (-e.priority, e.step, e.created_at, e.event_id)


async def claim_events(
    conn: Conn,
    simulation_id: str,
    *,
    worker: str,
    limit: int = 1,
    lease_seconds: float = 60.0,
    event_types: Sequence[str] | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[Event]:
    """Claim up to `limit` events for `worker` for `lease_seconds`, in queue order (highest
    priority first, then step, then age); fewer, or none, when the queue holds fewer.

    An event is claimable when it is unprocessed, not dead-lettered, and unclaimed or its
    lease has ended. Concurrent callers never get the same event (`FOR UPDATE SKIP
    LOCKED`: rows another claim is taking are skipped, not waited for). Each claim counts
    an attempt (`Event.attempts`). An event whose lease ended on its `max_attempts`-th
    attempt (its worker died, or hung, every time) is dead-lettered here, not claimed.
    `event_types`: only events of these types.
    """
    _check_claim_options(worker, limit, lease_seconds, max_attempts)
    query = _CLAIM_ANY if event_types is None else _CLAIM_TYPES
    claimed: list[Event] = []
    while len(claimed) < limit:
        params = {
            "simulation_id": simulation_id,
            "worker": param("events", "claimed_by", worker),
            "limit": limit - len(claimed),
            "lease": float(lease_seconds),
            "max_attempts": max_attempts,
            "event_types": None if event_types is None else list(event_types),
        }
        rows = await fetch_all(conn, Event, query, params)
        got = [e for e in rows if e.dead_lettered_at is None]
        claimed += got
        if len(got) == len(rows):  # nothing dead-lettered: the queue gave what it had
            break
    return sorted(claimed, key=_queue_key)


_COMPLETE = sql.SQL(
    "UPDATE events SET processed = true, processing_result = %(result)s,"
    " processed_at = now(), claimed_by = %(worker)s,"
    " claimed_until = NULL"
    " WHERE simulation_id = %(simulation_id)s AND event_id = %(event_id)s"
    " AND NOT processed AND dead_lettered_at IS NULL"
    " AND (CASE WHEN %(worker)s::text IS NULL"
    " THEN claimed_by IS NULL OR claimed_until IS NULL OR claimed_until <= now()"
    " ELSE claimed_by = %(worker)s END)"
    " RETURNING {}"
).format(columns(Event))


async def mark_event_processed(
    conn: Conn,
    simulation_id: str,
    event_id: UUID,
    result: Any = None,
    *,
    worker: str | None = None,
) -> Event:
    """Mark an event processed with its result (any JSON value) and processed_at.

    With `worker`: only while that worker holds the event's claim (`claim_events`). A
    worker whose lease ended and whose event was claimed again (or released, or failed)
    gets `LifecycleError` and changes nothing. Without `worker` (a single process, no
    claims): any unprocessed event that no worker holds a live claim on. `LifecycleError`
    if it was processed already (so the loser of a race learns it lost) or dead-lettered;
    `NotFound` if there is no such event.
    """
    params = {
        "result": param("events", "processing_result", result),
        "worker": worker,
        "simulation_id": simulation_id,
        "event_id": event_id,
    }
    row = await fetch_one(conn, Event, _COMPLETE, params)
    if row is not None:
        return row
    raise _refused(await get_event(conn, simulation_id, event_id), worker, "complete")


def _refused(event: Event, worker: str | None, action: str) -> LifecycleError:
    """Why `worker` may not `action` the event, as it is now."""
    which = f"event {event.event_id} of simulation {event.simulation_id!r}"
    if event.processed:
        by = f" by worker {event.claimed_by!r}" if event.claimed_by else ""
        return LifecycleError(f"cannot {action} {which}: it was already processed{by}"
                              f" at {event.processed_at}")
    if event.dead_lettered_at is not None:
        return LifecycleError(
            f"cannot {action} {which}: it was dead-lettered at {event.dead_lettered_at}"
            f" after {event.attempts} attempt(s) (last error: {event.last_error!r});"
            " requeue_event puts it back"
        )
    if worker is None:
        return LifecycleError(
            f"cannot {action} {which}: worker {event.claimed_by!r} holds its claim until"
            f" {event.claimed_until}; pass worker= to act as that worker"
        )
    if event.claimed_by is None:
        return LifecycleError(
            f"cannot {action} {which}: worker {worker!r} does not hold its claim (it is not"
            " claimed: released, failed, or never claimed); nothing was changed"
        )
    return LifecycleError(
        f"cannot {action} {which}: it is claimed by worker {event.claimed_by!r} (until"
        f" {event.claimed_until}), not by {worker!r}, whose lease ended before; nothing was"
        " changed"
    )


_HELD = (
    " WHERE simulation_id = %(simulation_id)s AND event_id = %(event_id)s"
    " AND NOT processed AND dead_lettered_at IS NULL AND claimed_by = %(worker)s"
)


async def _update_held(
    conn: Conn, query: sql.Composed, params: dict[str, Any], action: str
) -> Event:
    row = await fetch_one(conn, Event, query, params)
    if row is not None:
        return row
    event = await get_event(conn, params["simulation_id"], params["event_id"])
    raise _refused(event, params["worker"], action)


_FAIL = sql.SQL(
    "UPDATE events SET last_error = %(error)s,"
    " dead_lettered_at = CASE WHEN %(give_up)s OR attempts >= %(max_attempts)s"
    " THEN now() END,"
    " claimed_by = CASE WHEN %(give_up)s OR attempts >= %(max_attempts)s"
    " THEN claimed_by END,"
    " claimed_until = CASE WHEN NOT (%(give_up)s OR attempts >= %(max_attempts)s)"
    " AND %(delay)s > 0 THEN now() + %(delay)s * interval '1 second' END" + _HELD
    + " RETURNING {}"
).format(columns(Event))


async def fail_event(
    conn: Conn,
    simulation_id: str,
    event_id: UUID,
    error: str,
    *,
    worker: str,
    retry: bool = True,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_delay: float = 0.0,
) -> Event:
    """Record that `worker`'s attempt failed with `error` (kept in `last_error`).

    `retry` and fewer than `max_attempts` claims so far: the claim is released and the
    event can be claimed again, after `retry_delay` seconds. Otherwise it is dead-lettered
    (`dead_lettered_at`; never claimed again unless `requeue_event`). `LifecycleError` if
    the worker does not hold the claim (see `mark_event_processed`).
    """
    if type(max_attempts) is not int or max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
    if not retry_delay >= 0:
        raise ConfigurationError(f"retry_delay must be >= 0 seconds, got {retry_delay!r}")
    params = {
        "error": param("events", "last_error", error),
        "give_up": not retry,
        "max_attempts": max_attempts,
        "delay": float(retry_delay),
        "simulation_id": simulation_id,
        "event_id": event_id,
        "worker": worker,
    }
    return await _update_held(conn, _FAIL, params, "fail")


_RELEASE = sql.SQL(
    "UPDATE events SET claimed_by = NULL, claimed_until = NULL,"
    " attempts = GREATEST(attempts - 1, 0)" + _HELD + " RETURNING {}"
).format(columns(Event))


async def release_event(conn: Conn, simulation_id: str, event_id: UUID, *, worker: str) -> Event:
    """Give a claimed event back untouched (a worker shutting down): it is claimable at
    once and the attempt is not counted. `LifecycleError` if the worker does not hold it."""
    params = {"simulation_id": simulation_id, "event_id": event_id, "worker": worker}
    return await _update_held(conn, _RELEASE, params, "release")


_EXTEND = sql.SQL(
    "UPDATE events SET claimed_until = now() + %(lease)s * interval '1 second'" + _HELD
    + " RETURNING {}"
).format(columns(Event))


async def extend_lease(
    conn: Conn, simulation_id: str, event_id: UUID, *, worker: str, lease_seconds: float
) -> Event:
    """Extend `worker`'s claim to `lease_seconds` from now (a heartbeat for long work).
    `LifecycleError` if the worker no longer holds it."""
    if not lease_seconds > 0:
        raise ConfigurationError(f"lease_seconds must be > 0, got {lease_seconds!r}")
    params = {
        "lease": float(lease_seconds),
        "simulation_id": simulation_id,
        "event_id": event_id,
        "worker": worker,
    }
    return await _update_held(conn, _EXTEND, params, "extend the lease of")


_REQUEUE = sql.SQL(
    "UPDATE events SET dead_lettered_at = NULL, attempts = 0, claimed_by = NULL,"
    " claimed_until = NULL"
    " WHERE simulation_id = %s AND event_id = %s AND dead_lettered_at IS NOT NULL"
    " RETURNING {}"
).format(columns(Event))


async def requeue_event(conn: Conn, simulation_id: str, event_id: UUID) -> Event:
    """Put a dead-lettered event back in the queue with its attempts reset (its
    `last_error` is kept). `LifecycleError` if it is not dead-lettered."""
    row = await fetch_one(conn, Event, _REQUEUE, (simulation_id, event_id))
    if row is not None:
        return row
    event = await get_event(conn, simulation_id, event_id)
    raise LifecycleError(
        f"cannot requeue event {event_id} of simulation {simulation_id!r}: it is not"
        f" dead-lettered ({'processed' if event.processed else 'in the queue'})"
    )


# --- reads -------------------------------------------------------------------------------


async def list_unprocessed_events(
    conn: Conn,
    simulation_id: str,
    *,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[Event]:
    """The queue as it stands: unprocessed events that are not dead-lettered, claimed or
    not, in claim order (priority highest first, then step, created_at, event_id).

    To take work, use `claim_events`: a list read here is not a claim, and every worker
    reading it sees the same events.
    """
    return await select_rows(
        conn,
        Event,
        {"simulation_id": simulation_id},
        order=QUEUE_ORDER,
        extra="NOT processed AND dead_lettered_at IS NULL",
        limit=limit,
        after=after,
    )


_ROLES = {
    "source": "source_id = %s",
    "target": "target_id = %s",
    None: "(source_id = %s OR target_id = %s)",
}


async def list_agent_events(
    conn: Conn,
    simulation_id: str,
    agent_id: str,
    *,
    role: Literal["source", "target"] | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[Event]:
    """Events the agent sent (`role="source"`), received (`"target"`) or either, in
    (step, created_at, event_id) order."""
    if role not in _ROLES:
        raise ConfigurationError(f"role must be 'source', 'target' or None, got {role!r}")
    condition = _ROLES[role]
    return await select_rows(
        conn,
        Event,
        {"simulation_id": simulation_id},
        order=EVENT_ORDER,
        extra=condition,
        extra_params=[agent_id] * condition.count("%s"),
        limit=limit,
        after=after,
    )


async def list_events(
    conn: Conn,
    simulation_id: str,
    *,
    event_type: str | None = None,
    source_id: str | None = None,
    target_id: str | None = None,
    processed: bool | None = None,
    dead_lettered: bool | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[Event]:
    """Events in (step, created_at, event_id) order, filtered by the arguments given:
    type, sender, receiver, processed or not, dead-lettered or not, steps within
    [start_step, end_step]; at most `limit`, those after `after` (the last event of the
    previous page)."""
    filters = {
        "simulation_id": simulation_id,
        "event_type": event_type,
        "source_id": source_id,
        "target_id": target_id,
        "processed": processed,
    }
    dead = {None: None, True: "dead_lettered_at IS NOT NULL", False: "dead_lettered_at IS NULL"}
    return await select_rows(
        conn,
        Event,
        filters,
        order=EVENT_ORDER,
        start_step=start_step,
        end_step=end_step,
        extra=dead[dead_lettered],
        limit=limit,
        after=after,
    )
