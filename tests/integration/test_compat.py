"""The compatibility facades run the predecessors' documented example flows with only the
import changed, against a migrated database, and store what those calls say.

Each flow below is written the way the seeds show their calls (seed 000's "Working with
Scenarios" through "Working with Events"; the ExperimentManager, DatabaseFactory and
ExperimentDatabase examples of seeds 001 and 003), re-typed here with our own values and
with the predecessor's own import line. `run_with_import_changed` rewrites that line, and
only that line, to the facade's module, runs the code, and the test reads back what it
stored.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from sim_schema import LifecycleError, compat

IMPORTS = {
    "onesim.data": "sim_schema.compat.onesim",
    "farm.database.experiment_integration": "sim_schema.compat.farm",
    "farm.database.experiment_database": "sim_schema.compat.farm",
}


def run_with_import_changed(code: str, namespace: dict[str, Any], module: str | None = None) -> None:
    """Exec `code` with its `from <predecessor> import ...` lines pointed at the facade."""
    changed = 0

    def point(m: re.Match[str]) -> str:
        nonlocal changed
        changed += 1
        return f"from {module or IMPORTS[m[1]]} import"

    rewritten = re.sub(r"^from ([\w.]+) import", point, code, flags=re.M)
    assert changed, "a flow must import from the predecessor"
    assert [a for a in rewritten.splitlines() if not a.startswith("from ")] == [
        a for a in code.splitlines() if not a.startswith("from ")
    ]
    exec(compile(rewritten, "flow", "exec"), namespace)


@pytest.fixture
def facades(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SIM_SCHEMA_DSN names this test's database; the facades' pools are closed after."""
    monkeypatch.setenv("SIM_SCHEMA_DSN", dsn)
    yield
    compat.close()


ONESIM_SCENARIOS = '''
from onesim.data import ScenarioManager

scenario_mgr = ScenarioManager()
scenario_id = scenario_mgr.create_scenario(
    name="Harbour Traffic",
    folder_path="./scenarios/harbour",
    description="Ships, pilots and quays",
    tags={"domain": "ports", "version": "2.1"}
)
scenarios = scenario_mgr.list_scenarios()
'''
ONESIM_TRAILS = '''
from onesim.data import TrailManager, TrailStatus

trail_mgr = TrailManager()
trail_id = trail_mgr.create_trail(
    scenario_id=scenario_id,
    name="Harbour run 1",
    description="Two pilots, one quay",
    config={"num_agents": 2, "steps": 40}
)
trail_mgr.start_trail(trail_id)
trail_mgr.complete_trail(trail_id, step_count=40)
'''
ONESIM_ENVIRONMENT = '''
from onesim.data import EnvironmentStateManager

env_mgr = EnvironmentStateManager()
env_mgr.save_environment_state(
    trail_id=trail_id,
    step=7,
    state={"ships": 12, "tide": {"level": 1.5, "rising": True}}
)
state = env_mgr.get_environment_state(trail_id=trail_id, step=7)
'''
ONESIM_AGENTS = '''
from onesim.data import AgentManager

agent_mgr = AgentManager()
agent_mgr.register_agent(
    trail_id=trail_id,
    agent_id="pilot_01",
    agent_type="pilot",
    name="Ada Quay",
    initial_profile={"age": 41, "licence": "river"}
)
agent_mgr.save_agent_state(
    trail_id=trail_id,
    agent_id="pilot_01",
    step=7,
    profile={"age": 41, "licence": "river", "mood": "alert"},
    memory={"recent_events": ["boarded_ship", "checked_tide"]},
    relationships={"pilot_02": {"type": "colleague", "strength": 0.6}}
)
'''
ONESIM_EVENTS = '''
from onesim.data import EventManager

event_mgr = EventManager()
event_id = event_mgr.save_event(
    trail_id=trail_id,
    step=7,
    event_type="radio_call",
    source_type="agent",
    source_id="pilot_01",
    target_type="agent",
    target_id="pilot_02",
    payload={"channel": 16, "content": "Ready to board"}
)
event_mgr.mark_event_processed(
    event_id=event_id,
    processing_result={"success": True, "response": "Come alongside"}
)
'''


