"""Every file of `sql/` runs against seeded data; its rows are compared with answers
computed independently in Python from the same seed."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from statistics import mean
from typing import Any

import psycopg
import pytest
from seed import EXPERIMENT, Seed

from sim_schema import catalog
from sim_schema.errors import ConfigurationError
from sim_schema.read import sqllib

SIM = "sim_c"
AGENT = "sim_c_a001"
Rows = list[tuple[Any, ...]]


def approx_rows(rows: Rows) -> list[Any]:
    return [tuple(pytest.approx(v) if isinstance(v, float) else v for v in r) for r in rows]


def _agents(s: Seed) -> dict[str, Row]:
    return {a["agent_id"]: a for a in s.rows("agents", SIM)}


Row = dict[str, Any]


def full(table: str, row: Row) -> tuple[Any, ...]:
    """A seed row with every column of the table, in table order (defaults filled in)."""
    return tuple(row.get(c.name, c.default) for c in catalog.table(table).columns)


def agent_history(s: Seed) -> Rows:
    return sorted(
        (full("agent_states", r) for r in s.rows("agent_states", SIM) if r["agent_id"] == AGENT),
        key=lambda r: r[1],
    )


def agent_latest(s: Seed) -> Rows:
    """The last state, its JSONB columns the latest non-NULL ones (profile: else the
    registration profile, which the seed leaves at its default)."""
    rows = sorted(
        (r for r in s.rows("agent_states", SIM) if r["agent_id"] == AGENT), key=lambda r: r["step"]
    )

    def latest(column: str, otherwise: Any = None) -> Any:
        return next((r[column] for r in reversed(rows) if r.get(column) is not None), otherwise)

    last = dict(zip([c.name for c in catalog.table("agent_states").columns],
                    full("agent_states", rows[-1]), strict=True))
    # the case is only worth something if the latest row lacks what an earlier one has
    assert last["memory"] is None and latest("memory") is not None
    last.update(profile=latest("profile", {}), memory=latest("memory"),
                relationships=latest("relationships"))
    return [tuple(last.values())]


def step_snapshot(s: Seed) -> Rows:
    return sorted(
        (full("agent_states", r) for r in s.rows("agent_states", SIM) if r["step"] == 12),
        key=lambda r: r[2],
    )


def agent_actions(s: Seed) -> Rows:
    """The seed logs at most one action per agent and step: each is numbered 0 there."""
    return [
        full("agent_actions", {**r, "ordinal": 0})
        for r in s.rows("agent_actions", SIM)
        if r["agent_id"] == AGENT and 5 <= r["step"] <= 20
    ]


def action_statistics(s: Seed) -> Rows:
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in s.rows("agent_actions", SIM):
        groups[r["action_type"]].append(r)
    out = [
        (t, len(g), len({r["agent_id"] for r in g}), mean(r["reward"] for r in g),
         sum(r["reward"] for r in g),
         mean(r["resources_after"] - r["resources_before"] for r in g))
        for t, g in groups.items()
    ]
    return sorted(out, key=lambda r: (-r[1], r[0]))


def population_by_type(s: Seed) -> Rows:
    types = _agents(s)
    groups: dict[tuple[int, str], list[float]] = defaultdict(list)
    for r in s.rows("agent_states", SIM):
        groups[(r["step"], types[r["agent_id"]]["agent_type"])].append(r["health"])
    return [(k[0], k[1], len(v), mean(v)) for k, v in sorted(groups.items())]


def population_dynamics(s: Seed) -> Rows:
    alive = Counter(r["step"] for r in s.rows("agent_states", SIM))
    births = Counter(a["birth_step"] for a in s.rows("agents", SIM) if a["birth_step"] > 0)
    deaths = Counter(a["death_step"] for a in s.rows("agents", SIM) if a["death_step"] is not None)
    steps = sorted(alive.keys() | births.keys() | deaths.keys())
    return [(t, alive[t], births[t], deaths[t], births[t] - deaths[t]) for t in steps]


def lifespans_by_type(s: Seed) -> Rows:
    groups: dict[str, list[Row]] = defaultdict(list)
    for a in s.rows("agents", SIM):
        groups[a["agent_type"]].append(a)
    out = []
    for t, g in sorted(groups.items()):
        spans = [a["death_step"] - a["birth_step"] for a in g if a["death_step"] is not None]
        out.append((t, len(g), len(spans), mean(spans) if spans else None,
                    max(spans) if spans else None))
    return out


def agent_lifespans(s: Seed) -> Rows:
    return [
        (a["agent_id"], a["agent_type"], a["birth_step"], a["death_step"],
         None if a["death_step"] is None else a["death_step"] - a["birth_step"])
        for a in sorted(s.rows("agents", SIM), key=lambda a: a["agent_id"])
    ]


def births_and_deaths(s: Seed) -> Rows:
    births = Counter(a["birth_step"] for a in s.rows("agents", SIM) if a["birth_step"] > 0)
    deaths = Counter(a["death_step"] for a in s.rows("agents", SIM) if a["death_step"] is not None)
    return [(t, births[t], deaths[t]) for t in sorted(births.keys() | deaths.keys())]


def _resources(s: Seed) -> dict[int, list[float]]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for r in s.rows("resource_states", SIM):
        by_step[r["step"]].append(r["amount"])
    return by_step


def resource_totals(s: Seed) -> Rows:
    return [(t, sum(v), len(v)) for t, v in sorted(_resources(s).items())]


def resource_efficiency(s: Seed) -> Rows:
    env = _resources(s)
    held: dict[int, list[float]] = defaultdict(list)
    for r in s.rows("agent_states", SIM):
        held[r["step"]].append(r["resource_level"])
    return [
        (t, len(v), sum(v), sum(env[t]), sum(v) / len(v), sum(v) / sum(env[t]))
        for t, v in sorted(held.items())
    ]


def learning_progress(s: Seed) -> Rows:
    groups: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in s.rows("learning_experiences", SIM):
        groups[(r["module_type"], r["step"] // 7 * 7)].append(r["reward"])
    return [(k[0], k[1], len(v), mean(v)) for k, v in sorted(groups.items())]


def health_by_cause(s: Seed) -> Rows:
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in s.rows("health_incidents", SIM):
        groups[r["cause"]].append(r)
    out = [
        (c, len(g), len({r["agent_id"] for r in g}),
         mean(r["health_after"] - r["health_before"] for r in g))
        for c, g in groups.items()
    ]
    return sorted(out, key=lambda r: (-r[1], r[0]))


def decision_statistics(s: Seed) -> Rows:
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in s.rows("agent_decisions", SIM):
        groups[r["agent_id"]].append(r)
    out = []
    for agent, g in sorted(groups.items()):
        rated = [r["rating"] for r in g if r["rating"] is not None]
        out.append((agent, len(g), mean(r["processing_time"] for r in g), len(rated),
                    mean(rated) if rated else None))
    return out


def _decision_numbers(g: list[Row]) -> tuple[Any, ...]:
    rated = [r["rating"] for r in g if r["rating"] is not None]
    return (len(g), mean(r["processing_time"] for r in g), len(rated),
            mean(rated) if rated else None)


def decision_statistics_by_step(s: Seed) -> Rows:
    groups: dict[int, list[Row]] = defaultdict(list)
    for r in s.rows("agent_decisions", SIM):
        groups[r["step"]].append(r)
    return [(step, *_decision_numbers(g)) for step, g in sorted(groups.items())]


def decision_totals(s: Seed) -> Rows:
    return [_decision_numbers(s.rows("agent_decisions", SIM))]


def environment_latest(s: Seed) -> Rows:
    last = max(s.rows("environment_states", SIM), key=lambda r: r["step"])
    return [(SIM, last["step"], last["state"])]


def environment_at(s: Seed) -> Rows:
    [row] = [r for r in s.rows("environment_states", SIM) if r["step"] == 10]
    return [(SIM, 10, row["state"])]


def experiments(s: Seed) -> Rows:
    return [
        (e["experiment_id"], e["name"], "created", None,
         sum(1 for r in s.rows("simulations") if r["experiment_id"] == e["experiment_id"]))
        for e in s.rows("experiments")
    ]


def _experiment_sims(s: Seed) -> list[Row]:
    return [r for r in s.rows("simulations") if r["experiment_id"] == EXPERIMENT]


def compare_simulations(s: Seed) -> Rows:
    sims = {r["simulation_id"] for r in _experiment_sims(s)}
    return sorted(
        (r["simulation_id"], r["step"], r["total_agents"], r["total_resources"],
         r["average_agent_health"], r["average_reward"])
        for r in s.rows("simulation_steps") if r["simulation_id"] in sims
    )


def _final(s: Seed, sim: str) -> Row:
    return max(s.rows("simulation_steps", sim), key=lambda r: r["step"])


def simulation_summaries(s: Seed) -> Rows:
    out = []
    for sim in sorted(_experiment_sims(s), key=lambda r: r["simulation_id"]):
        sid = sim["simulation_id"]
        agents = s.rows("agents", sid)
        f = _final(s, sid)
        out.append((sid, EXPERIMENT, sim["name"], sim["status"], sim["parameters"],
                    sim["step_count"], len(agents),
                    sum(1 for a in agents if a["birth_step"] == 0),
                    sum(1 for a in agents if a["birth_step"] > 0),
                    sum(1 for a in agents if a["death_step"] is not None), f["step"],
                    f["total_agents"], f["total_resources"], f["average_agent_health"],
                    f["average_reward"]))
    return out


def parameter_sweep(s: Seed) -> Rows:
    groups: dict[Any, list[Row]] = defaultdict(list)  # by the value as stored: 1, not "1"
    for sim in _experiment_sims(s):
        groups[sim["parameters"]["food"]].append(_final(s, sim["simulation_id"]))
    return [
        (v, len(g), mean(f["total_agents"] for f in g), mean(f["total_resources"] for f in g),
         mean(f["average_reward"] for f in g))
        for v, g in sorted(groups.items())
    ]


def training_examples(s: Seed) -> Rows:
    events = {r["event_id"]: r for r in s.rows("events", SIM)}
    rows = [r for r in s.rows("agent_decisions", SIM)
            if r["rating"] is not None and r["rating"] >= 3]
    rows.sort(key=lambda r: (-r["rating"], r["step"], r["decision_id"]))
    return [
        (r["decision_id"], r["event_id"], events[r["event_id"]]["event_type"], r["agent_id"],
         r["step"], r["prompt"], r["output"], r["context"], r["action"], r["feedback"],
         r["rating"], r["reason"])
        for r in rows
    ]


CASES: dict[str, tuple[dict[str, Any], Callable[[Seed], Rows]]] = {
    "agent_history": ({"simulation_id": SIM, "agent_id": AGENT}, agent_history),
    "step_snapshot": ({"simulation_id": SIM, "step": 12}, step_snapshot),
    "agent_latest": ({"simulation_id": SIM, "agent_id": AGENT}, agent_latest),
    "agent_actions": ({"simulation_id": SIM, "agent_id": AGENT, "start_step": 5,
                       "end_step": 20}, agent_actions),
    "action_statistics": ({"simulation_id": SIM}, action_statistics),
    "population_by_type": ({"simulation_id": SIM}, population_by_type),
    "population_dynamics": ({"simulation_id": SIM}, population_dynamics),
    "agent_lifespans": ({"simulation_id": SIM}, agent_lifespans),
    "lifespans_by_type": ({"simulation_id": SIM}, lifespans_by_type),
    "births_and_deaths": ({"simulation_id": SIM}, births_and_deaths),
    "resource_totals": ({"simulation_id": SIM}, resource_totals),
    "resource_efficiency": ({"simulation_id": SIM}, resource_efficiency),
    "learning_progress": ({"simulation_id": SIM, "bucket_size": 7}, learning_progress),
    "health_by_cause": ({"simulation_id": SIM}, health_by_cause),
    "decision_statistics": ({"simulation_id": SIM}, decision_statistics),
    "decision_statistics_by_step": ({"simulation_id": SIM}, decision_statistics_by_step),
    "decision_totals": ({"simulation_id": SIM}, decision_totals),
    "environment_latest": ({"simulation_id": SIM}, environment_latest),
    "environment_at": ({"simulation_id": SIM, "step": 10}, environment_at),
    "experiments": ({}, experiments),
    "compare_simulations": ({"experiment_id": EXPERIMENT}, compare_simulations),
    "simulation_summaries": ({"experiment_id": EXPERIMENT}, simulation_summaries),
    "parameter_sweep": ({"experiment_id": EXPERIMENT, "parameter": "food"}, parameter_sweep),
    "training_examples": ({"simulation_id": SIM, "min_rating": 3}, training_examples),
}


def test_every_library_file_has_a_checked_case() -> None:
    assert set(sqllib.load_library()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_library_query_matches_python(
    name: str, seed: Seed, conn: psycopg.Connection[Any]
) -> None:
    params, expected = CASES[name]
    want = expected(seed)
    assert want, f"seed gives {name} nothing to check"
    columns, rows = sqllib.run_query(conn, name, params)
    got = [tuple(r) for r in rows]
    if name == "experiments":  # server-made timestamps
        got = [r[:5] for r in got]
    elif name in ("environment_latest", "environment_at"):
        got = [r[:3] for r in got]
    assert len(got[0]) == len(want[0]), columns
    assert got == approx_rows(want)


def test_headers_document_parameters_and_results() -> None:
    for query in sqllib.load_library().values():
        assert "Answers:" in query.header and "Returns:" in query.header, query.name
        given = set(CASES[query.name][0])
        required = set(query.parameters) - query.optional
        assert required <= given <= set(query.parameters), query.name


def test_bind_names_missing_and_unknown_parameters() -> None:
    query = sqllib.get_query("agent_history")
    with pytest.raises(ConfigurationError) as info:
        query.bind({"simulation_id": "x", "step": 1})
    assert str(info.value) == (
        "query 'agent_history': unknown parameter 'step'; missing parameter 'agent_id'; it takes:"
        " simulation_id, agent_id, start_step (optional), end_step (optional),"
        " after_step (optional), limit (optional)"
    )
    bound = query.bind({"simulation_id": "x", "agent_id": "a"})  # optional ones are NULL
    assert bound == {"simulation_id": "x", "agent_id": "a", "start_step": None, "end_step": None,
                     "after_step": None, "limit": None}
    assert query.optional == {"start_step", "end_step", "after_step", "limit"}
    with pytest.raises(ConfigurationError, match="valid: action_statistics"):
        sqllib.get_query("nope")


def test_header_must_match_placeholders(tmp_path: Path) -> None:
    path = tmp_path / "bad.sql"
    path.write_text("-- Bad.\n-- Parameters: %(a)s\nSELECT %(b)s::int\n")
    with pytest.raises(ConfigurationError, match=r"bad\.sql"):
        sqllib.load_library(tmp_path)
