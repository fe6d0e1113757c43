"""Agents of a simulation: registration (single and batch), deaths, reads.

Registration is an idempotent upsert on ``(simulation_id, agent_id)``: registering an
agent again overwrites its descriptive columns with the new values (so a retried or
repeated registration converges on the last one), keeps its `created_at`, and never
erases a recorded death (`death_step` keeps the stored value when the new one is None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from psycopg import sql

from ..errors import LifecycleError, NotFound, ValidationError
from ..models import Agent, AgentCreate
from ..paging import Cursor
from ._sql import (
    Conn,
    columns,
    excluded_set,
    fetch_one,
    idents,
    insert_sql,
    row_values,
    select_rows,
    translated,
)

_NAMES = tuple(AgentCreate.model_fields)
_KEYS = ("simulation_id", "agent_id")
_ON_CONFLICT = sql.SQL(
    "ON CONFLICT ({}) DO UPDATE SET {},"
    " death_step = COALESCE(EXCLUDED.death_step, agents.death_step)"
).format(
    idents(_KEYS),
    excluded_set([n for n in _NAMES if n not in _KEYS and n != "death_step"]),
)
_UPSERT = insert_sql(AgentCreate, _NAMES, returning=Agent, on_conflict=_ON_CONFLICT)
_UPSERT_MANY = insert_sql(AgentCreate, _NAMES, on_conflict=_ON_CONFLICT)


def _check(agent: AgentCreate, row: int) -> None:
    """The agents table's CHECKs, so a batch reports the row index of a bad agent."""
    if agent.birth_step < 0:
        raise ValidationError("agents", row, "birth_step", f"must be >= 0, got {agent.birth_step}")
    if agent.generation < 0:
        raise ValidationError("agents", row, "generation", f"must be >= 0, got {agent.generation}")
    if agent.death_step is not None and agent.death_step < agent.birth_step:
        raise ValidationError(
            "agents",
            row,
            "death_step",
            f"agent {agent.agent_id!r} dies at step {agent.death_step},"
            f" before its birth at step {agent.birth_step}",
        )


async def register_agent(conn: Conn, agent: AgentCreate) -> Agent:
    """Register (or re-register, see the module doc) one agent; `NotFound` if no simulation."""
    _check(agent, 0)
    row = await fetch_one(conn, Agent, _UPSERT, row_values(agent, _NAMES))
    assert row is not None  # an upsert always returns its row
    return row


async def register_agents(conn: Conn, agents: Sequence[AgentCreate]) -> int:
    """Register many agents in one transaction (all or none); the number of agents given.

    A bad agent is reported by its index in `agents` before anything is written.
    """
    for row, agent in enumerate(agents):
        _check(agent, row)
    if not agents:
        return 0
    async with translated(conn), conn.transaction(), conn.cursor() as cur:
        await cur.executemany(_UPSERT_MANY, [row_values(a, _NAMES) for a in agents])
    return len(agents)


async def find_agent(conn: Conn, simulation_id: str, agent_id: str) -> Agent | None:
    """The agent, or None if the simulation has no agent with this id."""
    query = sql.SQL("SELECT {} FROM agents WHERE simulation_id = %s AND agent_id = %s").format(
        columns(Agent)
    )
    return await fetch_one(conn, Agent, query, (simulation_id, agent_id))


async def get_agent(conn: Conn, simulation_id: str, agent_id: str) -> Agent:
    """The agent; `NotFound` naming agent and simulation if there is none."""
    row = await find_agent(conn, simulation_id, agent_id)
    if row is None:
        raise NotFound(f"agent {agent_id!r} of simulation {simulation_id!r} not found")
    return row


async def list_agents(
    conn: Conn,
    simulation_id: str,
    *,
    agent_type: str | None = None,
    alive_at: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[Agent]:
    """Agents in agent_id order, optionally of one type and/or alive at a step; at most
    `limit`, those after `after`.

    Alive at step s: born at or before s, and not dead at or before s (an agent that dies
    at step s is not alive at s).
    """
    filters = {"simulation_id": simulation_id, "agent_type": agent_type}
    alive = alive_at is not None
    return await select_rows(
        conn,
        Agent,
        filters,
        order=("agent_id",),
        extra="birth_step <= %s AND (death_step IS NULL OR death_step > %s)" if alive else None,
        extra_params=(alive_at, alive_at) if alive else (),
        limit=limit,
        after=after,
    )


async def record_agent_death(conn: Conn, simulation_id: str, agent_id: str, step: int) -> Agent:
    """Set the agent's death_step.

    Repeating the same death is a no-op; `ValidationError` if `step` is before the agent's
    birth, `LifecycleError` if it already died at another step, `NotFound` if no agent.
    """
    query = sql.SQL(
        "UPDATE agents SET death_step = %(step)s"
        " WHERE simulation_id = %(simulation_id)s AND agent_id = %(agent_id)s"
        " AND birth_step <= %(step)s AND (death_step IS NULL OR death_step = %(step)s)"
        " RETURNING {}"
    ).format(columns(Agent))
    params = {"simulation_id": simulation_id, "agent_id": agent_id, "step": step}
    row = await fetch_one(conn, Agent, query, params)
    if row is not None:
        return row
    agent = await get_agent(conn, simulation_id, agent_id)
    if step < agent.birth_step:
        raise ValidationError(
            "agents",
            0,
            "death_step",
            f"agent {agent_id!r} of simulation {simulation_id!r} was born at step"
            f" {agent.birth_step}; it cannot die at step {step}",
        )
    raise LifecycleError(
        f"agent {agent_id!r} of simulation {simulation_id!r} already died at step"
        f" {agent.death_step}; cannot die again at step {step}"
    )


async def record_agent_deaths(conn: Conn, simulation_id: str, deaths: Mapping[str, int]) -> int:
    """Set many agents' death steps in one statement (agent_id -> step), atomically.

    Same rules as `record_agent_death`; if any agent breaks one, nothing is changed and
    the first offending agent is named.
    """
    if not deaths:
        return 0
    ids, steps = list(deaths), list(deaths.values())
    query = sql.SQL(
        "UPDATE agents a SET death_step = d.step"
        " FROM unnest(%s::text[], %s::int[]) AS d(agent_id, step)"
        " WHERE a.simulation_id = %s AND a.agent_id = d.agent_id"
        " AND a.birth_step <= d.step AND (a.death_step IS NULL OR a.death_step = d.step)"
        " RETURNING a.agent_id"
    )
    async with conn.transaction():
        cur = await conn.execute(query, (ids, steps, simulation_id))
        updated = {row[0] for row in await cur.fetchall()}
        missing = [agent_id for agent_id in ids if agent_id not in updated]
        if missing:
            # The single-agent rules raise the precise error; the transaction rolls back.
            await record_agent_death(conn, simulation_id, missing[0], deaths[missing[0]])
            raise LifecycleError(
                f"agent {missing[0]!r} of simulation {simulation_id!r} changed concurrently;"
                " no death recorded"
            )
    return len(ids)
