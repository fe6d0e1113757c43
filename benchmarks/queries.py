"""Per-simulation analytics at scale: a generated dataset of N simulations x 1M agent
states (30 with `--scale`), latency percentiles and plans of the analyst queries, the
query API's overhead over the same SQL, and a delete's cost broken down.

The dataset is made server-side (INSERT ... SELECT generate_series) straight into the
`_data` tables, one simulation at a time in step order like a real run, with its agents
registered first (keys given explicitly) and its rollups kept by the schema's own
statement triggers; then VACUUM ANALYZE. Only simulation 0 also gets resource states,
learning experiences, health incidents, decisions and environment states, for the API
functions that read them. Agents' birth and death steps are set for the births-and-deaths
query; the state rows do not follow them (every agent has a state at every step).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row

from sim_schema import queries as api
from sim_schema import sqllib
from sim_schema.models import AgentAction, AgentState, EnvironmentState, record_rows

from .server import SCHEMA, connect

EXPERIMENT = "q-exp"
AGENT_TYPES_SQL = "(ARRAY['system','independent','control'])[a %% 3 + 1]"
ACTION_TYPES_SQL = "(ARRAY['move','gather','share','attack','defend','reproduce'])"


@dataclass(frozen=True)
class QueryShape:
    sims: int = 3
    agents: int = 1000
    steps: int = 1000

    @property
    def rows(self) -> int:
        return self.sims * self.agents * self.steps

    def sim_id(self, i: int) -> str:
        return f"q-sim-{i:02d}"


def _load_simulation(c: psycopg.Connection[Any], shape: QueryShape, i: int) -> None:
    sid, n, steps = shape.sim_id(i), shape.agents, shape.steps
    row = c.execute(
        "INSERT INTO simulations (simulation_id, experiment_id, status, step_count, parameters,"
        " next_agent_key) VALUES (%s, %s, 'completed', %s, jsonb_build_object('rate', %s), %s)"
        " RETURNING sim_key",
        (sid, EXPERIMENT, steps, i % 3, n),
    ).fetchone()
    assert row is not None
    key = row[0]
    # 90% of the agents from step 0, the rest born later; every fifth dies after step 500.
    c.execute(
        "INSERT INTO agents (simulation_id, agent_id, agent_key, agent_type, birth_step,"
        " death_step) "
        f"SELECT %(sid)s, 'agent-' || lpad(a::text, 6, '0'), a, {AGENT_TYPES_SQL},"
        " CASE WHEN a >= %(n)s * 9 / 10 THEN 1 + a %% 500 ELSE 0 END,"
        " CASE WHEN a %% 5 = 0 THEN 500 + a %% 400 END"
        " FROM generate_series(0, %(n)s - 1) a",
        {"sid": sid, "n": n},
    )
    c.execute(
        "INSERT INTO agent_states_data (sim_key, step, agent_key, age, position_x, position_y,"
        " resource_level, health, total_reward, is_defending, extras) "
        "SELECT %(key)s, s, a, s, random() * 100, random() * 100, random() * 20,"
        " CASE WHEN random() < 0.02 * s / %(steps)s THEN 0 ELSE 100 * random() END,"
        " s * random(), random() < 0.1,"
        " jsonb_build_object('mood', (ARRAY['calm','hungry','alert'])[a %% 3 + 1],"
        "  'energy', round(random()::numeric, 4),"
        "  'visited', jsonb_build_array(a %% 100, s %% 100, 7))"
        " FROM generate_series(0, %(steps)s - 1) s, generate_series(0, %(n)s - 1) a",
        {"key": key, "steps": steps, "n": n},
    )
    c.execute(
        "INSERT INTO agent_actions_data (resources_before, resources_after, reward, sim_key,"
        " step, agent_key, state_before_step, state_after_step, ordinal, action_type,"
        " action_target_id, details) "
        "SELECT r, r + random() - 0.5, random() * 2 - 1, %(key)s, s, a, s, s + 1, 0,"
        f" {ACTION_TYPES_SQL}[(a * 7 + s) %% 6 + 1],"
        " CASE WHEN random() < 0.3"
        "  THEN 'agent-' || lpad(((a * 31 + s) %% %(n)s)::text, 6, '0') END,"
        " jsonb_build_object('success', random() < 0.8)"
        " FROM generate_series(0, %(steps)s - 1) s, generate_series(0, %(n)s - 1) a,"
        " LATERAL (SELECT random() * 20 AS r) x WHERE (a * 13 + s * 7) %% 20 <> 0",
        {"key": key, "steps": steps, "n": n},
    )
    c.execute(
        "INSERT INTO simulation_steps (simulation_id, step, total_agents, total_resources,"
        " average_agent_resources, births, deaths, average_agent_health, average_reward,"
        " genetic_diversity) "
        "SELECT %s, s, %s, 1000 + 100 * random(), 10 * random(), 0, 0, 50 + 10 * random(),"
        " random(), random() FROM generate_series(0, %s - 1) s",
        (sid, n, steps),
    )
    if i == 0:
        _load_other_tables(c, key, sid, shape)


def _load_other_tables(c: psycopg.Connection[Any], key: int, sid: str, shape: QueryShape) -> None:
    """The smaller per-step tables, for simulation 0 only (the API functions that read them)."""
    p = {"key": key, "sid": sid, "steps": shape.steps, "n": shape.agents}
    c.execute(
        "INSERT INTO resource_states_data (sim_key, step, resource_id, amount, position_x,"
        " position_y) SELECT %(key)s, s, r, random() * 50, r %% 10 * 10, r / 10 * 10"
        " FROM generate_series(0, %(steps)s - 1) s, generate_series(0, 99) r",
        p,
    )
    c.execute(
        "INSERT INTO learning_experiences_data (reward, sim_key, step, agent_key, action_taken,"
        " ordinal, module_type, module_id, action_taken_mapped) "
        "SELECT random(), %(key)s, s, a, a %% 6, 0, (ARRAY['move','gather'])[a %% 2 + 1],"
        " 'm' || (a %% 2), 'act' || (a %% 6)"
        " FROM generate_series(0, %(steps)s - 1, 10) s, generate_series(0, %(n)s - 1) a",
        p,
    )
    c.execute(
        "INSERT INTO health_incidents_data (health_before, health_after, sim_key, step,"
        " agent_key, ordinal, cause) "
        "SELECT 80, 80 - 10 * random(), %(key)s, s, a, 0,"
        " (ARRAY['starvation','combat','age'])[a %% 3 + 1]"
        " FROM generate_series(0, %(steps)s - 1, 100) s, generate_series(0, %(n)s - 1) a",
        p,
    )
    c.execute(
        "INSERT INTO agent_decisions (simulation_id, step, agent_id, processing_time, rating) "
        "SELECT %(sid)s, s, 'agent-' || lpad(a::text, 6, '0'), random(),"
        " CASE WHEN a %% 2 = 0 THEN random() END"
        " FROM generate_series(0, %(steps)s - 1, 100) s, generate_series(0, %(n)s - 1) a",
        p,
    )
    c.execute(
        "INSERT INTO environment_states (simulation_id, step, state) "
        "SELECT %(sid)s, s, jsonb_build_object('season', s / 250,"
        " 'weather', jsonb_build_object('rain', s %% 7, 'wind', s %% 3))"
        " FROM generate_series(0, %(steps)s - 1) s",
        p,
    )


def load(dsn: str, shape: QueryShape, log: Callable[[str], None]) -> dict[str, float]:
    """Generate the dataset; returns load timings in seconds."""
    timings: dict[str, float] = {}
    with connect(dsn) as c:
        c.execute(
            "INSERT INTO experiments (experiment_id, name) VALUES (%s, 'query benchmark')",
            (EXPERIMENT,),
        )
        t0 = time.perf_counter()
        for i in range(shape.sims):
            with c.transaction():
                _load_simulation(c, shape, i)
            log(
                f"  loaded {shape.sim_id(i)}: {(i + 1) * shape.agents * shape.steps:,} agent"
                f" states ({time.perf_counter() - t0:.0f} s)"
            )
        timings["insert_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        c.execute("VACUUM ANALYZE")
        timings["vacuum_analyze_s"] = time.perf_counter() - t0
    return timings


# -- the analyst queries (SQL library files, run directly) ------------------------------

Params = Callable[[random.Random], dict[str, Any]]


@dataclass(frozen=True)
class Query:
    label: str
    library: str  # sql/<library>.sql
    params: Params
    target_ms: float


def targeted(shape: QueryShape) -> list[Query]:
    """The queries issue 12 sets targets for, each a file of the SQL library."""

    def sim(r: random.Random) -> str:
        return shape.sim_id(r.randrange(shape.sims))

    def agent(r: random.Random) -> str:
        return f"agent-{r.randrange(shape.agents):06d}"

    return [
        Query(
            "population by type over time",
            "population_by_type",
            lambda r: {"simulation_id": sim(r)},
            100.0,
        ),
        Query("births and deaths", "births_and_deaths", lambda r: {"simulation_id": sim(r)}, 100.0),
        Query("action statistics", "action_statistics", lambda r: {"simulation_id": sim(r)}, 100.0),
        Query(
            "agent history (1000 steps of one agent)",
            "agent_history",
            lambda r: {"simulation_id": sim(r), "agent_id": agent(r)},
            5.0,
        ),
        Query(
            "step snapshot (1000 agents at one step)",
            "step_snapshot",
            lambda r: {"simulation_id": sim(r), "step": r.randrange(shape.steps)},
            5.0,
        ),
        Query(
            f"{shape.sims}-simulation comparison of step metrics",
            "compare_simulations",
            lambda r: {"experiment_id": EXPERIMENT},
            50.0,
        ),
    ]


def _plan_nodes(plan: dict[str, Any], out: list[str]) -> None:
    label = plan["Node Type"]
    if "Relation Name" in plan:
        label += f" on {plan['Relation Name']}"
    if "Index Name" in plan:
        label += f" using {plan['Index Name']}"
    out.append(label)
    for child in plan.get("Plans", []):
        _plan_nodes(child, out)


def explain(c: psycopg.Connection[Any], statement: Any, params: Any) -> dict[str, Any]:
    """The plan's nodes, and from one EXPLAIN ANALYZE the server's execution time and the
    shared buffers it hit and read."""
    row = c.execute(
        psycopg.sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(statement), params
    ).fetchone()
    assert row is not None
    doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    nodes: list[str] = []
    _plan_nodes(doc[0]["Plan"], nodes)
    return {
        "plan": nodes,
        "server_ms": round(doc[0]["Execution Time"], 2),
        "buffers_hit": doc[0]["Plan"].get("Shared Hit Blocks", 0),
        "buffers_read": doc[0]["Plan"].get("Shared Read Blocks", 0),
    }


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def measure(dsn: str, shape: QueryShape, runs: int, seed: int = 7) -> list[dict[str, Any]]:
    """p50/p95 latency (ms, client side, every row fetched) and plan nodes of each query."""
    rng = random.Random(seed)
    results = []
    with connect(dsn) as c:
        for q in targeted(shape):
            statement, _ = sqllib.bound(q.library, q.params(rng))

            def once(q: Query = q, statement: Any = statement) -> tuple[float, int]:
                params = sqllib.get_query(q.library).bind(q.params(rng))
                t0 = time.perf_counter()
                rows = c.execute(statement, params).fetchall()
                return (time.perf_counter() - t0) * 1000, len(rows)

            once()  # warm the cache and the plan
            timed = [once() for _ in range(runs)]
            plan = explain(c, statement, sqllib.get_query(q.library).bind(q.params(rng)))
            times = [t for t, _ in timed]
            p50 = statistics.median(times)
            results.append(
                {
                    "query": q.label,
                    "library": q.library,
                    "runs": runs,
                    "rows": round(statistics.mean(n for _, n in timed)),
                    "p50_ms": round(p50, 2),
                    "p95_ms": round(pct(times, 95), 2),
                    "target_p50_ms": q.target_ms,
                    "met": p50 < q.target_ms,
                    **plan,
                }
            )
    return results


# -- the query API against the same SQL run directly ------------------------------------

Call = Callable[[psycopg.AsyncConnection[Any]], Awaitable[int]]
Statements = list[tuple[Any, Any]]  # (statement, params) run in order by the direct forms


async def _count(stream: Any) -> int:
    n = 0
    async for _ in stream:
        n += 1
    return n


def _direct(statements: Statements, rows: Any = None) -> Call:
    """The statements run directly: execute + fetchall, tuples (rows None) or the row
    factory the API uses."""

    async def run(conn: psycopg.AsyncConnection[Any]) -> int:
        n = 0
        for statement, params in statements:
            async with conn.cursor(row_factory=rows) if rows else conn.cursor() as cur:
                await cur.execute(statement, params)
                n += len(await cur.fetchall())
        return n

    return run


def _library(name: str, **params: Any) -> Statements:
    return [sqllib.bound(name, params)]


# The two queries the API builds (compare_metric, aggregate_by_parameter) for a column
# metric, written out: what an analyst would run by hand.
_COMPARE = (
    "SELECT st.simulation_id, st.step, st.average_agent_health::float8 AS value"
    " FROM simulation_steps st JOIN simulations s USING (simulation_id)"
    " WHERE true AND s.experiment_id = %s ORDER BY st.simulation_id, st.step"
)
_AGGREGATE = (
    "SELECT f.value, count(*)::int AS simulations, avg(f.metric) AS mean,"
    " min(f.metric) AS minimum, max(f.metric) AS maximum"
    " FROM (SELECT s.parameters ->> %s AS value, last.metric FROM simulations s"
    " LEFT JOIN LATERAL (SELECT st.average_agent_health::float8 AS metric"
    " FROM simulation_steps st WHERE st.simulation_id = s.simulation_id"
    " ORDER BY st.step DESC LIMIT 1) last ON true WHERE true AND s.experiment_id = %s) f"
    " GROUP BY f.value ORDER BY f.value"
)

Pair = tuple[str, str, Call, Statements, Any]


def api_pairs(shape: QueryShape, rng: random.Random) -> list[Pair]:
    """(function, what it reads, the call through the API, the same SQL, the row factory
    the API builds its results with) for every query function of
    `sim_schema.read.queries`, with this run's random simulation, agent and step."""
    sim = shape.sim_id(rng.randrange(shape.sims))
    s0 = shape.sim_id(0)  # the one with resources, learning, health, decisions, environment
    agent = f"agent-{rng.randrange(shape.agents):06d}"
    step = rng.randrange(1, shape.steps)
    e = EXPERIMENT
    health = "average_agent_health"
    lib = _library
    env = [
        sqllib.bound("environment_at", {"simulation_id": s0, "step": t}) for t in (step // 2, step)
    ]
    return [
        ("agent_history", "one agent, 1000 states",
         lambda c: _count(api.agent_history(c, sim, agent)),
         lib("agent_history", simulation_id=sim, agent_id=agent), record_rows(AgentState)),
        ("step_snapshot", "one step, 1000 states",
         lambda c: _count(api.step_snapshot(c, sim, step)),
         lib("step_snapshot", simulation_id=sim, step=step), record_rows(AgentState)),
        ("actions", "one agent's actions, ~950",
         lambda c: _count(api.actions(c, sim, agent_id=agent)),
         lib("agent_actions", simulation_id=sim, agent_id=agent), record_rows(AgentAction)),
        ("population_over_time", "rollup, 3000 rows",
         lambda c: _len(api.population_over_time(c, sim)),
         lib("population_by_type", simulation_id=sim), class_row(api.PopulationPoint)),
        ("births_and_deaths", "agents",
         lambda c: _len(api.births_and_deaths(c, sim)),
         lib("births_and_deaths", simulation_id=sim), class_row(api.BirthsDeaths)),
        ("agent_lifespans", "agents, 1000 rows",
         lambda c: _len(api.agent_lifespans(c, sim)),
         lib("agent_lifespans", simulation_id=sim), class_row(api.Lifespan)),
        ("resource_totals", "100k resource states",
         lambda c: _len(api.resource_totals(c, s0)),
         lib("resource_totals", simulation_id=s0), class_row(api.ResourceTotal)),
        ("learning_progress", "100k experiences",
         lambda c: _len(api.learning_progress(c, s0)),
         lib("learning_progress", simulation_id=s0, bucket_size=100),
         class_row(api.LearningPoint)),
        ("health_incidents_by_cause", "10k incidents",
         lambda c: _len(api.health_incidents_by_cause(c, s0)),
         lib("health_by_cause", simulation_id=s0), class_row(api.HealthCause)),
        ("decision_statistics(by=simulation)", "10k decisions",
         lambda c: _len(api.decision_statistics(c, s0)),
         lib("decision_totals", simulation_id=s0), class_row(api.DecisionStats)),
        ("decision_statistics(by=agent)", "10k decisions",
         lambda c: _len(api.decision_statistics(c, s0, by="agent")),
         lib("decision_statistics", simulation_id=s0), class_row(api.DecisionStats)),
        ("decision_statistics(by=step)", "10k decisions",
         lambda c: _len(api.decision_statistics(c, s0, by="step")),
         lib("decision_statistics_by_step", simulation_id=s0), class_row(api.DecisionStats)),
        ("environment_diff", "two environment states",
         lambda c: _two(api.environment_diff(c, s0, step // 2, step)),
         env, record_rows(EnvironmentState)),
        ("compare_metric", f"{shape.sims} simulations x {shape.steps} steps",
         lambda c: _count(api.compare_metric(c, health, experiment_id=e)),
         [(_COMPARE, (e,))], class_row(api.MetricPoint)),
        ("simulation_summaries", f"{shape.sims} simulations",
         lambda c: _len(api.simulation_summaries(c, experiment_id=e)),
         lib("simulation_summaries", simulation_ids=None, experiment_id=e),
         class_row(api.SimulationSummary)),
        ("aggregate_by_parameter", f"{shape.sims} simulations",
         lambda c: _len(api.aggregate_by_parameter(c, "rate", health, experiment_id=e)),
         [(_AGGREGATE, ("rate", e))], class_row(api.ParameterAggregate)),
        ("experiments", "1 experiment",
         lambda c: _len(api.experiments(c)),
         lib("experiments", experiment_id=None), class_row(api.ExperimentInfo)),
    ]  # fmt: skip


async def _len(result: Awaitable[list[Any]]) -> int:
    return len(await result)


async def _two(result: Awaitable[Any]) -> int:
    await result
    return 2  # the two environment states it compared


async def _api_overhead(dsn: str, shape: QueryShape, runs: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    names = [p[0] for p in api_pairs(shape, random.Random(0))]
    times: dict[str, list[list[float]]] = {n: [[], [], []] for n in names}
    reads: dict[str, str] = {}
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options=f"-c search_path={SCHEMA}"
    ) as conn:
        for run in range(runs + 1):  # run 0 warms the cache and the plans
            for name, what, through_api, statements, factory in api_pairs(shape, rng):
                reads[name] = what
                # rotate which goes first, so none always finds the cache warmer
                calls = [through_api, _direct(statements), _direct(statements, factory)]
                order = [(run + k) % 3 for k in range(3)]
                rows = [0, 0, 0]
                for side in order:
                    t0 = time.perf_counter()
                    rows[side] = await calls[side](conn)
                    if run:
                        times[name][side].append((time.perf_counter() - t0) * 1000)
                if len(set(rows)) != 1:
                    raise SystemExit(f"API overhead: {name} returned {rows} rows")
    out = []
    for name in names:
        a, d, f = (statistics.median(t) for t in times[name])
        out.append(
            {
                "function": name,
                "reads": reads[name],
                "runs": runs,
                "api_p50_ms": round(a, 3),
                "direct_p50_ms": round(d, 3),
                "direct_rows_p50_ms": round(f, 3),
                "ratio": round(a / d, 3),
                "ratio_same_rows": round(a / f, 3),
                "met": a / d <= 1.1,
            }
        )
    return out


def api_overhead(dsn: str, shape: QueryShape, runs: int, seed: int = 11) -> list[dict[str, Any]]:
    """Each query function through the API, and its SQL run directly with psycopg on the
    same async connection (tuples; and with the row factory the API uses), in rotating
    order, p50 of each (ms, every row fetched)."""
    return asyncio.run(_api_overhead(dsn, shape, runs, seed))


# -- where a delete's time goes ---------------------------------------------------------

_DATA_TABLES = (
    "agent_states_data",
    "agent_actions_data",
    "resource_states_data",
    "learning_experiences_data",
    "health_incidents_data",
)


def _wal_lsn(c: psycopg.Connection[Any]) -> str:
    row = c.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def _wal_mb(c: psycopg.Connection[Any], since: str) -> float:
    row = c.execute("SELECT pg_current_wal_insert_lsn() - %s::pg_lsn", (since,)).fetchone()
    assert row is not None
    return round(float(row[0]) / 2**20, 1)


def delete_breakdown(dsn: str, sim_id: str) -> dict[str, Any]:
    """Where a simulation's delete spends its time, each part in a transaction that is
    rolled back: the whole `DELETE FROM simulations` under EXPLAIN ANALYZE (its triggers:
    simulations_delete_data, which deletes the `_data` rows, and the foreign-key cascades,
    named by the table they delete from), then each `_data` table's delete alone, with
    the WAL each wrote."""
    out: dict[str, Any] = {"simulation": sim_id, "statements": []}
    with connect(dsn) as c:
        found = c.execute(
            "SELECT sim_key FROM simulations WHERE simulation_id = %s", (sim_id,)
        ).fetchone()
        assert found is not None
        key = found[0]
        names = dict(
            c.execute(
                "SELECT t.tgname, 'cascade to ' || k.conrelid::regclass::text FROM pg_trigger t"
                " JOIN pg_constraint k ON k.oid = t.tgconstraint"
                " WHERE t.tgrelid = 'simulations'::regclass"
            ).fetchall()
        )
        with c.transaction(force_rollback=True):
            since = _wal_lsn(c)
            row = c.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM simulations WHERE simulation_id = %s",
                (sim_id,),
            ).fetchone()
            assert row is not None
            doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
            out["total_ms"] = round(doc[0]["Execution Time"], 1)
            out["total_wal_mb"] = _wal_mb(c, since)
            out["triggers"] = [
                {
                    "trigger": names.get(t["Trigger Name"], t["Trigger Name"]),
                    "ms": round(t["Time"], 1),
                }
                for t in doc[0].get("Triggers", [])
            ]
        for t in _DATA_TABLES:
            with c.transaction(force_rollback=True):
                since = _wal_lsn(c)
                t0 = time.perf_counter()
                cur = c.execute(f"DELETE FROM {t} WHERE sim_key = %s", (key,))
                seconds = time.perf_counter() - t0
                out["statements"].append(
                    {
                        "statement": f"DELETE FROM {t}",
                        "rows": cur.rowcount,
                        "s": round(seconds, 3),
                        "wal_mb": _wal_mb(c, since),
                    }
                )
    return out
