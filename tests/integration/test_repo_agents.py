"""Agents, agent states and agent actions through the repositories (real server)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from sim_schema import repositories as repo
from sim_schema.errors import LifecycleError, NotFound, ValidationError
from sim_schema.models import Agent, AgentAction, AgentCreate, AgentState

Conn = psycopg.AsyncConnection[Any]

PROFILE: dict[str, Any] = {"名前": "Ünsal ☃", "traits": {"curious": 0.9, "tags": ["a", None]}}


def _agent(agent_id: str, **kw: Any) -> AgentCreate:
    return AgentCreate(
        simulation_id="s1", agent_id=agent_id, agent_type=kw.pop("t", "citizen"), **kw
    )


async def _count(aconn: Conn) -> int:
    cur = await aconn.execute("SELECT count(*) FROM agents")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_register_agent_round_trip(aconn: Conn, sim: str) -> None:
    given = AgentCreate(
        simulation_id=sim,
        agent_id="a1",
        agent_type="SystemAgent",
        name="Alice",
        birth_step=3,
        position_x=1.5,
        position_y=-2.0,
        position_z=0.0,
        initial_resources=10.0,
        starting_health=100.0,
        starvation_threshold=5,
        genome_id="g:1",
        generation=2,
        parent_ids=["p1", "p2"],
        profile=PROFILE,
        config={"lr": 0.01},
    )
    agent = await repo.register_agent(aconn, given)
    assert isinstance(agent, Agent)
    assert agent.model_dump(exclude={"created_at", "agent_key"}) == given.model_dump()
    assert agent.agent_key == 0  # the simulation's first agent
    assert await repo.get_agent(aconn, sim, "a1") == agent


async def test_registration_is_an_idempotent_upsert(aconn: Conn, sim: str) -> None:
    first = await repo.register_agent(aconn, _agent("a1", profile={"v": 1}))
    again = await repo.register_agent(aconn, _agent("a1", profile={"v": 1}))
    assert again == first
    changed = await repo.register_agent(aconn, _agent("a1", name="renamed", profile={"v": 2}))
    assert (changed.name, changed.profile) == ("renamed", {"v": 2})
    assert changed.created_at == first.created_at
    assert await _count(aconn) == 1
    await repo.record_agent_death(aconn, sim, "a1", 9)
    revived = await repo.register_agent(aconn, _agent("a1"))
    assert revived.death_step == 9  # re-registering never erases a death


async def test_register_agents_batch(aconn: Conn, sim: str) -> None:
    await repo.register_agent(aconn, _agent("a000", name="old"))
    agents = [_agent(f"a{i:03}", t="wolf" if i % 3 == 0 else "sheep") for i in range(50)]
    assert await repo.register_agents(aconn, agents) == 50
    assert await repo.register_agents(aconn, agents) == 50  # replay: no duplicates, no error
    assert await _count(aconn) == 50
    wolves = await repo.list_agents(aconn, sim, agent_type="wolf")
    assert [a.agent_id for a in wolves] == [f"a{i:03}" for i in range(0, 50, 3)]
    assert (await repo.get_agent(aconn, sim, "a000")).name is None  # upsert overwrote
    assert await repo.register_agents(aconn, []) == 0


async def test_register_agents_bad_row_writes_nothing(aconn: Conn, sim: str) -> None:
    agents = [_agent(f"a{i}") for i in range(5)]
    agents[3] = _agent("a3", birth_step=5, death_step=2)
    with pytest.raises(ValidationError) as info:
        await repo.register_agents(aconn, agents)
    assert (info.value.table, info.value.row, info.value.field) == ("agents", 3, "death_step")
    assert await _count(aconn) == 0


async def test_register_agents_unknown_simulation_is_not_found(aconn: Conn, sim: str) -> None:
    agents = [_agent("a1"), AgentCreate(simulation_id="ghost", agent_id="a2", agent_type="x")]
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await repo.register_agents(aconn, agents)
    assert await _count(aconn) == 0  # the whole batch rolled back
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await repo.register_agent(aconn, agents[1])


async def test_register_agent_check_violation_names_field(aconn: Conn, sim: str) -> None:
    with pytest.raises(ValidationError) as info:
        await repo.register_agent(aconn, _agent("a1", generation=-1))
    assert (info.value.table, info.value.field) == ("agents", "generation")


async def test_record_agent_death(aconn: Conn, sim: str) -> None:
    await repo.register_agent(aconn, _agent("a1", birth_step=5))
    dead = await repo.record_agent_death(aconn, sim, "a1", 8)
    assert dead.death_step == 8
    assert (await repo.record_agent_death(aconn, sim, "a1", 8)).death_step == 8  # no-op
    with pytest.raises(LifecycleError, match=r"'a1' of simulation 's1' already died at step 8"):
        await repo.record_agent_death(aconn, sim, "a1", 9)
    await repo.register_agent(aconn, _agent("a2", birth_step=5))
    with pytest.raises(ValidationError, match=r"born at step 5; it cannot die at step 4") as info:
        await repo.record_agent_death(aconn, sim, "a2", 4)
    assert info.value.field == "death_step"
    assert (await repo.get_agent(aconn, sim, "a2")).death_step is None
    with pytest.raises(NotFound, match="agent 'ghost' of simulation 's1' not found"):
        await repo.record_agent_death(aconn, sim, "ghost", 4)


async def test_list_agents_alive_at(aconn: Conn, sim: str) -> None:
    await repo.register_agents(
        aconn,
        [
            _agent("early", birth_step=0, t="wolf"),
            _agent("late", birth_step=10),
            _agent("dies", birth_step=0, death_step=5),
        ],
    )

    async def alive(step: int, **kw: Any) -> list[str]:
        return [a.agent_id for a in await repo.list_agents(aconn, sim, alive_at=step, **kw)]

    assert await alive(0) == ["dies", "early"]
    assert await alive(4) == ["dies", "early"]
    assert await alive(5) == ["early"]  # dead at the step it died
    assert await alive(10) == ["early", "late"]
    assert await alive(10, agent_type="citizen") == ["late"]
    with pytest.raises(NotFound, match="agent 'nobody' of simulation 's1' not found"):
        await repo.get_agent(aconn, sim, "nobody")
    assert await repo.find_agent(aconn, sim, "nobody") is None


async def test_agent_state_round_trip_and_upsert(aconn: Conn, sim: str) -> None:
    await repo.register_agents(aconn, [_agent("a1"), _agent("a2")])
    state = AgentState(
        simulation_id=sim,
        step=3,
        agent_id="a1",
        position_x=1.0,
        position_y=2.0,
        position_z=None,
        resource_level=4.5,
        health=0.75,
        is_defending=True,
        total_reward=-1.25,
        age=3,
        profile=PROFILE,
        memory=["went_to_work", {"deep": [[]]}],
        relationships={"a2": {"type": "friend", "strength": 0.8}},
        extras="just a string",
    )
    assert await repo.save_agent_state(aconn, state) == state
    assert await repo.get_agent_state(aconn, sim, "a1", 3) == state
    replaced = state.model_copy(update={"health": 0.5, "memory": None})
    await repo.save_agent_state(aconn, replaced)
    assert await repo.get_agent_state(aconn, sim, "a1", 3) == replaced
    for step in (1, 2, 4):
        await repo.save_agent_state(aconn, AgentState(simulation_id=sim, step=step, agent_id="a1"))
    await repo.save_agent_state(aconn, AgentState(simulation_id=sim, step=3, agent_id="a2"))
    snapshot = await repo.list_agent_states(aconn, sim, step=3)
    assert [s.agent_id for s in snapshot] == ["a1", "a2"]
    history = await repo.list_agent_states(aconn, sim, agent_id="a1", start_step=2, end_step=3)
    assert [s.step for s in history] == [2, 3]
    with pytest.raises(NotFound, match="no state of agent 'a1' at step 9"):
        await repo.get_agent_state(aconn, sim, "a1", 9)


async def test_agent_state_of_unknown_agent_is_not_found(aconn: Conn, sim: str) -> None:
    with pytest.raises(NotFound, match=r"agent \(simulation_id, agent_id\)=\(s1, ghost\)"):
        await repo.save_agent_state(aconn, AgentState(simulation_id=sim, step=0, agent_id="ghost"))


async def test_agent_actions(aconn: Conn, sim: str) -> None:
    await repo.register_agents(aconn, [_agent("a1"), _agent("a2")])
    action = AgentAction(
        simulation_id=sim,
        step=2,
        agent_id="a1",
        action_type="attack",
        action_target_id="a2",
        state_before_step=1,
        state_after_step=2,
        resources_before=3.0,
        resources_after=2.5,
        reward=-0.5,
        details={"damage": 7, "crit": False, "note": "☃"},
    )
    written = await repo.record_agent_action(aconn, action)
    assert written == action.model_copy(update={"ordinal": 0})  # the agent's first at the step
    second = await repo.record_agent_action(
        aconn, AgentAction(simulation_id=sim, step=5, agent_id="a2", action_type="move")
    )
    assert second.ordinal == 0
    again = await repo.record_agent_action(
        aconn, AgentAction(simulation_id=sim, step=5, agent_id="a2", action_type="eat")
    )
    assert again.ordinal == 1  # the next of the same agent at the same step
    assert await repo.list_agent_actions(aconn, sim, agent_id="a1") == [written]
    assert await repo.list_agent_actions(aconn, sim, action_type="move") == [second]
    assert await repo.list_agent_actions(aconn, sim, start_step=3) == [second, again]
    assert len(await repo.list_agent_actions(aconn, sim)) == 3
    with pytest.raises(ValidationError) as info:
        await repo.record_agent_action(
            aconn, AgentAction(simulation_id=sim, step=-1, agent_id="a1", action_type="x")
        )
    assert (info.value.table, info.value.field) == ("agent_actions", "step")
