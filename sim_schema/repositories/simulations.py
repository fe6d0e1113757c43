"""Simulations: create, read, list, merge-update, the run lifecycle, and versioned config.

Lifecycle (each transition is one conditional UPDATE, so concurrent callers cannot both
win; a refused one names the simulation, its current status and the transition):

====================  =============================  ===========================
transition            from                           sets
====================  =============================  ===========================
start                 created                        started_at
pause                 running
resume                paused
complete              running, paused                ended_at, step_count, results
fail                  created, running, paused       ended_at, error
abort                 created, running, paused       ended_at, error (the reason)
====================  =============================  ===========================

``completed``, ``failed`` and ``aborted`` are final. A simulation that never started
cannot complete; it can fail or be aborted (setup errors).
"""

from __future__ import annotations

from typing import Any, cast

from psycopg import sql

from .. import readiness
from ..admin import delete_simulation_work
from ..errors import AlreadyExists, LifecycleError, NotFound
from ..models import Simulation, SimulationConfig, SimulationStatus
from ..paging import Cursor
from ._sql import Conn, checked, columns, fetch_one, select_rows

_S = SimulationStatus

# Transition name -> (target status, statuses it may start from).
TRANSITIONS: dict[str, tuple[SimulationStatus, tuple[SimulationStatus, ...]]] = {
    "start": (_S.RUNNING, (_S.CREATED,)),
    "pause": (_S.PAUSED, (_S.RUNNING,)),
    "resume": (_S.RUNNING, (_S.PAUSED,)),
    "complete": (_S.COMPLETED, (_S.RUNNING, _S.PAUSED)),
    "fail": (_S.FAILED, (_S.CREATED, _S.RUNNING, _S.PAUSED)),
    "abort": (_S.ABORTED, (_S.CREATED, _S.RUNNING, _S.PAUSED)),
}
_FINAL = frozenset({_S.COMPLETED, _S.FAILED, _S.ABORTED})

# DO NOTHING on a taken id: RETURNING then yields no row, which the callers interpret.
_INSERT = sql.SQL(
    "INSERT INTO simulations (simulation_id, experiment_id, name, description, parameters,"
    " metadata) VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (simulation_id) DO NOTHING RETURNING {}"
).format(columns(Simulation))


