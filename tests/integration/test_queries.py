"""The query API against seeded data: every answer is recomputed in Python from the seed."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import psycopg
import pytest
from seed import EXPERIMENT, Seed, seed_bulk

from sim_schema import repositories as repo
from sim_schema.errors import ConfigurationError, NotFound
from sim_schema.models import AgentAction, AgentState
from sim_schema.read import queries as q

SIM = "sim_b"


def _agent(seed: Seed, sim: str = SIM) -> str:
    """An agent that lived long enough to have a useful history."""
    rows = Counter(r["agent_id"] for r in seed.rows("agent_states", sim))
    return rows.most_common(1)[0][0]


async def test_agent_history_streams_in_step_order(seed: Seed, aconn: Any) -> None:
    agent = _agent(seed)
    got = [s async for s in q.agent_history(aconn, SIM, agent, start_step=3, end_step=12)]
    want = sorted(
        (r["step"], r["health"]) for r in seed.rows("agent_states", SIM)
        if r["agent_id"] == agent and 3 <= r["step"] <= 12
    )
    assert [(s.step, s.health) for s in got] == want
    assert all(isinstance(s, AgentState) and s.simulation_id == SIM for s in got)
    stored = {r["step"]: r for r in seed.rows("agent_states", SIM) if r["agent_id"] == agent}
    for s in got:  # every column, as stored (the seed leaves the JSON columns NULL)
        want_row = {**AgentState(**stored[s.step]).model_dump()}
        assert s.model_dump() == want_row
    full = [s async for s in q.agent_history(aconn, SIM, agent)]
    assert len(full) == sum(1 for r in seed.rows("agent_states", SIM) if r["agent_id"] == agent)


async def test_step_snapshot(seed: Seed, aconn: Any) -> None:
    got = [s async for s in q.step_snapshot(aconn, SIM, 10)]
    want = sorted(
        (r["agent_id"], r["resource_level"])
        for r in seed.rows("agent_states", SIM) if r["step"] == 10
    )
    assert [(s.agent_id, s.resource_level) for s in got] == want


async def test_actions_by_scope(seed: Seed, aconn: Any) -> None:
    rows = seed.rows("agent_actions", SIM)
    agent = _agent(seed)
    by_agent = [a async for a in q.actions(aconn, SIM, agent_id=agent)]
    assert len(by_agent) == sum(1 for r in rows if r["agent_id"] == agent)
    assert all(isinstance(a, AgentAction) and a.ordinal == 0 for a in by_agent)
    assert [(a.step, a.action_type, a.resources_before, a.resources_after, a.reward)
            for a in by_agent] == [
        (r["step"], r["action_type"], r["resources_before"], r["resources_after"], r["reward"])
        for r in rows if r["agent_id"] == agent
    ]
    at_step = [a async for a in q.actions(aconn, SIM, step=5)]
    assert sorted(a.reward for a in at_step) == sorted(r["reward"] for r in rows if r["step"] == 5)
    ranged = [a async for a in q.actions(aconn, SIM, start_step=4, end_step=9,
                                         action_type="gather")]
    assert len(ranged) == sum(
        1 for r in rows if 4 <= r["step"] <= 9 and r["action_type"] == "gather"
    )
    assert {a.action_type for a in ranged} == {"gather"}
    assert [a.step for a in ranged] == sorted(a.step for a in ranged)


async def test_population_births_deaths_lifespans(seed: Seed, aconn: Any) -> None:
    types = {r["agent_id"]: r["agent_type"] for r in seed.rows("agents", SIM)}
    want = Counter((r["step"], types[r["agent_id"]]) for r in seed.rows("agent_states", SIM))
    got = await q.population_over_time(aconn, SIM)
    assert {(p.step, p.agent_type): p.agents for p in got} == dict(want)
    health: dict[tuple[int, str], list[float]] = defaultdict(list)
    for r in seed.rows("agent_states", SIM):
        health[(r["step"], types[r["agent_id"]])].append(r["health"])
    for p in got:
        vals = health[(p.step, p.agent_type)]
        assert p.average_health == pytest.approx(sum(vals) / len(vals))

    births: Counter[int] = Counter()
    deaths: Counter[int] = Counter()
    for a in seed.rows("agents", SIM):
        if a["birth_step"] > 0:
            births[a["birth_step"]] += 1
        if a["death_step"] is not None:
            deaths[a["death_step"]] += 1
    bd = await q.births_and_deaths(aconn, SIM)
    assert {b.step: (b.births, b.deaths) for b in bd} == {
        s: (births[s], deaths[s]) for s in births.keys() | deaths.keys()
    }

    spans = await q.agent_lifespans(aconn, SIM)
    assert {s.agent_id: s.lifespan for s in spans} == {
        a["agent_id"]: None if a["death_step"] is None else a["death_step"] - a["birth_step"]
        for a in seed.rows("agents", SIM)
    }


async def test_resources_learning_health(seed: Seed, aconn: Any) -> None:
    totals: dict[int, float] = defaultdict(float)
    for r in seed.rows("resource_states", SIM):
        totals[r["step"]] += r["amount"]
    got = await q.resource_totals(aconn, SIM)
    assert [g.step for g in got] == sorted(totals)
    assert [g.total_amount for g in got] == pytest.approx([totals[s] for s in sorted(totals)])

    buckets: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in seed.rows("learning_experiences", SIM):
        buckets[(r["module_type"], r["step"] // 10 * 10)].append(r["reward"])
    lp = await q.learning_progress(aconn, SIM, bucket_size=10)
    assert {(p.module_type, p.bucket_start): p.experiences for p in lp} == {
        k: len(v) for k, v in buckets.items()
    }
    for p in lp:
        vals = buckets[(p.module_type, p.bucket_start)]
        assert p.mean_reward == pytest.approx(sum(vals) / len(vals))
    with pytest.raises(ConfigurationError, match="bucket_size"):
        await q.learning_progress(aconn, SIM, bucket_size=0)

    causes = Counter(r["cause"] for r in seed.rows("health_incidents", SIM))
    hc = await q.health_incidents_by_cause(aconn, SIM)
    assert {h.cause: h.incidents for h in hc} == dict(causes)
    assert [h.incidents for h in hc] == sorted((h.incidents for h in hc), reverse=True)


async def test_decision_statistics(seed: Seed, aconn: Any) -> None:
    rows = seed.rows("agent_decisions", SIM)
    [overall] = await q.decision_statistics(aconn, SIM)
    assert overall.decisions == len(rows)
    assert overall.mean_processing_time == pytest.approx(
        sum(r["processing_time"] for r in rows) / len(rows)
    )
    assert overall.rated == sum(1 for r in rows if r["rating"] is not None)
    per_agent = await q.decision_statistics(aconn, SIM, by="agent")
    want_agents = Counter(r["agent_id"] for r in rows)
    assert {d.agent_id: d.decisions for d in per_agent} == dict(want_agents)
    per_step = await q.decision_statistics(aconn, SIM, by="step")
    assert {d.step: d.decisions for d in per_step} == dict(Counter(r["step"] for r in rows))


async def test_environment_latest_and_diff(seed: Seed, aconn: Any) -> None:
    envs = {r["step"]: r["state"] for r in seed.rows("environment_states", SIM)}
    latest = await repo.latest_environment_state(aconn, SIM)
    assert latest is not None and latest.step == max(envs) and latest.state == envs[max(envs)]
    diff = await q.environment_diff(aconn, SIM, 5, 15)
    # k0 at step 5, k1 at step 15; grid.h grows from 10 to 11; step changes
    assert diff.removed == {"k0": True}
    assert diff.added == {"k1": True}
    assert diff.changed["step"] == (5, 15)
    assert diff.changed["grid.h"] == (10, 11)
    assert "grid.w" not in diff.changed
    with pytest.raises(NotFound, match="step 7"):
        await q.environment_diff(aconn, SIM, 5, 7)
    assert await repo.latest_environment_state(aconn, "nope") is None


async def test_compare_metric_column_and_json_key(seed: Seed, aconn: Any) -> None:
    got = [p async for p in q.compare_metric(aconn, "total_agents", experiment_id=EXPERIMENT)]
    want = sorted(
        (r["simulation_id"], r["step"], r["total_agents"])
        for r in seed.rows("simulation_steps") if r["simulation_id"] != "solo"
    )
    assert [(p.simulation_id, p.step, p.value) for p in got] == want
    assert all(type(p.value) is int for p in got)  # an integer column stays an integer
    some = [p async for p in q.compare_metric(aconn, "metrics.custom_score",
                                              simulation_ids=["sim_a", "solo"], end_step=4)]
    assert [(p.simulation_id, p.step, p.value) for p in some] == sorted(
        (r["simulation_id"], r["step"], r["metrics"]["custom_score"])
        for r in seed.rows("simulation_steps")
        if r["simulation_id"] in ("sim_a", "solo") and r["step"] <= 4
    )


async def test_compare_metric_rejects_unknown_name_listing_valid_ones(
    seed: Seed, aconn: Any
) -> None:
    with pytest.raises(ConfigurationError) as info:
        [p async for p in q.compare_metric(aconn, "total_agents; DROP TABLE agents")]
    message = str(info.value)
    assert "total_agents, system_agents" in message
    assert "metrics.custom_score" in message
    assert "simulation_id" not in message.split("valid:")[1]


async def test_final_summary_and_parameter_aggregation(seed: Seed, aconn: Any) -> None:
    rows = await q.final_summary(aconn, experiment_id=EXPERIMENT)
    assert [r.simulation_id for r in rows] == ["sim_a", "sim_b", "sim_c"]
    last = {r["simulation_id"]: r for r in seed.rows("simulation_steps") if r["step"] == 29}
    for r in rows:
        agents = seed.rows("agents", r.simulation_id)
        assert r.final_step == 29
        assert r.final_total_agents == last[r.simulation_id]["total_agents"]
        assert r.births == sum(1 for a in agents if a["birth_step"] > 0)
        assert r.deaths == sum(1 for a in agents if a["death_step"] is not None)
        params = {s["simulation_id"]: s["parameters"] for s in seed.rows("simulations")}
        assert r.parameters == params[r.simulation_id]

    agg = await q.aggregate_by_parameter(aconn, "food", "total_agents", experiment_id=EXPERIMENT)
    finals = {s: last[s]["total_agents"] for s in ("sim_a", "sim_b", "sim_c")}
    assert [(a.value, a.simulations) for a in agg] == [(1, 1), (2, 2)]
    assert all(type(a.value) is int for a in agg)  # the parameter's value as stored
    assert agg[1].mean == pytest.approx((finals["sim_b"] + finals["sim_c"]) / 2)
    assert agg[1].maximum == max(finals["sim_b"], finals["sim_c"])
    assert agg[1].minimum == min(finals["sim_b"], finals["sim_c"])
    assert type(agg[1].maximum) is int and type(agg[1].minimum) is int  # an integer metric
    with pytest.raises(ConfigurationError, match="valid: food, rate"):
        await q.aggregate_by_parameter(aconn, "fod", "total_agents", experiment_id=EXPERIMENT)


async def test_experiments(seed: Seed, aconn: Any) -> None:
    [info] = await q.experiments(aconn, EXPERIMENT)
    assert info.simulations == 3
    with pytest.raises(NotFound, match="nope"):
        await q.experiments(aconn, "nope")


def _plan(conn: psycopg.Connection[Any], query: str, params: list[Any]) -> str:
    rows = conn.execute("EXPLAIN " + query, params).fetchall()  # type: ignore[arg-type]
    return "\n".join(r[0] for r in rows)


@pytest.mark.slow
def test_history_and_snapshot_plans_use_indexes(conn: psycopg.Connection[Any]) -> None:
    """On ~360k analyzed rows, filtered reads use an index, never a seq scan of agent_states."""
    seed_bulk(conn)
    history = _plan(
        conn,
        "SELECT * FROM agent_states WHERE simulation_id = %s AND agent_id = %s ORDER BY step",
        ["bulk3", "a17"],
    )
    assert "agent_states_data_by_agent_idx" in history, history
    assert "Seq Scan" not in history, history
    snapshot = _plan(
        conn,
        "SELECT * FROM agent_states WHERE simulation_id = %s AND step = %s ORDER BY agent_id",
        ["bulk3", 50],
    )
    assert "agent_states_data_pkey" in snapshot, snapshot
    assert "Seq Scan on agent_states_data" not in snapshot, snapshot
    population = _plan(
        conn, "SELECT * FROM population_by_step WHERE simulation_id = %s AND step = %s",
        ["bulk3", 50],
    )
    assert "agent_states_data" not in population, population  # read from the rollup


async def test_streams_can_stop_early_and_leave_the_connection_usable(
    seed: Seed, aconn: Any
) -> None:
    stream = q.step_snapshot(aconn, SIM, 0)
    first = await anext(stream)
    await stream.aclose()
    assert first.step == 0
    [overall] = await q.decision_statistics(aconn, SIM)
    assert overall.decisions == len(seed.rows("agent_decisions", SIM))
    async for point in q.compare_metric(aconn, "births", simulation_ids=[SIM]):
        assert point.simulation_id == SIM
        break
    assert len(await q.agent_lifespans(aconn, SIM)) == len(seed.rows("agents", SIM))


async def test_json_metric_beyond_the_sample_and_non_numeric_values(
    seed: Seed, aconn: Any
) -> None:
    await aconn.execute(
        "UPDATE simulation_steps SET metrics = metrics || %s::jsonb"
        " WHERE simulation_id = 'solo' AND step IN (28, 29)",
        ['{"late": 5}'],
    )
    await aconn.execute(
        "UPDATE simulation_steps SET metrics = metrics || '{\"late\": \"n/a\"}'"
        " WHERE simulation_id = 'solo' AND step = 29"
    )
    points = [p async for p in q.compare_metric(aconn, "late", simulation_ids=["solo"],
                                                start_step=27)]
    assert [(p.step, p.value) for p in points] == [(27, None), (28, 5), (29, None)]
    assert type(points[1].value) is int  # the JSON number as logged


async def test_json_metric_key_outside_the_sampled_rows_is_found(aconn: Any) -> None:
    await aconn.execute("INSERT INTO simulations (simulation_id) VALUES ('long')")
    await aconn.execute(
        "INSERT INTO simulation_steps (simulation_id, step, metrics)"
        " SELECT 'long', s, CASE WHEN s = 1500 THEN '{\"rare\": 2}' ELSE '{\"a\": 1}' END::jsonb"
        " FROM generate_series(0, 1500) s"
    )
    points = [p async for p in q.compare_metric(aconn, "rare", simulation_ids=["long"],
                                                start_step=1500)]
    assert [(p.step, p.value) for p in points] == [(1500, 2.0)]
