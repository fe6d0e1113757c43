"""Agent states and actions, one row at a time (bulk ingest goes through the COPY writer)."""

from __future__ import annotations

from ..errors import NotFound
from ..models import AgentAction, AgentState, record_rows
from ..paging import Cursor
from ..read import sqllib
from ._sql import Conn, insert_record, select_rows, upsert_stored


async def save_agent_state(conn: Conn, state: AgentState) -> AgentState:
    """Write the agent's state at a step, replacing a stored one; `NotFound` if no agent."""
    await upsert_stored(conn, state)
    return state


async def get_agent_state(conn: Conn, simulation_id: str, agent_id: str, step: int) -> AgentState:
    """The agent's state at `step`; `NotFound` if none was stored."""
    rows = await select_rows(
        conn,
        AgentState,
        {"simulation_id": simulation_id, "step": step, "agent_id": agent_id},
        order=("step",),
    )
    if not rows:
        raise NotFound(
            f"no state of agent {agent_id!r} at step {step} in simulation {simulation_id!r}"
        )
    return rows[0]


async def latest_agent_state(conn: Conn, simulation_id: str, agent_id: str) -> AgentState | None:
    """The agent's state at its highest stored step, None if it has none
    (`sql/agent_latest.sql`): `profile`, `memory` and `relationships` are each the latest
    value logged (a step that left one NULL does not hide an earlier value), `profile`
    falling back to the registration profile."""
    query, params = sqllib.bound(
        "agent_latest", {"simulation_id": simulation_id, "agent_id": agent_id}
    )
    rows = await sqllib.fetch_async(conn, record_rows(AgentState), query, params)
    return rows[0] if rows else None


async def list_agent_states(
    conn: Conn,
    simulation_id: str,
    *,
    step: int | None = None,
    agent_id: str | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[AgentState]:
    """States in (step, agent_id) order: a step's snapshot (`step`), an agent's history
    (`agent_id`), optionally within steps [start_step, end_step]; at most `limit`, those
    after `after` (the last state of the previous page)."""
    return await select_rows(
        conn,
        AgentState,
        {"simulation_id": simulation_id, "step": step, "agent_id": agent_id},
        order=("step", "agent_id"),
        start_step=start_step,
        end_step=end_step,
        limit=limit,
        after=after,
    )


async def record_agent_action(conn: Conn, action: AgentAction) -> AgentAction:
    """Insert one action; the returned record carries its ordinal (the next one of the
    agent at that step unless given)."""
    row = await insert_record(conn, action, AgentAction, generated="ordinal")
    assert row is not None  # a plain INSERT ... RETURNING returns its row
    return row


async def list_agent_actions(
    conn: Conn,
    simulation_id: str,
    *,
    agent_id: str | None = None,
    step: int | None = None,
    action_type: str | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[AgentAction]:
    """Actions in (step, agent_id, ordinal) order, filtered by the arguments given; at
    most `limit`, those after `after`."""
    filters = {
        "simulation_id": simulation_id,
        "agent_id": agent_id,
        "step": step,
        "action_type": action_type,
    }
    return await select_rows(
        conn,
        AgentAction,
        filters,
        order=("step", "agent_id", "ordinal"),
        start_step=start_step,
        end_step=end_step,
        limit=limit,
        after=after,
    )