def test_onesim_readme_flows(facades: None, conn: psycopg.Connection[Any]) -> None:
    ns: dict[str, Any] = {}
    for flow in (ONESIM_SCENARIOS, ONESIM_TRAILS, ONESIM_ENVIRONMENT, ONESIM_AGENTS,
                 ONESIM_EVENTS):  # fmt: skip
        run_with_import_changed(flow, ns)
    scenario_id, trail_id, event_id = ns["scenario_id"], ns["trail_id"], ns["event_id"]
    uuid.UUID(scenario_id), uuid.UUID(trail_id), uuid.UUID(event_id)  # OneSim's id format
    assert [s["scenario_id"] for s in ns["scenarios"]] == [scenario_id]
    assert ns["scenarios"][0]["tags"] == {"domain": "ports", "version": "2.1"}
    assert conn.execute(
        "SELECT name, folder_path, description, tags FROM experiments WHERE experiment_id = %s",
        (scenario_id,),
    ).fetchone() == ("Harbour Traffic", "./scenarios/harbour", "Ships, pilots and quays",
                     {"domain": "ports", "version": "2.1"})  # fmt: skip
    sim = conn.execute(
        "SELECT experiment_id, name, description, parameters, status, step_count, started_at,"
        " ended_at FROM simulations WHERE simulation_id = %s",
        (trail_id,),
    ).fetchone()
    assert sim[:6] == (scenario_id, "Harbour run 1", "Two pilots, one quay",
                       {"num_agents": 2, "steps": 40}, "completed", 40)  # fmt: skip
    assert isinstance(sim[6], datetime) and sim[7] >= sim[6]
    assert ns["state"] == {"ships": 12, "tide": {"level": 1.5, "rising": True}}
    assert conn.execute(
        "SELECT step, state FROM environment_states WHERE simulation_id = %s", (trail_id,)
    ).fetchall() == [(7, {"ships": 12, "tide": {"level": 1.5, "rising": True}})]
    assert conn.execute(
        "SELECT agent_id, agent_type, name, profile FROM agents WHERE simulation_id = %s",
        (trail_id,),
    ).fetchall() == [("pilot_01", "pilot", "Ada Quay", {"age": 41, "licence": "river"})]
    assert conn.execute(
        "SELECT step, profile, memory, relationships FROM agent_states WHERE simulation_id = %s",
        (trail_id,),
    ).fetchall() == [(7, {"age": 41, "licence": "river", "mood": "alert"},
                      {"recent_events": ["boarded_ship", "checked_tide"]},
                      {"pilot_02": {"type": "colleague", "strength": 0.6}})]  # fmt: skip
    assert conn.execute(
        "SELECT event_id::text, step, event_type, source_type, source_id, target_type,"
        " target_id, payload, processed, processing_result, processed_at IS NOT NULL"
        " FROM events WHERE simulation_id = %s",
        (trail_id,),
    ).fetchall() == [(event_id, 7, "radio_call", "agent", "pilot_01", "agent", "pilot_02",
                      {"channel": 16, "content": "Ready to board"}, True,
                      {"success": True, "response": "Come alongside"}, True)]  # fmt: skip


