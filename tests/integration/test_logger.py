"""SimulationLogger: flush by size and age, back-pressure, permanent failures, concurrency,
every table through the logger, and the synchronous facade."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
from helpers import add_simulation, add_simulation_sync
from psycopg import sql

from sim_schema.errors import IngestError, ValidationError
from sim_schema.ids import replay_id
from sim_schema.ingest.logger import SimulationLogger, SyncSimulationLogger
from sim_schema.settings import Settings
from sim_schema.store import Store


async def new_sim(aconn: psycopg.AsyncConnection[Any], simulation_id: str, agents: int = 0) -> None:
    await add_simulation(aconn, simulation_id, agents=agents)


async def count(aconn: psycopg.AsyncConnection[Any], table: str, simulation_id: str) -> int:
    cur = await aconn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE simulation_id = %s").format(sql.Identifier(table)),
        (simulation_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def until(check: Callable[[], Awaitable[bool]], limit: float = 20.0) -> None:
    """Poll a condition (not a timing assertion: the limit only stops a hung test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_flush_by_size(store: Store, aconn: psycopg.AsyncConnection[Any]) -> None:
    await new_sim(aconn, "s", agents=1)
    logger = SimulationLogger(store, "s", buffer_size=10, flush_interval=3600)
    for step in range(25):
        await logger.log_agent_state(step, "a0", health=float(step))
    await until(lambda: _equals(count(aconn, "agent_states", "s"), 20))
    assert logger.pending == 5
    await logger.close()
    assert await count(aconn, "agent_states", "s") == 25
    cur = await aconn.execute("SELECT row_count FROM ingest_batches ORDER BY committed_at")
    assert [r[0] for r in await cur.fetchall()] == [10, 10, 5]


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_flush_by_age(store: Store, aconn: psycopg.AsyncConnection[Any]) -> None:
    await new_sim(aconn, "s", agents=1)
    logger = SimulationLogger(store, "s", buffer_size=1000, flush_interval=0.2)
    for step in range(5):
        await logger.log_agent_state(step, "a0")
    await until(lambda: _equals(count(aconn, "agent_states", "s"), 5))
    assert logger.pending == 0
    await logger.close()


@pytest.mark.parametrize("chunk", [1, 7])
async def test_back_pressure_bounds_memory(
    store: Store, aconn: psycopg.AsyncConnection[Any], dsn: str, chunk: int
) -> None:
    await new_sim(aconn, "s", agents=1)
    logger = SimulationLogger(store, "s", buffer_size=10, max_pending=30, flush_interval=3600)
    logged = 0
    highest = 0

    async def produce() -> None:
        nonlocal logged, highest
        for first in range(0, 300, chunk):
            steps = range(first, min(first + chunk, 300))
            if chunk == 1:
                await logger.log_agent_state(first, "a0")
            else:
                await logger.log_agent_states([{"step": s, "agent_id": "a0"} for s in steps])
            logged += len(steps)
            highest = max(highest, logger.pending)

    async with await psycopg.AsyncConnection.connect(dsn, options="-c search_path=sim") as locker:
        await locker.execute("LOCK TABLE agent_states IN SHARE MODE")  # COPY now waits
        producer = asyncio.create_task(produce())
        await until(lambda: _waiting_copy(aconn))
        await until(lambda: _true(logger.pending == 30))
        await until(lambda: _true(logger.blocked))  # the producer waits for room
        assert not producer.done()
        assert logged <= 30 and logger.pending <= 30
        await locker.rollback()
    await producer
    await logger.close()
    assert highest <= 30
    assert await count(aconn, "agent_states", "s") == 300


def test_sync_logger_back_pressure(dsn: str, conn: psycopg.Connection[Any]) -> None:
    add_simulation_sync(dsn, "s", agents=1)
    log = SyncSimulationLogger(
        "s", settings=Settings(dsn=dsn), buffer_size=10, max_pending=30, handoff=5
    )
    logged = 0

    def produce() -> None:
        nonlocal logged
        for step in range(300):
            log.log_agent_state(step, "a0")
            logged += 1

    with psycopg.connect(dsn, options="-c search_path=sim") as locker:
        locker.execute("LOCK TABLE agent_states IN SHARE MODE")
        producer = threading.Thread(target=produce)
        producer.start()
        for _ in range(1000):  # poll (bounded) until the COPY waits for the lock
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE 'COPY%%agent_states%%'"
            ).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.02)
        for _ in range(1000):  # poll (bounded) until the producer waits for room
            if log.logger.blocked:
                break
            time.sleep(0.02)
        assert log.logger.blocked and producer.is_alive()
        assert logged <= 30 + 5  # the async logger's bound plus one local chunk
        locker.rollback()
    producer.join()
    log.close()
    assert conn.execute("SELECT count(*) FROM agent_states").fetchone() == (300,)


