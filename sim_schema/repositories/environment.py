"""Environment state snapshots, one JSON document per simulation step."""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.rows import class_row

from ..errors import NotFound
from ..models import EnvironmentState
from ..paging import Cursor
from ..read import sqllib
from ._sql import Conn, checked, columns, fetch_one, select_rows


async def save_environment_state(
    conn: Conn, simulation_id: str, step: int, state: Any
) -> EnvironmentState:
    """Store the state of `step`, replacing a stored one; `NotFound` if no simulation."""
    query = sql.SQL(
        "INSERT INTO environment_states (simulation_id, step, state) VALUES (%s, %s, %s)"
        " ON CONFLICT (simulation_id, step) DO UPDATE SET state = EXCLUDED.state,"
        " created_at = now() RETURNING {}"
    ).format(columns(EnvironmentState))
    params = checked("environment_states", simulation_id=simulation_id, step=step, state=state)
    row = await fetch_one(conn, EnvironmentState, query, tuple(params.values()))
    assert row is not None  # an upsert always returns its row
    return row


async def get_environment_state(conn: Conn, simulation_id: str, step: int) -> EnvironmentState:
    """The state stored for `step`; `NotFound` if none."""
    rows = await select_rows(
        conn, EnvironmentState, {"simulation_id": simulation_id, "step": step}, order=("step",)
    )
    if not rows:
        raise NotFound(f"no environment state at step {step} in simulation {simulation_id!r}")
    return rows[0]


async def latest_environment_state(conn: Conn, simulation_id: str) -> EnvironmentState | None:
    """The state of the highest stored step, or None if the simulation has none
    (`sql/environment_latest.sql`)."""
    query, params = sqllib.bound("environment_latest", {"simulation_id": simulation_id})
    rows = await sqllib.fetch_async(conn, class_row(EnvironmentState), query, params)
    return rows[0] if rows else None


async def list_environment_states(
    conn: Conn,
    simulation_id: str,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[EnvironmentState]:
    """Stored states in step order, optionally within steps [start_step, end_step]; at
    most `limit`, those after `after`."""
    return await select_rows(
        conn,
        EnvironmentState,
        {"simulation_id": simulation_id},
        order=("step",),
        start_step=start_step,
        end_step=end_step,
        limit=limit,
        after=after,
    )