# OneSim's code (not its README) awaits the managers and names some calls differently.
ONESIM_CODE = '''
from onesim.data import ScenarioManager, TrailManager, TrailStatus, EnvironmentStateManager
from onesim.data import AgentManager, EventManager


async def run_trail():
    scenario_id = await ScenarioManager().create_scenario("Fish Market", "./scenarios/market")
    trails = TrailManager()
    trail_id = await trails.create_trail(scenario_id, "Market day", config={"stalls": 3})
    await trails.update_trail_status(trail_id, TrailStatus.RUNNING)
    await trails.update_trail_status(trail_id, TrailStatus.PAUSED)
    await trails.update_trail_status(trail_id, TrailStatus.RUNNING)
    env = EnvironmentStateManager()
    await env.save_state(trail_id, 0, {"open": True})
    await env.save_state(trail_id, 1, {"open": False})
    first, latest = await env.get_state(trail_id, 0), await env.get_state(trail_id)
    await AgentManager().register_agent(trail_id, "seller_1", "seller", "Bo",
                                        {"stall": 2}, system_prompt="You sell fish.")
    events = EventManager()
    event_id = await events.create_event(trail_id, 1, "offer", "agent", "seller_1",
                                         payload={"price": 3.5}, priority=2)
    await EventManager().mark_event_processed(event_id, {"accepted": False})
    await trails.update_trail_status(trail_id, TrailStatus.COMPLETED)
    return trail_id, first, latest, await trails.get_trail(trail_id)
'''


def test_onesim_code_names_async(facades: None, conn: psycopg.Connection[Any]) -> None:
    ns: dict[str, Any] = {}
    run_with_import_changed(ONESIM_CODE, ns, "sim_schema.compat.onesim_async")
    trail_id, first, latest, trail = asyncio.run(ns["run_trail"]())
    assert (first, latest) == ({"open": True}, {"open": False})
    assert trail["status"] == "COMPLETED" and trail["config"] == {"stalls": 3}
    assert conn.execute(
        "SELECT status, parameters FROM simulations WHERE simulation_id = %s", (trail_id,)
    ).fetchone() == ("completed", {"stalls": 3})
    assert conn.execute(
        "SELECT profile, config FROM agents WHERE simulation_id = %s", (trail_id,)
    ).fetchone() == ({"stall": 2}, {"system_prompt": "You sell fish."})
    # marked by another manager: found by its id alone
    assert conn.execute(
        "SELECT step, event_type, source_id, target_id, priority, payload, processed,"
        " processing_result FROM events WHERE simulation_id = %s", (trail_id,)
    ).fetchone() == (1, "offer", "seller_1", None, 2, {"price": 3.5}, True, {"accepted": False})


def test_onesim_strictness(facades: None) -> None:
    from sim_schema.compat.onesim import EnvironmentStateManager, EventManager, TrailManager

    trails = TrailManager()
    assert trails.update_trail_status(str(uuid.uuid4()), "RUNNING") is False
    assert trails.complete_trail(str(uuid.uuid4()), step_count=1) is False
    trail_id = trails.create_trail(None, "Loose trail")
    assert trails.get_trail(trail_id)["status"] == "CREATED"
    with pytest.raises(LifecycleError, match="cannot complete"):
        trails.complete_trail(trail_id, step_count=3)  # never started
    assert EnvironmentStateManager().get_state(trail_id, 4) is None
    events = EventManager()
    event_id = events.create_event(trail_id, 0, "ping")
    assert events.mark_event_processed(event_id, {"ok": 1}) is True
    with pytest.raises(LifecycleError, match="already processed"):
        events.mark_event_processed(event_id, {"ok": 2})
    assert EventManager().mark_event_processed(str(uuid.uuid4())) is False
    assert [t["trail_id"] for t in trails.list_trails(status="CREATED")] == [trail_id]


# Seed 003: the ExperimentManager of the centralized-storage layer, with the farm's
# per-step logging filled in where the seed leaves "# sim_context.logger.log_step(...)".
FARM_EXPERIMENT = '''
from farm.database.experiment_integration import ExperimentManager

with ExperimentManager(
    experiment_id="grazing_rates",
    name="Grazing Rate Comparison",
    description="Testing different grazing rates"
) as manager:
    for rate in [0.2, 0.4]:
        sim_id = f"sim_rate_{rate:.1f}".replace(".", "_")
        sim_context = manager.create_simulation(
            simulation_id=sim_id,
            parameters={"grazing_rate": rate}
        )
        sim_context.logger.log_agent("cow_1", 0, "system", (1.0, 2.0), 5.0, 100.0, 12,
                                     genome_id="g-1", generation=1)
        for step in range(3):
            sim_context.logger.log_step(
                step,
                [("cow_1", 1.0 + step, 2.0, 0.0, 5.0 - rate * step, 100.0 - step, step % 2,
                  rate * step, step)],
                [(7, 50.0 - step, 3.0, 4.0)],
                {"total_agents": 1, "average_agent_health": 100.0 - step, "weather": "dry"},
            )
            sim_context.logger.log_agent_action(step, "cow_1", "graze", reward=rate,
                                                state_before_id=f"cow_1-{step}")
        manager.complete_simulation(
            simulation_id=sim_id,
            results_summary={"final_score": 90 + rate}
        )
'''