async def _true(value: bool) -> bool:
    return value


async def _waiting_copy(aconn: psycopg.AsyncConnection[Any]) -> bool:
    cur = await aconn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND query LIKE 'COPY%%agent_states%%'"
    )
    row = await cur.fetchone()
    return row is not None and row[0] > 0


async def test_unknown_agent_is_reported_with_row_and_rows_kept(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await new_sim(aconn, "s", agents=2)
    logger = SimulationLogger(store, "s", buffer_size=10, flush_interval=3600)
    for i in range(10):
        await logger.log_agent_state(i, "ghost" if i == 7 else "a1", age=i)
    await until(lambda: _true(bool(logger.errors)))
    with pytest.raises(IngestError) as info:  # surfaces on the next log call
        await logger.log_agent_state(11, "a1")
    error = info.value
    assert (error.table, error.batch) == ("agent_states", 1)
    assert isinstance(error.cause, ValidationError)
    assert (error.cause.row, error.cause.field) == (7, "agent_id")
    assert "'ghost' is not registered in simulation 's'" in error.cause.reason
    assert error.rows[7] == {**error.rows[7], "agent_id": "ghost", "step": 7}
    await logger.log_agent_state(12, "a1")  # the failure was reported: logging goes on
    await logger.close()
    assert await count(aconn, "agent_states", "s") == 1


async def test_a_value_that_cannot_be_stored_refuses_the_whole_call(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """A log call is all or nothing: row 500 of 1000 holds a lone surrogate in its JSON,
    the call raises naming table, row and field, and none of its rows is taken."""
    await new_sim(aconn, "s", agents=1)
    logger = SimulationLogger(store, "s", buffer_size=100, flush_interval=3600)
    await logger.log_agent_states([{"step": i, "agent_id": "a0"} for i in range(4)])
    rows = [{"step": 10 + i, "agent_id": "a0", "memory": {"note": "ok"}} for i in range(1000)]
    rows[500]["memory"] = {"note": "\udcff"}
    with pytest.raises(ValidationError) as info:
        await logger.log_agent_states(rows)
    assert (info.value.table, info.value.row, info.value.field) == ("agent_states", 500, "memory")
    assert "surrogate" in str(info.value)
    assert logger.pending == 4  # the earlier call only
    with pytest.raises(ValidationError, match=r"agent_states row 0 field 'agent_id'.*surrogate"):
        await logger.log_agent_state(5, "a\udcff")
    with pytest.raises(ValidationError, match=r"row 0 field 'memory'.*JSON"):
        await logger.log_agent_state(4, "a0", memory={"bad": float("nan")})
    await logger.log_action(0, "a0", "move")
    await logger.close()
    assert logger.errors == []
    assert await count(aconn, "agent_states", "s") == 4
    assert await count(aconn, "agent_actions", "s") == 1


async def test_an_unknown_agent_is_an_ingest_error_of_its_batch(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """What only the database can tell (a key it does not know) fails the batch, later."""
    await new_sim(aconn, "s", agents=1)
    logger = SimulationLogger(store, "s", buffer_size=100, flush_interval=3600)
    await logger.log_agent_states([{"step": i, "agent_id": "a0"} for i in range(4)])
    await logger.log_agent_state(4, "nobody")
    await logger.log_action(0, "a0", "move")
    with pytest.raises(IngestError) as info:
        await logger.close()
    assert isinstance(info.value.cause, ValidationError)
    assert (info.value.cause.row, info.value.cause.field) == (4, "agent_id")
    assert len(info.value.rows) == 5
    assert await count(aconn, "agent_states", "s") == 0
    assert await count(aconn, "agent_actions", "s") == 1  # other batches are still written


async def test_every_table_through_the_logger(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s")
    async with SimulationLogger(store, "s", buffer_size=3) as logger:
        await logger.log_agents([{"agent_id": f"a{i}", "agent_type": "prey"} for i in range(4)])
        await logger.log_agent("a9", "predator", parent_ids=["a0"], profile={"bio": "😀"})
        for step in range(4):
            await logger.log_agent_state(step, "a9", health=1.0, profile={"mood": "ok"})
            await logger.log_action(step, "a9", "eat", reward=0.5, details={"food": step})
            await logger.log_resource_state(step, 1, 10.0 - step)
            await logger.log_step(step, total_agents=5, births=0, metrics={"x": step})
            await logger.log_learning_experience(step, "a9", "dqn", reward=0.1)
            await logger.log_health_incident(step, "a9", "hunger", health_before=1.0)
            await logger.log_interaction(step, "agent", "a9", "agent", "a0", "attack")
        event_id = await logger.log_event(0, "birth", source_id="a9", payload={"n": 1})
        ids = await logger.log_events([{"step": 1, "event_type": "death"}])
    expected = {
        "agents": 5, "agent_states": 4, "agent_actions": 4, "resource_states": 4,
        "simulation_steps": 4, "learning_experiences": 4, "health_incidents": 4,
        "interactions": 4, "events": 2,
    }  # fmt: skip
    assert {t: await count(aconn, t, "s") for t in expected} == expected
    cur = await aconn.execute("SELECT event_id, event_type FROM events ORDER BY step")
    assert await cur.fetchall() == [(event_id, "birth"), (ids[0], "death")]
    assert event_id == replay_id("s", 0, 0) and ids[0] == replay_id("s", 1, 0)


async def test_eight_simulations_log_concurrently(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    sims = [f"sim-{i}" for i in range(8)]
    for sim in sims:
        await new_sim(aconn, sim, agents=20)

    async def run(sim: str) -> None:
        async with SimulationLogger(store, sim, buffer_size=200) as logger:
            for step in range(50):
                for a in range(20):
                    await logger.log_agent_state(step, f"a{a}", health=step / 7, extras={"s": sim})

    await asyncio.gather(*(run(sim) for sim in sims))
    for sim in sims:
        cur = await aconn.execute(
            "SELECT step, agent_id, health, extras FROM agent_states WHERE simulation_id = %s"
            " ORDER BY step, agent_id",
            (sim,),
        )
        expected = sorted(
            ((step, f"a{a}", step / 7, {"s": sim}) for step in range(50) for a in range(20)),
            key=lambda r: (r[0], r[1]),
        )
        assert await cur.fetchall() == expected


def test_sync_logger(dsn: str, conn: psycopg.Connection[Any]) -> None:
    add_simulation_sync(dsn, "s")
    settings = Settings(dsn=dsn)
    with SyncSimulationLogger("s", settings=settings, buffer_size=50, handoff=7) as log:
        for a in range(10):
            log.log_agent(f"a{a}", "prey")
        event_ids = []
        for step in range(100):
            for a in range(10):
                log.log_agent_state(step, f"a{a}", health=1.0)
            event_ids.append(log.log_event(step, "tick"))
        log.flush()
        assert conn.execute("SELECT count(*) FROM agent_states").fetchone() == (1000,)
        log.log_action(100, "a0", "rest")
        assert log.pending == 1
    assert log.pending == 0
    assert conn.execute("SELECT count(*) FROM agent_actions").fetchone() == (1,)
    got = conn.execute("SELECT event_id FROM events ORDER BY step").fetchall()
    assert [r[0] for r in got] == event_ids


def test_sync_logger_surfaces_permanent_failure(dsn: str, conn: psycopg.Connection[Any]) -> None:
    add_simulation_sync(dsn, "s")
    log = SyncSimulationLogger("s", settings=Settings(dsn=dsn), buffer_size=5)
    for step in range(5):
        log.log_agent_state(step, "nobody")
    with pytest.raises(IngestError) as info:
        log.close()
    assert info.value.table == "agent_states" and len(info.value.rows) == 5
    assert conn.execute("SELECT count(*) FROM agent_states").fetchone() == (0,)


async def test_duplicate_agent_names_the_later_row(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await new_sim(aconn, "s", agents=1)  # a0 exists already
    logger = SimulationLogger(store, "s")
    await logger.log_agents([{"agent_id": i, "agent_type": "prey"} for i in ("b1", "b2", "b1")])
    await logger.log_agent("a0", "prey")
    with pytest.raises(IngestError) as info:
        await logger.flush()
    assert isinstance(info.value.cause, ValidationError)
    assert (info.value.cause.row, info.value.cause.field) == (2, "agent_id")
    assert "duplicate key" in info.value.cause.reason
    assert [r["agent_id"] for r in info.value.rows] == ["b1", "b2", "b1", "a0"]  # type: ignore[index]
    await logger.close()
    cur = await aconn.execute("SELECT agent_id FROM agents ORDER BY agent_id")
    assert await cur.fetchall() == [("a0",)]


async def _log_while_copy_blocked(
    dsn: str,
    aconn: psycopg.AsyncConnection[Any],
    logger: SimulationLogger,
    rows: list[tuple[int, str, int]],
) -> None:
    """Log `rows` (step, agent, age) while a lock holds the writer's first COPY, so the
    batches sealed meanwhile queue up; then let the writer go."""
    async with await psycopg.AsyncConnection.connect(dsn, options="-c search_path=sim") as locker:
        await locker.execute("LOCK TABLE agent_states IN SHARE MODE")
        for step, agent, age in rows:
            await logger.log_agent_state(step, agent, age=age)
        await until(lambda: _waiting_copy(aconn))
        await locker.rollback()


async def test_queued_batches_share_one_transaction(
    store: Store, aconn: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    await new_sim(aconn, "s", agents=2)
    logger = SimulationLogger(store, "s", buffer_size=10, max_pending=1000, flush_interval=3600)
    await _log_while_copy_blocked(dsn, aconn, logger, [(i, f"a{i % 2}", i) for i in range(120)])
    await logger.close()
    assert logger.errors == [] and logger.rows_written == 120
    cur = await aconn.execute(
        "SELECT count(*), count(DISTINCT xmin::text) FROM agent_states_data"
    )
    rows, transactions = await cur.fetchone() or (0, 0)
    cur = await aconn.execute("SELECT count(*), sum(row_count) FROM ingest_batches")
    assert await cur.fetchone() == (12, 120)  # one ledger row per batch
    assert rows == 120 and transactions < 12  # but fewer transactions than batches


async def test_invalid_batch_in_a_group_fails_alone(
    store: Store, aconn: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    await new_sim(aconn, "s", agents=2)
    logger = SimulationLogger(store, "s", buffer_size=10, max_pending=1000, flush_interval=3600)
    rows = [(i, "ghost" if i == 57 else f"a{i % 2}", i) for i in range(120)]  # no such agent
    await _log_while_copy_blocked(dsn, aconn, logger, rows)
    with pytest.raises(IngestError) as info:
        await logger.close()
    error = info.value
    assert (error.table, error.batch) == ("agent_states", 6)  # rows 50-59
    assert isinstance(error.cause, ValidationError)
    assert (error.cause.row, error.cause.field) == (7, "agent_id")
    assert [r["step"] for r in error.rows] == list(range(50, 60))  # type: ignore[index]
    assert len(logger.errors) == 1
    assert await count(aconn, "agent_states", "s") == 110


async def test_json_is_the_value_at_log_time(
    store: Store, aconn: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    """A simulation that updates an agent's memory in place logs each step's state."""
    await new_sim(aconn, "s", agents=1)
    memory: dict[str, Any] = {"visits": []}
    async with SimulationLogger(store, "s", buffer_size=100) as logger:
        for step in range(3):
            memory["visits"].append(step)
            await logger.log_agent_state(step, "a0", memory=memory)
    cur = await aconn.execute("SELECT memory FROM agent_states ORDER BY step")
    assert [r[0] for r in await cur.fetchall()] == [
        {"visits": [0]},
        {"visits": [0, 1]},
        {"visits": [0, 1, 2]},
    ]
    with SyncSimulationLogger("s", settings=Settings(dsn=dsn), buffer_size=100) as sync_log:
        memory["visits"] = ["sync"]
        sync_log.log_agent_state(3, "a0", memory=memory)
        memory["visits"].append("changed")
    cur = await aconn.execute("SELECT memory FROM agent_states WHERE step = 3")
    assert await cur.fetchone() == ({"visits": ["sync"]},)


async def test_bytes_in_a_json_column_are_refused_not_sent(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """Bytes the caller passes for a JSON column are refused at the call, never sent."""
    await new_sim(aconn, "s", agents=1)
    async with SimulationLogger(store, "s", buffer_size=100) as logger:
        with pytest.raises(ValidationError) as info:
            await logger.log_agent_state(0, "a0", memory=b"\x01{}")
        assert (info.value.row, info.value.field) == (0, "memory")
        assert "JSON-serializable" in info.value.reason
        await logger.log_agent_state(1, "a0", memory={"ok": 1})
    cur = await aconn.execute("SELECT step, memory FROM agent_states")
    assert await cur.fetchall() == [(1, {"ok": 1})]


