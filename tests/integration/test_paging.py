"""Every listing pages by keyset: the pages of `limit` rows, each after the last row of the
previous one, are exactly the whole listing in its stated order; and the filters a
service needs (events by source, target, processed; experiments by name and tag;
decisions with feedback) select exactly the rows they say."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from seed import EXPERIMENT, Seed

from sim_schema import queries
from sim_schema import repositories as repo
from sim_schema.errors import ConfigurationError
from sim_schema.models import AgentState, Interaction
from sim_schema.repositories._sql import select_query

Conn = psycopg.AsyncConnection[Any]
SIM = "sim_c"
AGENT = "sim_c_a001"


@pytest.fixture
async def seeded(seed: Seed, conn: psycopg.Connection[Any], aconn: Conn) -> Conn:
    # What the seed lacks: several priorities and processed events, interactions, configs.
    conn.execute(
        "UPDATE events SET priority = step % 3 - 1,"
        " processed = get_byte(uuid_send(event_id), 15) % 4 = 0"
    )
    conn.execute("UPDATE events SET processed_at = now() WHERE processed")
    conn.execute("UPDATE events SET source_id = 'sim_c_a002' WHERE step % 3 = 0")
    conn.execute("UPDATE events SET target_id = 'sim_c_a001' WHERE step % 2 = 0")
    for step in range(6):
        for n in range(3):
            await repo.record_interaction(aconn, Interaction(
                simulation_id=SIM, step=step, source_type="agent", source_id=AGENT,
                target_type="agent", target_id=f"sim_c_a00{n}", interaction_type="talk"))
    for n in range(5):
        await repo.save_simulation_config(aconn, SIM, {"version": n})
    # Experiments made in one statement share created_at: their ids order them.
    conn.execute(
        "INSERT INTO experiments (experiment_id, name) SELECT 'x' || i, 'x' FROM"
        " generate_series(9, 1, -1) i"
    )
    return aconn


def _listings() -> dict[str, tuple[Callable[..., Any], dict[str, Any], Callable[[Any], Any]]]:
    """name -> (function, its arguments, the key of its stated order)."""
    step_agent = lambda r: (r.step, r.agent_id)  # noqa: E731
    step_agent_n = lambda r: (r.step, r.agent_id, r.ordinal)  # noqa: E731
    by_time = lambda r: (r.step, r.created_at, r.event_id)  # noqa: E731
    return {
        "list_agents": (repo.list_agents, {"simulation_id": SIM}, lambda r: r.agent_id),
        "list_agent_states": (repo.list_agent_states, {"simulation_id": SIM}, step_agent),
        "list_agent_actions": (repo.list_agent_actions, {"simulation_id": SIM}, step_agent_n),
        "list_resource_states": (
            repo.list_resource_states, {"simulation_id": SIM}, lambda r: (r.step, r.resource_id)),
        "list_step_metrics": (repo.list_step_metrics, {"simulation_id": SIM}, lambda r: r.step),
        "list_learning_experiences": (
            repo.list_learning_experiences, {"simulation_id": SIM}, step_agent_n),
        "list_health_incidents": (repo.list_health_incidents, {"simulation_id": SIM},
                                  step_agent_n),
        "list_interactions": (
            repo.list_interactions, {"simulation_id": SIM}, lambda r: (r.step, r.ordinal)),
        "list_environment_states": (
            repo.list_environment_states, {"simulation_id": SIM}, lambda r: r.step),
        "list_events": (repo.list_events, {"simulation_id": SIM}, by_time),
        "list_agent_events": (
            repo.list_agent_events, {"simulation_id": SIM, "agent_id": AGENT}, by_time),
        "list_unprocessed_events": (
            repo.list_unprocessed_events, {"simulation_id": SIM},
            lambda r: (-r.priority, r.step, r.created_at, r.event_id)),
        "list_decisions": (
            repo.list_decisions, {"simulation_id": SIM},
            lambda r: (r.step, r.created_at, r.decision_id)),
        "list_experiments": (
            repo.list_experiments, {}, lambda r: (r.created_at, r.experiment_id)),
        "list_simulations": (
            repo.list_simulations, {}, lambda r: (r.created_at, r.simulation_id)),
        "list_simulation_configs": (
            repo.list_simulation_configs, {"simulation_id": SIM}, lambda r: r.config_id),
        "agent_history": (
            queries.agent_history, {"simulation_id": SIM, "agent_id": AGENT}, lambda r: r.step),
        "step_snapshot": (
            queries.step_snapshot, {"simulation_id": SIM, "step": 12}, lambda r: r.agent_id),
        "actions": (queries.actions, {"simulation_id": SIM}, step_agent_n),
        "compare_metric": (
            queries.compare_metric, {"metric": "total_agents", "experiment_id": EXPERIMENT},
            lambda r: (r.simulation_id, r.step)),
    }


LISTINGS = _listings()


async def _rows(fn: Callable[..., Any], conn: Conn, **kw: Any) -> list[Any]:
    result = fn(conn, **kw)
    if isinstance(result, AsyncIterator):
        return [r async for r in result]
    got: list[Any] = await result
    return got


@pytest.mark.parametrize("name", sorted(LISTINGS))
async def test_pages_are_the_whole_listing_in_its_order(name: str, seeded: Conn) -> None:
    fn, kw, key = LISTINGS[name]
    everything = await _rows(fn, seeded, **kw)
    assert len(everything) >= 4, f"the seed gives {name} too little to page"
    assert [key(r) for r in everything] == sorted(key(r) for r in everything)
    size = max(1, len(everything) // 3 - 1)  # a few full pages and a partial last one
    pages: list[list[Any]] = []
    after = None
    while True:
        page = await _rows(fn, seeded, **kw, limit=size, after=after)
        assert len(page) <= size
        if not page:
            break
        pages.append(page)
        after = page[-1]
    assert [r for p in pages for r in p] == everything
    assert len(pages) >= 3


async def test_a_cursor_can_be_a_mapping_of_the_order_columns(seeded: Conn) -> None:
    states = await repo.list_agent_states(seeded, SIM, step=12)
    page = await repo.list_agent_states(
        seeded, SIM, limit=3, after={"step": 12, "agent_id": states[1].agent_id})
    assert page == (states[2:] + await repo.list_agent_states(seeded, SIM, step=13))[:3]
    history = [s async for s in queries.agent_history(
        seeded, SIM, AGENT, after={"step": 20}, limit=2)]
    assert [s.step for s in history] == [21, 22]
    with pytest.raises(ConfigurationError, match=r"after= must hold .*\(step, agent_id\)"):
        await repo.list_agent_states(seeded, SIM, after={"step": 3})
    with pytest.raises(ConfigurationError, match="limit must be an int >= 0"):
        await repo.list_agent_states(seeded, SIM, limit=-1)


async def test_event_filters(seeded: Conn) -> None:
    everything = await repo.list_events(seeded, SIM)
    cases: list[tuple[dict[str, Any], Callable[[Any], bool]]] = [
        ({"source_id": "sim_c_a002"}, lambda e: e.source_id == "sim_c_a002"),
        ({"target_id": AGENT}, lambda e: e.target_id == AGENT),
        ({"processed": True}, lambda e: e.processed),
        ({"processed": False, "target_id": AGENT},
         lambda e: not e.processed and e.target_id == AGENT),
        ({"event_type": "ask", "start_step": 5, "end_step": 9}, lambda e: 5 <= e.step <= 9),
    ]
    for filters, wanted in cases:
        expected = [e for e in everything if wanted(e)]
        assert 0 < len(expected) < len(everything), filters  # the filter has work to do
        assert await repo.list_events(seeded, SIM, **filters) == expected, filters
    assert await repo.list_events(seeded, SIM, dead_lettered=False) == everything
    assert await repo.list_events(seeded, SIM, dead_lettered=True) == []


async def test_experiments_by_name_and_tag(aconn: Conn) -> None:
    await repo.create_experiment(aconn, "e1", "sweep", tags={"domain": "urban", "v": 1})
    await repo.create_experiment(aconn, "e2", "sweep", tags={"domain": "farm"})
    await repo.create_experiment(aconn, "e3", "other", tags={"domain": "urban", "v": 2})
    ids = lambda rows: [r.experiment_id for r in rows]  # noqa: E731
    assert ids(await repo.list_experiments(aconn, name="sweep")) == ["e1", "e2"]
    assert ids(await repo.list_experiments(aconn, tags={"domain": "urban"})) == ["e1", "e3"]
    assert ids(await repo.list_experiments(aconn, tags={"domain": "urban", "v": 2})) == ["e3"]
    assert ids(await repo.list_experiments(aconn, name="sweep", tags={"v": 1})) == ["e1"]
    assert ids(await repo.list_experiments(aconn, name="none")) == []


async def test_decisions_with_feedback(seeded: Conn) -> None:
    everything = await repo.list_decisions(seeded, SIM)
    rated = await repo.list_decisions(seeded, SIM, with_feedback=True)
    unrated = await repo.list_decisions(seeded, SIM, with_feedback=False)
    assert rated == [d for d in everything if d.feedback_at is not None] == []  # seeded raw
    some = everything[1]
    await repo.add_decision_feedback(seeded, SIM, some.decision_id, feedback="good", rating=4.0)
    [got] = await repo.list_decisions(seeded, SIM, with_feedback=True)
    assert (got.decision_id, got.feedback, got.rating) == (some.decision_id, "good", 4.0)
    assert len(await repo.list_decisions(seeded, SIM, with_feedback=False)) == len(unrated) - 1


def _rows_read(node: dict[str, Any], relation: str) -> int:
    """Rows the plan's scans of `relation` returned, over all their loops."""
    if node.get("Relation Name") == relation:
        return int(node["Actual Rows"] * node.get("Actual Loops", 1))
    return sum(_rows_read(child, relation) for child in node.get("Plans", []))


