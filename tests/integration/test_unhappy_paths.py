"""What a user meets when things go wrong: retries decided by SQLSTATE, a permanent failure
that fails only its batch, a server that is down for less or for longer than the retry
budget, a cancelled writer, a context whose status cannot be read, options refused before
anything starts, and the memory kept for failed batches.
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from helpers import add_simulation, pg_ctl, throwaway_server

from sim_schema import repositories as repo
from sim_schema.errors import (
    ConfigurationError,
    ConnectionFailed,
    IngestError,
    NotFound,
    SimSchemaError,
    ValidationError,
)
from sim_schema.ingest.experiment import ExperimentManager
from sim_schema.ingest.logger import RetryPolicy, SimulationLogger, SyncSimulationLogger
from sim_schema.pgerrors import is_transient
from sim_schema.settings import Settings
from sim_schema.store import Store

FAST = RetryPolicy(initial_delay=0.01, max_delay=0.05, timeout=20)


# --- retries by SQLSTATE -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [
        ("08006", True), ("08001", True), ("57P01", True), ("57P02", True), ("57P03", True),
        ("40001", True), ("40P01", True), ("55P03", True), ("57014", True),
        ("53100", False), ("53200", False), ("53300", False), ("54000", False),
        ("23505", False), ("23503", False), ("22P02", False), ("42P01", False),
    ],
)  # fmt: skip
def test_transient_is_decided_by_sqlstate(sqlstate: str, transient: bool) -> None:
    error = psycopg.errors.lookup(sqlstate)("from the server")
    assert is_transient(error) is transient
    assert is_transient(psycopg.OperationalError("server closed the connection"))  # no state
    assert is_transient(ConnectionFailed("no connection"))
    assert not is_transient(ValueError("a bug"))


async def test_a_permanent_error_is_not_retried_and_fails_only_its_batch(
    store: Store, aconn: psycopg.AsyncConnection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A 9,000-character agent id exceeds the B-tree row limit (54000): no retry, and the
    agents logged in the same queued group are written."""
    await add_simulation(aconn, "s")
    huge = "".join(random.Random(1).choices(string.ascii_letters, k=9000))  # incompressible
    logger = SimulationLogger(store, "s", buffer_size=1, max_pending=100, retry=FAST)
    await logger.log_agent("ok-1", "t")
    await logger.log_agent(huge, "t")
    await logger.log_agent("ok-2", "t")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sim_schema.ingest.logger"):
        with pytest.raises(IngestError) as info:
            await logger.close()
    assert "index row" in str(info.value.cause) or "54000" in repr(info.value.cause)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]  # never retried
    agents = [a.agent_id for a in await repo.list_agents(aconn, "s")]
    assert agents == ["ok-1", "ok-2"]
    assert len(logger.errors) == 1
    assert time.monotonic() - started < FAST.timeout  # did not wait out a budget


# --- a server that goes away ---------------------------------------------------------------


@pytest.fixture(scope="module")
def own_server() -> Iterator[tuple[Any, str]]:
    with throwaway_server("sim_schema_outage_") as server:
        yield server


@pytest.mark.slow
async def test_outage_shorter_than_the_budget_loses_nothing(own_server: tuple[Any, str]) -> None:
    server, dsn = own_server
    async with Store(Settings(dsn=dsn, pool_timeout=2)) as store:
        async with store.connection() as conn:
            await add_simulation(conn, "short", agents=1)
        retry = RetryPolicy(initial_delay=0.05, max_delay=1.0, timeout=60, attempt_timeout=5)
        logger = SimulationLogger(store, "short", buffer_size=50, retry=retry)
        for step in range(100):
            await logger.log_agent_state(step, "a0", health=float(step))
        await logger.flush()
        stopped = asyncio.get_running_loop().run_in_executor(
            None, pg_ctl, server, "stop", "-m", "fast"
        )
        await stopped
        for step in range(100, 300):  # logged while the server is down
            await logger.log_agent_state(step, "a0", health=float(step))
        flushing = asyncio.create_task(logger.flush())
        await asyncio.sleep(3)
        back = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, pg_ctl, server, "start")
        await flushing
        recovered = time.monotonic() - back
        await logger.close()
        async with store.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*), count(DISTINCT step), min(step), max(step) FROM agent_states"
                " WHERE simulation_id = 'short'"
            )
            assert await cur.fetchone() == (300, 300, 0, 299)
        assert logger.errors == []
        print(f"flush completed {recovered:.2f}s after the server was started again")


