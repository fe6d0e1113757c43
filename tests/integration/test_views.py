"""The analyst views of migration 0004: documented, and right on seeded data."""

from __future__ import annotations

from collections import Counter
from statistics import mean
from typing import Any

import psycopg
import pytest
from seed import Seed

VIEWS = ("simulation_summary", "population_by_step", "agent_lifespans", "action_statistics",
         "decision_training_rows")


def test_views_live_in_the_schema_with_comments(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT c.relname, c.relkind, obj_description(c.oid, 'pg_class') FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'sim' AND c.relname = ANY(%s)", [list(VIEWS)]
    ).fetchall()
    assert {r[0] for r in rows} == set(VIEWS)
    assert all(r[1] == "v" and r[2] for r in rows), rows


def test_views_are_empty_on_an_empty_database(conn: psycopg.Connection[Any]) -> None:
    for view in VIEWS:
        assert conn.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)


def test_simulation_summary(seed: Seed, conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT simulation_id, experiment_id, agents, initial_agents, births, deaths,"
        " final_step, final_total_agents, final_metrics FROM simulation_summary"
        " ORDER BY simulation_id").fetchall()
    assert [r[0] for r in rows] == sorted(seed.simulation_ids)
    for sid, exp, agents, initial, births, deaths, final, total, metrics in rows:
        a = seed.rows("agents", sid)
        last = max(seed.rows("simulation_steps", sid), key=lambda r: r["step"])
        sim = next(s for s in seed.rows("simulations") if s["simulation_id"] == sid)
        assert exp == sim["experiment_id"]
        assert agents == len(a)
        assert initial == sum(1 for x in a if x["birth_step"] == 0)
        assert births == agents - initial
        assert deaths == sum(1 for x in a if x["death_step"] is not None)
        assert (final, total, metrics) == (last["step"], last["total_agents"], last["metrics"])


def test_summary_of_a_simulation_without_data(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO simulations (simulation_id) VALUES ('empty')")
    row = conn.execute("SELECT agents, births, final_step FROM simulation_summary").fetchone()
    assert row == (0, 0, None)


def test_population_lifespans_actions_decisions(
    seed: Seed, conn: psycopg.Connection[Any]
) -> None:
    sid = "sim_a"
    types = {a["agent_id"]: a["agent_type"] for a in seed.rows("agents", sid)}
    want = Counter((r["step"], types[r["agent_id"]]) for r in seed.rows("agent_states", sid))
    got = conn.execute("SELECT step, agent_type, agents FROM population_by_step"
                       " WHERE simulation_id = %s", [sid]).fetchall()
    assert {(s, t): n for s, t, n in got} == dict(want)
    # population agrees with the step metrics the simulation logged itself
    logged = {r["step"]: r["total_agents"] for r in seed.rows("simulation_steps", sid)}
    assert {s: sum(n for (t, _), n in want.items() if t == s) for s in logged} == logged

    spans = dict(conn.execute("SELECT agent_id, lifespan FROM agent_lifespans"
                              " WHERE simulation_id = %s", [sid]).fetchall())
    assert spans == {a["agent_id"]: None if a["death_step"] is None
                     else a["death_step"] - a["birth_step"] for a in seed.rows("agents", sid)}

    stats = conn.execute("SELECT action_type, actions, mean_reward FROM action_statistics"
                         " WHERE simulation_id = %s", [sid]).fetchall()
    acts = seed.rows("agent_actions", sid)
    for kind, n, reward in stats:
        mine = [r["reward"] for r in acts if r["action_type"] == kind]
        assert n == len(mine) and reward == pytest.approx(mean(mine))

    rows = conn.execute("SELECT decision_id, experiment_id, event_type, prompt, rating"
                        " FROM decision_training_rows WHERE simulation_id = %s", [sid]).fetchall()
    decisions = {d["decision_id"]: d for d in seed.rows("agent_decisions", sid)}
    assert {r[0] for r in rows} == set(decisions)
    for did, exp, event_type, prompt, rating in rows:
        assert (exp, event_type) == ("exp_sweep", "ask")
        assert (prompt, rating) == (decisions[did]["prompt"], decisions[did]["rating"])
