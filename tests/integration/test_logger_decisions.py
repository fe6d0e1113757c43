"""Agent decisions through the logger: COPY batches with the guarantees of every logged
table (values as logged, references written first, replay-stable ids, a resumed run that
logs them again writes nothing twice, a bad reference refused naming row and field)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from helpers import add_simulation

from sim_schema import repositories as repo
from sim_schema.errors import IngestError, ReplayConflict, SimSchemaError, ValidationError
from sim_schema.ids import replay_id
from sim_schema.ingest.logger import SimulationLogger
from sim_schema.store import Store

Conn = psycopg.AsyncConnection[Any]


async def _log_run(logger: SimulationLogger) -> list[uuid.UUID]:
    """Two steps of an LLM agent: an event arrives, the agent decides on it."""
    await logger.log_agent("a1", "citizen", profile={"job": "teacher"})
    ids = []
    for step in range(2):
        event_id = await logger.log_event(step, "question", target_id="a1", payload={"q": step})
        ids.append(await logger.log_decision(
            step, "a1", event_id=event_id, prompt=f"step {step}: what now?",
            output="I move north", context={"seen": ["tree", step]}, action={"move": "N"},
            processing_time=0.25 * (step + 1),
        ))
    ids += await logger.log_decisions([
        {"step": 1, "agent_id": "a1", "output": "wait", "action": "wait"},
    ])
    return ids


async def test_decisions_are_written_with_their_values(store: Store, aconn: Conn) -> None:
    await add_simulation(aconn, "s")
    async with SimulationLogger(store, "s", buffer_size=2) as logger:
        ids = await _log_run(logger)
    assert ids == [
        replay_id("s", 0, 0, "agent_decisions"),
        replay_id("s", 1, 0, "agent_decisions"),
        replay_id("s", 1, 1, "agent_decisions"),
    ]
    events = await repo.list_events(aconn, "s")
    assert not {e.event_id for e in events} & set(ids)  # ids of their own, not the events'
    stored = await repo.list_decisions(aconn, "s")
    assert sorted(d.decision_id for d in stored) == sorted(ids)
    by_id = {d.decision_id: d for d in stored}
    first = by_id[ids[0]]
    assert (first.step, first.agent_id, first.event_id) == (0, "a1", events[0].event_id)
    assert (first.prompt, first.output) == ("step 0: what now?", "I move north")
    assert (first.context, first.action, first.processing_time) == (
        {"seen": ["tree", 0]}, {"move": "N"}, 0.25)
    assert (by_id[ids[1]].processing_time, by_id[ids[1]].event_id) == (0.5, events[1].event_id)
    third = by_id[ids[2]]
    assert (third.event_id, third.prompt, third.output, third.action, third.context) == (
        None, None, "wait", "wait", {})
    assert all(d.feedback is None and d.created_at is not None for d in stored)


async def test_a_resumed_run_logs_its_decisions_again_without_doubling(
    store: Store, aconn: Conn
) -> None:
    await add_simulation(aconn, "s")
    async with SimulationLogger(store, "s") as logger:
        first = await _log_run(logger)
    async with SimulationLogger(store, "s") as again:
        second = await _log_run(again)
    assert first == second
    assert again.rows_skipped == 1 + 2 + 3  # the agent, its events, its decisions
    assert len(await repo.list_decisions(aconn, "s")) == 3

    async with SimulationLogger(store, "s") as changed:
        await changed.log_agent("a1", "citizen", profile={"job": "teacher"})
        await changed.log_event(0, "question", target_id="a1", payload={"q": 0})
        await changed.log_decision(0, "a1", output="something else")
        with pytest.raises(IngestError) as info:
            await changed.flush()
    assert isinstance(info.value.cause, ReplayConflict)
    assert info.value.table == "agent_decisions"


async def test_an_unknown_event_or_agent_is_refused_naming_the_row(
    store: Store, aconn: Conn
) -> None:
    await add_simulation(aconn, "s", agents=1)
    logger = SimulationLogger(store, "s")
    await logger.log_decisions([
        {"step": 0, "agent_id": "a0", "output": "fine"},
        {"step": 0, "agent_id": "a0", "event_id": uuid.uuid4()},
    ])
    with pytest.raises(IngestError) as info:
        await logger.close()
    assert isinstance(info.value.cause, ValidationError)
    assert (info.value.cause.row, info.value.cause.field) == (1, "event_id")
    assert [r["output"] for r in info.value.rows] == ["fine", None]  # type: ignore[index]
    assert await repo.list_decisions(aconn, "s") == []


async def test_values_are_checked_at_the_call(store: Store, aconn: Conn) -> None:
    await add_simulation(aconn, "s", agents=1)
    async with SimulationLogger(store, "s") as logger:
        with pytest.raises(ValidationError) as info:
            await logger.log_decision(0, "a0", processing_time=-1.0)
        assert (info.value.table, info.value.field) == ("agent_decisions", "processing_time")
        with pytest.raises(ValidationError, match="no such column"):
            await logger.log_decision(0, "a0", rating=5.0)  # feedback comes later
    with pytest.raises(SimSchemaError, match=r"not a table the logger writes .*agent_decisions"):
        await SimulationLogger(store, "s").log_rows("decisions", [])


async def test_a_decision_is_written_after_the_event_it_names(store: Store, aconn: Conn) -> None:
    """The decisions' batch fills first; the event's buffer is sealed before it."""
    await add_simulation(aconn, "s", agents=1)
    async with SimulationLogger(store, "s", buffer_size=2, flush_interval=3600) as logger:
        event_id = await logger.log_event(0, "question")
        for n in range(2):
            await logger.log_decision(0, "a0", event_id=event_id, output=f"answer {n}")
    assert logger.errors == []
    assert [d.event_id for d in await repo.list_decisions(aconn, "s")] == [event_id] * 2
