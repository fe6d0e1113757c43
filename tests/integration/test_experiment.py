"""ExperimentManager / SimulationContext lifecycle, with the loggers flushed on exit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from sim_schema.errors import AlreadyExists, IngestError, LifecycleError
from sim_schema.ingest.experiment import ExperimentManager
from sim_schema.settings import Settings
from sim_schema.store import Store


async def statuses(aconn: psycopg.AsyncConnection[Any]) -> dict[str, str]:
    cur = await aconn.execute(
        "SELECT experiment_id, status FROM experiments UNION ALL"
        " SELECT simulation_id, status FROM simulations"
    )
    return dict(await cur.fetchall())


async def test_clean_exit_completes_and_flushes(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    async with ExperimentManager(store, "e1", name="grazing", buffer_size=1000) as exp:
        contexts = [
            await exp.create_simulation(f"e1-{i}", parameters={"seed": i}) for i in range(3)
        ]

        async def run(i: int) -> None:
            logger = contexts[i].logger
            await logger.log_agent("a", "prey")
            for step in range(10):
                await logger.log_agent_state(step, "a", health=float(i))

        await asyncio.gather(*(run(i) for i in range(3)))
        done = await exp.complete_simulation("e1-0", step_count=10, results_summary={"ok": 1})
        assert done.status == "completed" and done.results_summary == {"ok": 1}
    assert await statuses(aconn) == {
        "e1": "completed",
        "e1-0": "completed",
        "e1-1": "completed",
        "e1-2": "completed",
    }
    cur = await aconn.execute(
        "SELECT simulation_id, count(*) FROM agent_states GROUP BY 1 ORDER BY 1"
    )
    assert await cur.fetchall() == [("e1-0", 10), ("e1-1", 10), ("e1-2", 10)]
    cur = await aconn.execute("SELECT parameters FROM simulations WHERE simulation_id = 'e1-2'")
    assert await cur.fetchone() == ({"seed": 2},)


async def test_exception_fails_experiment_and_running_simulations(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with ExperimentManager(store, "e2") as exp:
            ctx = await exp.create_simulation("e2-0")
            await ctx.logger.log_agent("a", "prey")
            await ctx.logger.log_agent_state(0, "a")
            done = await exp.create_simulation("e2-1")
            await done.complete(step_count=0)
            raise RuntimeError("boom")
    assert await statuses(aconn) == {"e2": "failed", "e2-0": "failed", "e2-1": "completed"}
    cur = await aconn.execute("SELECT count(*) FROM agent_states")
    assert await cur.fetchone() == (1,)  # what was logged before the failure is kept
    cur = await aconn.execute("SELECT error FROM simulations WHERE simulation_id = 'e2-0'")
    assert await cur.fetchone() == ("RuntimeError: boom",)


async def test_logger_failure_fails_the_experiment(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    with pytest.raises(IngestError):
        async with ExperimentManager(store, "e3") as exp:
            ctx = await exp.create_simulation("e3-0")
            await ctx.logger.log_agent_state(0, "unregistered")
    assert await statuses(aconn) == {"e3": "failed", "e3-0": "failed"}


async def test_simulation_context_and_reopen(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    async with ExperimentManager(store, "e4") as exp:
        ctx = await exp.create_simulation("e4-0", start=False)
        with pytest.raises(LifecycleError):  # never started: cannot complete
            await ctx.complete()
        await ctx.start()
        async with ctx:
            await ctx.logger.log_event(0, "start")
    assert await statuses(aconn) == {"e4": "completed", "e4-0": "completed"}
    with pytest.raises(LifecycleError, match="completed"):
        async with ExperimentManager(store, "e4"):
            pass


async def test_reopen_a_completed_experiment(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    async with ExperimentManager(store, "e5") as exp:
        await exp.create_simulation("e5-0")
    with pytest.raises(LifecycleError, match=r"completed: .*reopen=True"):
        await ExperimentManager(store, "e5").open()
    async with ExperimentManager(store, "e5", reopen=True) as exp:
        assert exp.experiment is not None and exp.experiment.status == "running"
        assert exp.experiment.completed_at is None
        ctx = await exp.create_simulation("e5-1")
        await ctx.logger.log_event(0, "more")
    assert await statuses(aconn) == {"e5": "completed", "e5-0": "completed", "e5-1": "completed"}
    cur = await aconn.execute("SELECT completed_at IS NOT NULL FROM experiments")
    assert await cur.fetchone() == (True,)


async def test_simulation_id_that_never_started_is_reused(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    async with ExperimentManager(store, "e6") as exp:
        await exp.create_simulation("e6-0", {"seed": 1}, start=False)  # setup crashed
        ctx = await exp.create_simulation("e6-0", {"seed": 2}, name="again")
        await ctx.logger.log_event(0, "go")
        with pytest.raises(AlreadyExists, match=r"'e6-0' already exists \(running"):
            await exp.create_simulation("e6-0")
    cur = await aconn.execute(
        "SELECT status, name, parameters FROM simulations WHERE simulation_id = 'e6-0'"
    )
    assert await cur.fetchone() == ("completed", "again", {"seed": 2})
    async with ExperimentManager(store, "e7") as other:
        with pytest.raises(AlreadyExists, match="in experiment 'e6'"):
            await other.create_simulation("e6-0")