async def create_simulation(
    conn: Conn,
    simulation_id: str,
    *,
    experiment_id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Simulation:
    """A new simulation in status ``created``.

    `AlreadyExists` if the id is taken; `NotFound` if `experiment_id` names no experiment.
    """
    params = tuple(
        checked(
            "simulations", simulation_id=simulation_id, experiment_id=experiment_id, name=name,
            description=description, parameters=parameters or {}, metadata=metadata or {},
        ).values()
    )  # fmt: skip
    row = await fetch_one(conn, Simulation, _INSERT, params)
    if row is None:
        raise AlreadyExists(f"simulation {simulation_id!r} already exists")
    return row


async def find_simulation(conn: Conn, simulation_id: str) -> Simulation | None:
    """The simulation, or None if there is none with this id."""
    query = sql.SQL("SELECT {} FROM simulations WHERE simulation_id = %s").format(
        columns(Simulation)
    )
    return await fetch_one(conn, Simulation, query, (simulation_id,))


async def get_simulation(conn: Conn, simulation_id: str) -> Simulation:
    """The simulation; `NotFound` if there is none with this id."""
    row = await find_simulation(conn, simulation_id)
    if row is None:
        raise NotFound(f"simulation {simulation_id!r} not found")
    return row


async def list_simulations(
    conn: Conn,
    *,
    experiment_id: str | None = None,
    status: SimulationStatus | str | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[Simulation]:
    """Simulations in (created_at, simulation_id) order (oldest first), optionally of one
    experiment and/or in one status; at most `limit`, those after `after`."""
    filters = {"experiment_id": experiment_id, "status": None if status is None else str(status)}
    return await select_rows(
        conn,
        Simulation,
        filters,
        order=("created_at", "simulation_id"),
        limit=limit,
        after=after,
    )


async def update_simulation(
    conn: Conn,
    simulation_id: str,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    results_summary: dict[str, Any] | None = None,
) -> Simulation:
    """Change the given fields; None leaves a field as it is.

    Text fields are replaced. JSONB fields are merged: their top-level keys overwrite the
    stored ones (PostgreSQL ``jsonb || jsonb``), other stored keys stay. Status changes go
    through the lifecycle functions only.
    """
    query = sql.SQL(
        "UPDATE simulations SET"
        " name = COALESCE(%(name)s, name),"
        " description = COALESCE(%(description)s, description),"
        " parameters = parameters || COALESCE(%(parameters)s::jsonb, '{{}}'),"
        " metadata = metadata || COALESCE(%(metadata)s::jsonb, '{{}}'),"
        " results_summary = results_summary || COALESCE(%(results_summary)s::jsonb, '{{}}'),"
        " updated_at = now()"
        " WHERE simulation_id = %(simulation_id)s RETURNING {}"
    ).format(columns(Simulation))
    params = checked(
        "simulations", simulation_id=simulation_id, name=name, description=description,
        parameters=parameters, metadata=metadata, results_summary=results_summary,
    )  # fmt: skip
    row = await fetch_one(conn, Simulation, query, params)
    if row is None:
        raise NotFound(f"simulation {simulation_id!r} not found")
    return row


async def delete_simulation(conn: Conn, simulation_id: str) -> dict[str, int]:
    """Delete the simulation and every row of its data; rows deleted per table."""
    work = delete_simulation_work(simulation_id)
    result = await readiness.run_borrowed_async(conn, work, what="delete", schema=None)
    return cast(dict[str, int], result)


async def _transition(
    conn: Conn,
    simulation_id: str,
    action: str,
    *,
    step_count: int | None = None,
    results_summary: dict[str, Any] | None = None,
    error: str | None = None,
) -> Simulation:
    target, allowed = TRANSITIONS[action]
    query = sql.SQL(
        "UPDATE simulations SET status = %(target)s, updated_at = now(),"
        " started_at = CASE WHEN %(starting)s THEN now() ELSE started_at END,"
        " ended_at = CASE WHEN %(final)s THEN now() ELSE ended_at END,"
        " step_count = COALESCE(%(step_count)s, step_count),"
        " error = COALESCE(%(error)s, error),"
        " results_summary = results_summary || COALESCE(%(results_summary)s::jsonb, '{{}}')"
        " WHERE simulation_id = %(simulation_id)s AND status = ANY(%(allowed)s)"
        " RETURNING {}"
    ).format(columns(Simulation))
    params = {
        "target": str(target),
        "starting": action == "start",
        "final": target in _FINAL,
        **checked(
            "simulations",
            step_count=step_count,
            error=error,
            results_summary=results_summary,
            simulation_id=simulation_id,
        ),
        "allowed": [str(s) for s in allowed],
    }
    row = await fetch_one(conn, Simulation, query, params)
    if row is not None:
        return row
    current = await find_simulation(conn, simulation_id)
    if current is None:
        raise NotFound(f"simulation {simulation_id!r} not found")
    raise LifecycleError(
        f"cannot {action} simulation {simulation_id!r}: it is {current.status.value!r}"
        f" (allowed from {', '.join(repr(s.value) for s in allowed)})"
    )


async def start_simulation(conn: Conn, simulation_id: str) -> Simulation:
    """``created -> running``; sets started_at."""
    return await _transition(conn, simulation_id, "start")


async def pause_simulation(conn: Conn, simulation_id: str) -> Simulation:
    """``running -> paused``."""
    return await _transition(conn, simulation_id, "pause")


async def resume_simulation(conn: Conn, simulation_id: str) -> Simulation:
    """``paused -> running``."""
    return await _transition(conn, simulation_id, "resume")


async def complete_simulation(
    conn: Conn,
    simulation_id: str,
    *,
    step_count: int | None = None,
    results_summary: dict[str, Any] | None = None,
) -> Simulation:
    """``running|paused -> completed``; sets ended_at and step_count, merges results_summary."""
    return await _transition(
        conn, simulation_id, "complete", step_count=step_count, results_summary=results_summary
    )


async def fail_simulation(
    conn: Conn,
    simulation_id: str,
    error: str,
    *,
    step_count: int | None = None,
    results_summary: dict[str, Any] | None = None,
) -> Simulation:
    """``created|running|paused -> failed``; records the error text and ended_at."""
    return await _transition(
        conn,
        simulation_id,
        "fail",
        step_count=step_count,
        results_summary=results_summary,
        error=error,
    )


async def abort_simulation(
    conn: Conn,
    simulation_id: str,
    *,
    reason: str | None = None,
    step_count: int | None = None,
) -> Simulation:
    """``created|running|paused -> aborted``; `reason`, if given, goes into `error`."""
    return await _transition(conn, simulation_id, "abort", step_count=step_count, error=reason)


async def save_simulation_config(conn: Conn, simulation_id: str, config: Any) -> SimulationConfig:
    """Store a new config version: config_id is the simulation's next integer from 0.

    Concurrent saves for one simulation serialize on a lock of the simulation's row
    (``FOR NO KEY UPDATE``: it does not block the ingest of the simulation's data), so ids
    stay dense and unique. `NotFound` if the simulation does not exist.
    """
    lock = "SELECT 1 FROM simulations WHERE simulation_id = %s FOR NO KEY UPDATE"
    # A separate statement after the lock: it gets a snapshot that sees the prior save.
    insert = sql.SQL(
        "INSERT INTO simulation_config (simulation_id, config_id, config)"
        " SELECT %(simulation_id)s, COALESCE(max(config_id) + 1, 0), %(config)s"
        " FROM simulation_config WHERE simulation_id = %(simulation_id)s"
        " RETURNING {}"
    ).format(columns(SimulationConfig))
    params = checked("simulation_config", simulation_id=simulation_id, config=config)
    async with conn.transaction():
        cur = await conn.execute(lock, (simulation_id,))
        if cur.rowcount == 0:
            raise NotFound(f"simulation {simulation_id!r} not found")
        row = await fetch_one(conn, SimulationConfig, insert, params)
    assert row is not None  # INSERT ... SELECT of an aggregate yields exactly one row
    return row


async def get_simulation_config(
    conn: Conn, simulation_id: str, config_id: int | None = None
) -> SimulationConfig:
    """One config version (the latest when `config_id` is None); `NotFound` if none."""
    query = sql.SQL(
        "SELECT {} FROM simulation_config WHERE simulation_id = %(simulation_id)s"
        " AND (%(config_id)s::integer IS NULL OR config_id = %(config_id)s)"
        " ORDER BY config_id DESC LIMIT 1"
    ).format(columns(SimulationConfig))
    params = {"simulation_id": simulation_id, "config_id": config_id}
    row = await fetch_one(conn, SimulationConfig, query, params)
    if row is None:
        which = "config" if config_id is None else f"config {config_id}"
        raise NotFound(f"simulation {simulation_id!r} has no {which}")
    return row


async def list_simulation_configs(
    conn: Conn, simulation_id: str, *, limit: int | None = None, after: Cursor | None = None
) -> list[SimulationConfig]:
    """Every config version of the simulation in config_id order (oldest first); at most
    `limit`, those after `after`."""
    return await select_rows(
        conn,
        SimulationConfig,
        {"simulation_id": simulation_id},
        order=("config_id",),
        limit=limit,
        after=after,
    )
