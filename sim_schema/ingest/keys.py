"""The integer keys of the stored tables: a simulation's `sim_key`, its agents' `agent_key`.

The per-step tables store these instead of the readable ids (docs/schema.md, "Storage").
A writer maps each row's ids to keys before the COPY: an agent that is not registered is
refused then, naming it, which is the check a per-row foreign key used to make. Keys are
never reassigned while a simulation exists (its agents are deleted only with it, and a
simulation created again under the same id gets a new `sim_key`), so a writer caches the
keys it has looked up, per simulation and `sim_key`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from ..values import sendable_text

_AGENT_KEYS = (
    "SELECT agent_id, agent_key FROM agents WHERE simulation_id = %s AND agent_id = ANY(%s)"
)
# Reserves n consecutive keys; the row lock it takes (FOR NO KEY UPDATE) does not conflict
# with the FOR KEY SHARE of ingest batches, so data batches keep going meanwhile.
_RESERVE = (
    "UPDATE simulations SET next_agent_key = next_agent_key + %s"
    " WHERE simulation_id = %s RETURNING next_agent_key - %s"
)


class AgentKeys:
    """`agent_id -> agent_key` per simulation, learnt from the database as rows need them."""

    def __init__(self) -> None:
        self._by_simulation: dict[str, tuple[int, dict[str, int]]] = {}

    def of(self, simulation_id: str, sim_key: int) -> dict[str, int]:
        """The keys known for the simulation whose current key is `sim_key`."""
        entry = self._by_simulation.get(simulation_id)
        if entry is None or entry[0] != sim_key:
            entry = (sim_key, {})
            self._by_simulation[simulation_id] = entry
        return entry[1]

    async def resolve(
        self,
        conn: psycopg.AsyncConnection[Any],
        simulation_id: str,
        sim_key: int,
        agent_ids: Iterable[Any],
    ) -> dict[str, int]:
        """The keys of the simulation, with those of `agent_ids` looked up if not known.

        Only committed agents are found (and cached): an id missing from the result is
        not registered.
        """
        known = self.of(simulation_id, sim_key)
        missing = [a for a in set(agent_ids) if a not in known and sendable_text(a)]
        if missing:
            cur = await conn.execute(_AGENT_KEYS, (simulation_id, missing))
            known.update(await cur.fetchall())
        return known


async def reserve_agent_keys(
    conn: psycopg.AsyncConnection[Any], simulation_id: str, count: int
) -> int:
    """The first of `count` consecutive agent keys reserved for the simulation, in the
    caller's transaction (a rollback gives them back)."""
    cur = await conn.execute(_RESERVE, (count, simulation_id, count))
    row = await cur.fetchone()
    assert row is not None  # the ledger row of the batch made sure the simulation exists
    return int(row[0])
