"""Step metrics, resource states, learning experiences, health incidents and interactions
through the repositories, one row at a time (real server)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from sim_schema import repositories as repo
from sim_schema.errors import NotFound, ValidationError
from sim_schema.models import (
    AgentCreate,
    HealthIncident,
    Interaction,
    LearningExperience,
    ResourceState,
    SimulationStep,
)

Conn = psycopg.AsyncConnection[Any]

DETAILS: dict[str, Any] = {"why": "übermüdet ☃", "trace": [{"q": [0.1, -0.2]}, None, True]}


@pytest.fixture
async def sim(citizens: str) -> str:
    return citizens


def _full_step(step: int) -> SimulationStep:
    values: dict[str, Any] = {}
    for i, (name, field) in enumerate(SimulationStep.model_fields.items()):
        if name in ("simulation_id", "step", "metrics"):
            continue
        values[name] = i if "int" in str(field.annotation) else i + 0.5
    return SimulationStep(simulation_id="s1", step=step, metrics=DETAILS, **values)


async def test_step_metrics_round_trip_upsert_and_range(aconn: Conn, sim: str) -> None:
    row = _full_step(4)
    assert all(v is not None for v in row.model_dump().values())
    assert await repo.save_step_metrics(aconn, row) == row
    assert await repo.get_step_metrics(aconn, sim, 4) == row
    replaced = row.model_copy(update={"total_agents": 99, "metrics": None})
    await repo.save_step_metrics(aconn, replaced)
    assert await repo.get_step_metrics(aconn, sim, 4) == replaced
    for step in (1, 2, 7):
        await repo.save_step_metrics(aconn, SimulationStep(simulation_id=sim, step=step))
    steps = await repo.list_step_metrics(aconn, sim, start_step=2, end_step=4)
    assert [s.step for s in steps] == [2, 4]
    assert [s.step for s in await repo.list_step_metrics(aconn, sim)] == [1, 2, 4, 7]
    with pytest.raises(NotFound, match="no step metrics at step 5 in simulation 's1'"):
        await repo.get_step_metrics(aconn, sim, 5)
    with pytest.raises(ValidationError) as info:
        await repo.save_step_metrics(aconn, SimulationStep(simulation_id=sim, step=8, births=-1))
    assert (info.value.table, info.value.field) == ("simulation_steps", "births")
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await repo.save_step_metrics(aconn, SimulationStep(simulation_id="ghost", step=0))


async def test_resource_states(aconn: Conn, sim: str) -> None:
    r = ResourceState(
        simulation_id=sim, step=1, resource_id=7, amount=3.5, position_x=1, position_y=2
    )
    assert await repo.save_resource_state(aconn, r) == r
    moved = r.model_copy(update={"amount": 1.0})
    await repo.save_resource_state(aconn, moved)
    await repo.save_resource_state(
        aconn, ResourceState(simulation_id=sim, step=1, resource_id=2, amount=0)
    )
    await repo.save_resource_state(
        aconn, ResourceState(simulation_id=sim, step=2, resource_id=7, amount=0.5)
    )
    snapshot = await repo.list_resource_states(aconn, sim, step=1)
    assert [(s.resource_id, s.amount) for s in snapshot] == [(2, 0.0), (7, 1.0)]
    history = await repo.list_resource_states(aconn, sim, resource_id=7)
    assert [(s.step, s.amount) for s in history] == [(1, 1.0), (2, 0.5)]
    assert history[0] == moved


async def test_learning_experiences(aconn: Conn, sim: str) -> None:
    given = LearningExperience(
        simulation_id=sim,
        step=3,
        agent_id="a1",
        module_type="dqn",
        module_id="m-1",
        action_taken=2,
        action_taken_mapped="gather",
        reward=0.75,
        details=DETAILS,
    )
    written = await repo.record_learning_experience(aconn, given)
    assert written == given.model_copy(update={"ordinal": 0})
    other = await repo.record_learning_experience(
        aconn, LearningExperience(simulation_id=sim, step=1, agent_id="a2", module_type="ppo")
    )
    assert await repo.list_learning_experiences(aconn, sim, agent_id="a1") == [written]
    assert await repo.list_learning_experiences(aconn, sim, module_type="ppo") == [other]
    assert await repo.list_learning_experiences(aconn, sim) == [other, written]
    with pytest.raises(NotFound, match=r"agent \(simulation_id, agent_id\)=\(s1, ghost\)"):
        await repo.record_learning_experience(
            aconn, LearningExperience(simulation_id=sim, step=1, agent_id="ghost", module_type="x")
        )


async def test_health_incidents(aconn: Conn, sim: str) -> None:
    given = HealthIncident(
        simulation_id=sim,
        step=5,
        agent_id="a2",
        health_before=1.0,
        health_after=0.4,
        cause="attack",
        details={"by": "a1"},
    )
    written = await repo.record_health_incident(aconn, given)
    assert written == given.model_copy(update={"ordinal": 0})
    later = await repo.record_health_incident(
        aconn, HealthIncident(simulation_id=sim, step=9, agent_id="a2", cause="starvation")
    )
    assert await repo.list_health_incidents(aconn, sim, agent_id="a2") == [written, later]
    assert await repo.list_health_incidents(aconn, sim, agent_id="a1") == []
    assert await repo.list_health_incidents(aconn, sim, start_step=6) == [later]
    with pytest.raises(ValidationError) as info:
        await repo.record_health_incident(
            aconn, HealthIncident(simulation_id=sim, step=-3, agent_id="a2", cause="x")
        )
    assert (info.value.table, info.value.field) == ("health_incidents", "step")


async def test_interactions(aconn: Conn, sim: str) -> None:
    given = Interaction(
        simulation_id=sim,
        step=2,
        source_type="agent",
        source_id="a1",
        target_type="resource",
        target_id="r7",
        interaction_type="gather",
        action_type="gather",
        details=DETAILS,
    )
    written = await repo.record_interaction(aconn, given)
    assert written == given.model_copy(update={"ordinal": 0})
    share = await repo.record_interaction(
        aconn,
        Interaction(
            simulation_id=sim,
            step=3,
            source_type="agent",
            source_id="a2",
            target_type="agent",
            target_id="a1",
            interaction_type="share",
        ),
    )
    assert await repo.list_interactions(aconn, sim, source_id="a1") == [written]
    assert await repo.list_interactions(aconn, sim, target_id="a1") == [share]
    assert await repo.list_interactions(aconn, sim, interaction_type="share") == [share]
    assert await repo.list_interactions(aconn, sim, start_step=0, end_step=2) == [written]
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await repo.record_interaction(aconn, given.model_copy(update={"simulation_id": "ghost"}))
