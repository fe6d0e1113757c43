"""Faults during a flush: a killed backend, a lost acknowledgement, retries running out.

Each ends with exactly the rows logged (count and content) or, for a permanent failure,
with the unwritten rows in the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
import pytest
from helpers import add_simulation

from sim_schema.ingest.writer import BulkWriter, CopyBatch
from sim_schema.errors import IngestError
from sim_schema.ingest.logger import RetryPolicy, SimulationLogger
from sim_schema.settings import Settings
from sim_schema.store import Store

FAST = RetryPolicy(attempts=5, initial_delay=0.01, max_delay=0.05)


@pytest.fixture
async def store(dsn: str, aconn: psycopg.AsyncConnection[Any]) -> AsyncIterator[Store]:
    await add_simulation(aconn, "s", agents=10)
    async with Store(Settings(dsn=dsn)) as s:
        yield s


def expected_rows(steps: int) -> list[tuple[Any, ...]]:
    return [
        (step, f"a{a}", step * 0.25, {"k": [step, a]}) for step in range(steps) for a in range(10)
    ]


async def log_rows(logger: SimulationLogger, steps: int) -> None:
    for step, agent, health, memory in expected_rows(steps):
        await logger.log_agent_state(step, agent, health=health, memory=memory)


async def stored(aconn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cur = await aconn.execute(
        "SELECT step, agent_id, health, memory FROM agent_states ORDER BY step, agent_id"
    )
    return await cur.fetchall()


async def test_backend_killed_during_flush(
    store: Store, aconn: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    logger = SimulationLogger(store, "s", buffer_size=100, flush_interval=3600, retry=FAST)
    async with await psycopg.AsyncConnection.connect(dsn, options="-c search_path=sim") as locker:
        await locker.execute("LOCK TABLE agent_states IN SHARE MODE")  # the COPY will wait
        await log_rows(logger, 30)  # 3 batches sealed, the first one blocked in COPY
        killed = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not killed:
            assert loop.time() < deadline, "the COPY never started"
            cur = await aconn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE 'COPY%%agent_states%%'"
            )
            killed = len(await cur.fetchall())
            await asyncio.sleep(0.01)
        await locker.rollback()
    await logger.close()
    assert await stored(aconn) == expected_rows(30)
    assert logger.rows_written == 300 and logger.errors == []
    cur = await aconn.execute("SELECT count(*), sum(row_count) FROM ingest_batches")
    assert await cur.fetchone() == (3, 300)


class LosesFirstAcknowledgements(BulkWriter):
    """Commits, then fails as if the connection dropped before the COMMIT reply arrived."""

    def __init__(self, losses: int) -> None:
        super().__init__()
        self.losses = losses
        self.lost_batches = 0  # batches whose commit was acknowledged to nobody

    async def write_many(
        self,
        conn: psycopg.AsyncConnection[Any],
        table: str,
        simulation_id: str,
        batches: Sequence[CopyBatch],
        **options: Any,
    ) -> list[bool]:
        written = await super().write_many(conn, table, simulation_id, batches, **options)
        if any(written) and self.losses:
            self.losses -= 1
            self.lost_batches += sum(written)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return written


async def test_lost_acknowledgement_does_not_duplicate(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    writer = LosesFirstAcknowledgements(losses=2)
    logger = SimulationLogger(store, "s", buffer_size=50, retry=FAST, writer=writer)
    await log_rows(logger, 20)
    await logger.close()
    assert await stored(aconn) == expected_rows(20)
    # a lost acknowledgement covers every batch of its transaction (the writer groups them)
    assert writer.lost_batches >= 2
    assert logger.batches_replayed == writer.lost_batches
    assert logger.rows_written == 200 - 50 * writer.lost_batches
    cur = await aconn.execute("SELECT count(*), sum(row_count) FROM ingest_batches")
    assert await cur.fetchone() == (4, 200)


class AlwaysDown(BulkWriter):
    async def write_many(self, *args: Any, **kwargs: Any) -> list[bool]:
        raise psycopg.OperationalError("connection refused")


async def test_retries_run_out_and_rows_are_returned(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    logger = SimulationLogger(
        store,
        "s",
        buffer_size=10,
        retry=RetryPolicy(attempts=3, initial_delay=0.01),
        writer=AlwaysDown(),
    )
    await log_rows(logger, 1)
    with pytest.raises(IngestError) as info:
        await logger.flush()
    assert isinstance(info.value.cause, psycopg.OperationalError)
    assert [
        (r["step"], r["agent_id"], r["health"], r["memory"]) for r in info.value.rows
    ] == expected_rows(1)  # type: ignore[index]
    await logger.close()
    assert await stored(aconn) == []


async def test_server_side_cancel_is_retried(
    store: Store, aconn: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    """A statement cancelled by the server (QueryCanceled, e.g. a timeout) is transient."""
    logger = SimulationLogger(store, "s", buffer_size=100, flush_interval=3600, retry=FAST)
    async with await psycopg.AsyncConnection.connect(dsn, options="-c search_path=sim") as locker:
        await locker.execute("LOCK TABLE agent_states IN SHARE MODE")
        await log_rows(logger, 10)
        flushing = asyncio.create_task(logger.flush())
        cancelled = 0
        while not cancelled:
            cur = await aconn.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE 'COPY%%agent_states%%'"
            )
            cancelled = len(await cur.fetchall())
            await asyncio.sleep(0.01)
        await locker.rollback()
    await flushing
    await logger.close()
    assert await stored(aconn) == expected_rows(10)