def test_farm_experiment_manager_flow(facades: None, conn: psycopg.Connection[Any]) -> None:
    run_with_import_changed(FARM_EXPERIMENT, {})
    assert conn.execute(
        "SELECT name, description, status FROM experiments WHERE experiment_id = 'grazing_rates'"
    ).fetchone() == ("Grazing Rate Comparison", "Testing different grazing rates", "completed")
    sims = conn.execute(
        "SELECT simulation_id, parameters, status, results_summary FROM simulations"
        " WHERE experiment_id = 'grazing_rates' ORDER BY 1"
    ).fetchall()
    assert sims == [
        ("sim_rate_0_2", {"grazing_rate": 0.2}, "completed", {"final_score": 90.2}),
        ("sim_rate_0_4", {"grazing_rate": 0.4}, "completed", {"final_score": 90.4}),
    ]
    rate = 0.4
    states = conn.execute(
        "SELECT step, agent_id, position_x, position_y, position_z, resource_level, health,"
        " is_defending, total_reward, age FROM agent_states"
        " WHERE simulation_id = 'sim_rate_0_4' ORDER BY step"
    ).fetchall()
    assert states == [
        (s, "cow_1", 1.0 + s, 2.0, 0.0, 5.0 - rate * s, 100.0 - s, bool(s % 2), rate * s, s)
        for s in range(3)
    ]
    assert conn.execute(
        "SELECT step, resource_id, amount, position_x, position_y FROM resource_states"
        " WHERE simulation_id = 'sim_rate_0_4' ORDER BY step"
    ).fetchall() == [(s, 7, 50.0 - s, 3.0, 4.0) for s in range(3)]
    assert conn.execute(
        "SELECT step, total_agents, average_agent_health, metrics FROM simulation_steps"
        " WHERE simulation_id = 'sim_rate_0_4' ORDER BY step"
    ).fetchall() == [(s, 1, 100.0 - s, {"weather": "dry"}) for s in range(3)]
    assert conn.execute(
        "SELECT agent_type, birth_step, position_x, position_y, initial_resources,"
        " starting_health, starvation_threshold, genome_id, generation FROM agents"
        " WHERE simulation_id = 'sim_rate_0_4'"
    ).fetchone() == ("system", 0, 1.0, 2.0, 5.0, 100.0, 12, "g-1", 1)
    assert conn.execute(
        "SELECT step, action_type, reward, state_before_step FROM agent_actions"
        " WHERE simulation_id = 'sim_rate_0_4' ORDER BY step"
    ).fetchall() == [(s, "graze", 0.4, s) for s in range(3)]


