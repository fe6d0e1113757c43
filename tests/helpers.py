"""Helpers shared by the tests: data made through the module's own API, so that a test
sets up what it needs the way a user would, whatever the tables look like inside."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from sim_schema import repositories as repo
from sim_schema.models import AgentCreate

SCHEMA = "sim"


async def add_simulation(
    aconn: psycopg.AsyncConnection[Any],
    simulation_id: str,
    *,
    agents: int = 0,
    agent_type: str = "prey",
    experiment_id: str | None = None,
) -> str:
    """A simulation with agents `a0`..`a{agents-1}`, made by the repositories."""
    if experiment_id is not None:
        await repo.get_or_create_experiment(aconn, experiment_id, experiment_id)
    await repo.create_simulation(aconn, simulation_id, experiment_id=experiment_id)
    if agents:
        await repo.register_agents(
            aconn,
            [
                AgentCreate(simulation_id=simulation_id, agent_id=f"a{i}", agent_type=agent_type)
                for i in range(agents)
            ],
        )
    return simulation_id


def add_simulation_sync(dsn: str, simulation_id: str, **options: Any) -> str:
    """`add_simulation` for a synchronous test (one short-lived connection of its own)."""

    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, options=f"-c search_path={SCHEMA}"
        ) as aconn:
            return await add_simulation(aconn, simulation_id, **options)

    return asyncio.run(run())


