"""Events, agent decisions and environment states through the repositories (real server)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from sim_schema import repositories as repo
from sim_schema.errors import AlreadyExists, LifecycleError, NotFound, ValidationError
from sim_schema.models import AgentCreate, AgentDecision, AgentDecisionCreate, Event, EventCreate

Conn = psycopg.AsyncConnection[Any]

PAYLOAD: dict[str, Any] = {"content": "Hallo 👋 ☃", "nested": {"list": [1, [2, [3]], {"k": None}]}}


@pytest.fixture
async def sim(citizens: str) -> str:
    return citizens


def _event(step: int, event_type: str = "interaction", **kw: Any) -> EventCreate:
    return EventCreate(simulation_id="s1", step=step, event_type=event_type, **kw)


async def test_event_round_trip_with_client_id(aconn: Conn, sim: str) -> None:
    event_id = uuid.uuid4()
    given = _event(
        10,
        event_id=event_id,
        source_type="agent",
        source_id="a1",
        target_type="agent",
        target_id="a2",
        priority=3,
        payload=PAYLOAD,
    )
    created = await repo.create_event(aconn, given)
    assert isinstance(created, Event)
    assert created.event_id == event_id
    assert created.model_dump(include=set(EventCreate.model_fields)) == given.model_dump()
    assert (created.processed, created.processing_result, created.processed_at) == (
        False,
        None,
        None,
    )
    assert await repo.get_event(aconn, sim, event_id) == created
    with pytest.raises(AlreadyExists, match=str(event_id)):
        await repo.create_event(aconn, given)


async def test_event_not_found_cases(aconn: Conn, sim: str) -> None:
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await repo.create_event(aconn, EventCreate(simulation_id="ghost", step=0, event_type="x"))
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=f"event {missing} of simulation 's1' not found"):
        await repo.get_event(aconn, sim, missing)
    with pytest.raises(NotFound, match=f"event {missing}"):
        await repo.mark_event_processed(aconn, sim, missing, {"ok": True})


async def test_mark_event_processed(aconn: Conn, sim: str) -> None:
    event = await repo.create_event(aconn, _event(1))
    done = await repo.mark_event_processed(
        aconn, sim, event.event_id, {"success": True, "response": "Hallo zurück ☃"}
    )
    assert done.processed and done.processed_at is not None
    assert done.processing_result == {"success": True, "response": "Hallo zurück ☃"}
    assert await repo.get_event(aconn, sim, event.event_id) == done
    with pytest.raises(LifecycleError, match="already processed"):
        await repo.mark_event_processed(aconn, sim, event.event_id, {"second": True})
    assert (await repo.get_event(aconn, sim, event.event_id)).processing_result == {
        "success": True,
        "response": "Hallo zurück ☃",
    }
    other = await repo.create_event(aconn, _event(2))
    bare = await repo.mark_event_processed(aconn, sim, other.event_id, [1, "two"])
    assert bare.processing_result == [1, "two"]


async def test_unprocessed_events_by_priority_then_step(aconn: Conn, sim: str) -> None:
    low_early = await repo.create_event(aconn, _event(1, priority=0))
    high_late = await repo.create_event(aconn, _event(9, priority=5))
    high_early = await repo.create_event(aconn, _event(2, priority=5))
    done = await repo.create_event(aconn, _event(0, priority=9))
    await repo.mark_event_processed(aconn, sim, done.event_id)
    queue = await repo.list_unprocessed_events(aconn, sim)
    assert [e.event_id for e in queue] == [
        high_early.event_id,
        high_late.event_id,
        low_early.event_id,
    ]
    top = await repo.list_unprocessed_events(aconn, sim, limit=1)
    assert [e.event_id for e in top] == [high_early.event_id]


async def test_events_for_agent_and_by_type(aconn: Conn, sim: str) -> None:
    sent = await repo.create_event(aconn, _event(1, source_id="a1", target_id="a2"))
    received = await repo.create_event(aconn, _event(2, "trade", source_id="a2", target_id="a1"))
    unrelated = await repo.create_event(aconn, _event(3, "weather"))

    async def ids(**kw: Any) -> list[uuid.UUID]:
        return [e.event_id for e in await repo.list_agent_events(aconn, sim, "a1", **kw)]

    assert await ids() == [sent.event_id, received.event_id]
    assert await ids(role="source") == [sent.event_id]
    assert await ids(role="target") == [received.event_id]
    by_type = await repo.list_events(aconn, sim, event_type="weather")
    assert [e.event_id for e in by_type] == [unrelated.event_id]
    in_range = await repo.list_events(aconn, sim, start_step=2, end_step=3)
    assert [e.event_id for e in in_range] == [received.event_id, unrelated.event_id]


async def test_decision_round_trip_and_feedback(aconn: Conn, sim: str) -> None:
    event = await repo.create_event(aconn, _event(4))
    given = AgentDecisionCreate(
        simulation_id=sim,
        event_id=event.event_id,
        step=4,
        agent_id="a1",
        prompt="What now? ☃",
        output='{"act": "wait"}',
        context={"memory": ["x", {"y": 1.5}]},
        action={"type": "wait", "args": []},
        processing_time=0.25,
    )
    decision = await repo.record_decision(aconn, given)
    assert isinstance(decision, AgentDecision)
    assert decision.decision_id == given.decision_id
    assert decision.model_dump(include=set(AgentDecisionCreate.model_fields)) == given.model_dump()
    assert (decision.feedback, decision.rating, decision.reason, decision.feedback_at) == (
        None,
        None,
        None,
        None,
    )
    rated = await repo.add_decision_feedback(aconn, sim, decision.decision_id, rating=4.5)
    assert rated.rating == 4.5 and rated.feedback_at is not None and rated.feedback is None
    full = await repo.add_decision_feedback(
        aconn, sim, decision.decision_id, feedback="good", reason="patient ✓"
    )
    assert (full.feedback, full.rating, full.reason) == ("good", 4.5, "patient ✓")
    assert await repo.get_decision(aconn, sim, decision.decision_id) == full
    with pytest.raises(AlreadyExists, match=str(given.decision_id)):
        await repo.record_decision(aconn, given)


async def test_decisions_by_agent_and_event(aconn: Conn, sim: str) -> None:
    e1 = await repo.create_event(aconn, _event(1))
    e2 = await repo.create_event(aconn, _event(2))
    d1 = await repo.record_decision(
        aconn, AgentDecisionCreate(simulation_id=sim, event_id=e1.event_id, step=1, agent_id="a1")
    )
    d2 = await repo.record_decision(
        aconn, AgentDecisionCreate(simulation_id=sim, event_id=e2.event_id, step=2, agent_id="a2")
    )
    d3 = await repo.record_decision(
        aconn, AgentDecisionCreate(simulation_id=sim, step=3, agent_id="a1")
    )
    assert await repo.list_decisions(aconn, sim, agent_id="a1") == [d1, d3]
    assert await repo.list_decisions(aconn, sim, event_id=e2.event_id) == [d2]
    assert await repo.list_decisions(aconn, sim) == [d1, d2, d3]


async def test_decision_errors(aconn: Conn, sim: str) -> None:
    with pytest.raises(NotFound, match=r"agent \(simulation_id, agent_id\)=\(s1, ghost\)"):
        await repo.record_decision(
            aconn, AgentDecisionCreate(simulation_id=sim, step=0, agent_id="ghost")
        )
    missing = uuid.uuid4()
    with pytest.raises(NotFound, match=rf"event \(simulation_id, event_id\)=\(s1, {missing}\)"):
        await repo.record_decision(
            aconn,
            AgentDecisionCreate(simulation_id=sim, step=0, agent_id="a1", event_id=missing),
        )
    with pytest.raises(ValidationError) as info:
        await repo.record_decision(
            aconn,
            AgentDecisionCreate(simulation_id=sim, step=0, agent_id="a1", processing_time=-1),
        )
    assert (info.value.table, info.value.field) == ("agent_decisions", "processing_time")
    with pytest.raises(NotFound, match=f"decision {missing}"):
        await repo.add_decision_feedback(aconn, sim, missing, rating=1)
    with pytest.raises(NotFound, match=f"decision {missing}"):
        await repo.get_decision(aconn, sim, missing)


async def test_environment_states(aconn: Conn, sim: str) -> None:
    assert await repo.latest_environment_state(aconn, sim) is None
    state = {"population": 1000, "resources": {"water": 100, "food": 200.5}, "ü": ["☃"]}
    saved = await repo.save_environment_state(aconn, sim, 10, state)
    assert (saved.simulation_id, saved.step, saved.state) == (sim, 10, state)
    assert await repo.get_environment_state(aconn, sim, 10) == saved
    await repo.save_environment_state(aconn, sim, 3, [1, 2, 3])
    replaced = await repo.save_environment_state(aconn, sim, 10, {"population": 999})
    assert (await repo.get_environment_state(aconn, sim, 10)).state == {"population": 999}
    assert await repo.latest_environment_state(aconn, sim) == replaced
    assert [s.step for s in await repo.list_environment_states(aconn, sim)] == [3, 10]
    assert [s.step for s in await repo.list_environment_states(aconn, sim, end_step=5)] == [3]
    with pytest.raises(NotFound, match="no environment state at step 4 in simulation 's1'"):
        await repo.get_environment_state(aconn, sim, 4)
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await repo.save_environment_state(aconn, "ghost", 0, {})
    with pytest.raises(ValidationError) as info:
        await repo.save_environment_state(aconn, sim, 11, None)
    assert (info.value.table, info.value.field) == ("environment_states", "state")