@pytest.mark.slow
async def test_outage_longer_than_the_budget_fails_in_time_with_the_real_cause(
    own_server: tuple[Any, str],
) -> None:
    server, dsn = own_server
    async with Store(Settings(dsn=dsn, pool_timeout=30)) as store:
        async with store.connection() as conn:
            await add_simulation(conn, "long", agents=1)
        retry = RetryPolicy(initial_delay=0.05, max_delay=0.5, timeout=4, attempt_timeout=2)
        logger = SimulationLogger(store, "long", buffer_size=10, retry=retry)
        await asyncio.get_running_loop().run_in_executor(None, pg_ctl, server, "stop", "-m", "fast")
        try:
            for step in range(10):
                await logger.log_agent_state(step, "a0")
            started = time.monotonic()
            with pytest.raises(IngestError) as info:
                await logger.close()
            took = time.monotonic() - started
        finally:
            await asyncio.get_running_loop().run_in_executor(None, pg_ctl, server, "start")
    cause = str(info.value.cause)
    assert isinstance(info.value.cause, ConnectionFailed)
    assert "cannot connect" in cause and "no connection free" not in cause, cause
    assert len(info.value.rows) == 10
    # the budget bounds the wall time, not the pool's 30 s timeout per attempt
    assert took < retry.timeout + retry.attempt_timeout + 5, took


# --- cancellation and clean-up ---------------------------------------------------------------


async def test_a_cancelled_writer_makes_flush_and_close_raise_not_hang(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s", agents=1)
    logger = SimulationLogger(store, "s", buffer_size=1000, flush_interval=3600)
    await logger.log_agent_state(0, "a0")
    [writer] = [t for t in asyncio.all_tasks() if t.get_name() == "sim_schema logger s"]
    writer.cancel()
    await asyncio.sleep(0)
    with pytest.raises(SimSchemaError, match="was cancelled; 1 logged rows were not written"):
        await asyncio.wait_for(logger.flush(), 10)
    with pytest.raises(SimSchemaError, match="was cancelled"):
        await asyncio.wait_for(logger.close(), 10)


async def test_finish_closes_the_logger_even_when_the_status_cannot_be_read(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    async with ExperimentManager(store, "e", name="e") as experiment:
        run = await experiment.create_simulation("gone")
        await run.logger.log_agent("a0", "t")
        await repo.delete_simulation(aconn, "gone")  # the status read will find nothing
        with pytest.raises(NotFound, match="simulation 'gone'") as info:
            await run.finish(None)
        assert run.logger._closed
        assert any("closing the logger failed" in note for note in info.value.__notes__)
        experiment.simulations.clear()  # nothing left for the manager to finish


def test_sync_logger_checks_its_options_before_starting_anything(dsn: str) -> None:
    before = {t.name for t in threading.enumerate()}
    for options in ({"buffer_size": 0}, {"flush_interval": 0}, {"buffer_size": 10, "max_pending": 5}):
        with pytest.raises(ConfigurationError):
            SyncSimulationLogger("s", settings=Settings(dsn=dsn), **options)  # type: ignore[arg-type]
    assert {t.name for t in threading.enumerate()} == before  # no thread, no loop, no pool


async def test_failed_batches_keep_their_rows_up_to_a_cap(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s")
    logger = SimulationLogger(store, "s", buffer_size=4, keep_failed_rows=5, retry=FAST)
    for batch in range(3):  # three batches of four rows of an agent that does not exist
        await logger.log_agent_states([{"step": batch * 4 + i, "agent_id": "ghost"} for i in range(4)])
        with pytest.raises(IngestError):
            await logger.flush()
    kept = [len(e.rows) for e in logger.errors]
    dropped = [e.rows_dropped for e in logger.errors]
    assert kept == [4, 0, 0] and dropped == [0, 4, 4]
    assert "4 of them not kept: over the memory cap" in str(logger.errors[1])
    await logger.close()