def test_a_deep_page_reads_only_its_rows(conn: psycopg.Connection[Any]) -> None:
    """The plan of a page deep in a listing starts at the cursor, it does not read the
    rows before it: the statement `list_agent_states` runs, explained."""
    conn.execute("INSERT INTO simulations (simulation_id) VALUES ('big')")
    conn.execute(
        "INSERT INTO agents (simulation_id, agent_id, agent_type)"
        " SELECT 'big', 'a' || lpad(i::text, 3, '0'), 't' FROM generate_series(1, 100) i"
    )
    conn.execute(
        "INSERT INTO agent_states_data (sim_key, step, agent_key)"
        " SELECT s.sim_key, t, a.agent_key FROM simulations s JOIN agents a USING"
        " (simulation_id), generate_series(0, 199) t WHERE s.simulation_id = 'big'"
    )
    conn.execute("ANALYZE agents")
    conn.execute("ANALYZE agent_states_data")
    for step in (0, 100, 190):
        query, params = select_query(
            AgentState, {"simulation_id": "big"}, order=("step", "agent_id"), limit=100,
            after={"step": step, "agent_id": "a050"},
        )
        plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + query, params)
        [[tree]] = plan.fetchall()
        read = _rows_read(tree[0]["Plan"], "agent_states_data")
        rest = (200 - step) * 100  # the rows from the cursor's step on
        # a few steps' rows (or the rest when it is about as small), never what lies before
        assert 100 <= read <= min(300, rest) or read <= rest <= 1000, (step, read)