def test_farm_log_step_is_stored_when_it_returns(facades: None, dsn: str) -> None:
    from sim_schema.compat.farm import ExperimentManager

    def stored(sim: str) -> tuple[int, int, int]:  # another session: what is committed
        with psycopg.connect(dsn, options="-c search_path=sim") as other:
            return other.execute(
                "SELECT (SELECT count(*) FROM agent_states WHERE simulation_id = %(s)s),"
                " (SELECT count(*) FROM resource_states WHERE simulation_id = %(s)s),"
                " (SELECT count(*) FROM simulation_steps WHERE simulation_id = %(s)s)",
                {"s": sim},
            ).fetchone()

    with ExperimentManager("durable") as manager:
        ctx = manager.create_simulation("farm_like")
        ctx.logger.log_agent("a1", 0, "control")
        ctx.logger.log_step(0, [{"agent_id": "a1", "current_health": 9.0, "starvation_counter": 2}],
                            [(1, 2.0, 0.0, 0.0)], {"births": 0})  # fmt: skip
        assert stored("farm_like") == (1, 1, 1)
        buffered = manager.create_simulation("buffered")
        buffered.logger.flush_every_step = False
        buffered.logger.log_agent("a1", 0, "control")
        buffered.logger.log_step(0, [("a1", 0, 0, 0, 1.0, 2.0, 0, 0.0, 0)], [], {})
        buffered.flush_all_buffers()
        assert stored("buffered") == (1, 0, 1)
    with psycopg.connect(dsn, options="-c search_path=sim") as other:
        assert other.execute(
            "SELECT health, extras FROM agent_states WHERE simulation_id = 'farm_like'"
        ).fetchone() == (9.0, {"starvation_counter": 2})


# Seed 003: DatabaseFactory, configured by USE_EXPERIMENT_DB / EXPERIMENT_ID or by its
# arguments; seed 001: ExperimentDatabase(...).create_simulation_context(...).
FARM_FACTORY = '''
from farm.database.experiment_integration import DatabaseFactory

db = DatabaseFactory.create(
    config=config,
    simulation_id="sim_1717",
    use_experiment_db=True,
    experiment_id="my_experiment"
)
db.logger.log_step(0, [], [(3, 9.5, 1.0, 1.0)], {"total_resources": 9.5})
db.logger.log_agent("b1", 0, "independent")
db.close()

env_db = DatabaseFactory.create(config=config, simulation_id="sim_env")
env_db.close()
'''
FARM_EXPERIMENT_DATABASE = '''
from farm.database.experiment_database import ExperimentDatabase

db = ExperimentDatabase('experiment.db', 'exp_001')
context1 = db.create_simulation_context('sim_001')
context1.logger.log_agent("c1", 0, "control")
context1.logger.log_health_incident(2, "c1", 80.0, 60.0, "starvation", {"food": 0})
context1.logger.log_learning_experience(2, "c1", "dqn", 4, 1, "gather", 0.5)
context2 = db.create_simulation_context('sim_002')
db.close()
'''


def test_farm_factory_and_experiment_database(facades: None, conn: psycopg.Connection[Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("USE_EXPERIMENT_DB", "1")
    monkeypatch.setenv("EXPERIMENT_ID", "from_env")
    run_with_import_changed(FARM_FACTORY, {"config": {"width": 30}})
    assert conn.execute(
        "SELECT simulation_id, experiment_id, status FROM simulations ORDER BY 1"
    ).fetchall() == [("sim_1717", "my_experiment", "completed"),
                     ("sim_env", "from_env", "completed")]  # fmt: skip
    assert conn.execute(
        "SELECT config FROM simulation_config WHERE simulation_id = 'sim_1717'"
    ).fetchall() == [({"width": 30},)]
    assert conn.execute(
        "SELECT resource_id, amount FROM resource_states WHERE simulation_id = 'sim_1717'"
    ).fetchall() == [(3, 9.5)]
    run_with_import_changed(FARM_EXPERIMENT_DATABASE, {})
    assert conn.execute(
        "SELECT simulation_id, status FROM simulations WHERE experiment_id = 'exp_001'"
        " ORDER BY 1"
    ).fetchall() == [("sim_001", "completed"), ("sim_002", "completed")]
    assert conn.execute(
        "SELECT step, agent_id, health_before, health_after, cause, details"
        " FROM health_incidents WHERE simulation_id = 'sim_001'"
    ).fetchall() == [(2, "c1", 80.0, 60.0, "starvation", {"food": 0})]
    assert conn.execute(
        "SELECT step, module_type, module_id, action_taken, action_taken_mapped, reward"
        " FROM learning_experiences WHERE simulation_id = 'sim_001'"
    ).fetchall() == [(2, "dqn", "4", 1, "gather", 0.5)]
