"""Analyst queries on a large generated dataset: latency percentiles and plan checks.

The dataset is made server-side (INSERT ... SELECT generate_series), one simulation at a
time in step order like a real run, then VACUUM ANALYZE. FK triggers are skipped while
loading (session_replication_role = replica) when the role may do so: the rows are
consistent by construction and the load is not what is measured here.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from .server import connect

EXPERIMENT = "q-exp"
AGENT_TYPES_SQL = "(ARRAY['system','independent','control'])[a %% 3 + 1]"


@dataclass(frozen=True)
class QueryShape:
    sims: int = 10
    agents: int = 1000
    steps: int = 1000

    @property
    def rows(self) -> int:
        return self.sims * self.agents * self.steps

    def sim_id(self, i: int) -> str:
        return f"q-sim-{i:02d}"


def load(dsn: str, shape: QueryShape, log: Callable[[str], None]) -> dict[str, float]:
    """Generate the dataset; returns load timings in seconds."""
    timings: dict[str, float] = {}
    with connect(dsn) as c:
        try:
            c.execute("SET session_replication_role = replica")
        except psycopg.Error:
            log("  (cannot skip FK triggers: loading with them)")
        c.execute(
            "INSERT INTO experiments (experiment_id, name) VALUES (%s, 'query benchmark')",
            (EXPERIMENT,),
        )
        t0 = time.perf_counter()
        for i in range(shape.sims):
            sid = shape.sim_id(i)
            c.execute(
                "INSERT INTO simulations (simulation_id, experiment_id, status, step_count) "
                "VALUES (%s, %s, 'completed', %s)",
                (sid, EXPERIMENT, shape.steps),
            )
            c.execute(
                "INSERT INTO agents (simulation_id, agent_id, agent_type, birth_step) "
                f"SELECT %s, 'agent-' || lpad(a::text, 6, '0'), {AGENT_TYPES_SQL}, 0 "
                "FROM generate_series(0, %s - 1) a",
                (sid, shape.agents),
            )
            c.execute(
                "INSERT INTO agent_states (simulation_id, step, agent_id, position_x, position_y,"
                " resource_level, health, is_defending, total_reward, age, extras) "
                "SELECT %s, s, 'agent-' || lpad(a::text, 6, '0'), random() * 100, random() * 100,"
                " random() * 20, CASE WHEN random() < 0.02 * s / %s THEN 0 ELSE 100 * random() END,"
                " random() < 0.1, s * random(), s,"
                " jsonb_build_object('mood', (ARRAY['calm','hungry','alert'])[a %% 3 + 1],"
                "  'energy', round(random()::numeric, 4),"
                "  'visited', jsonb_build_array(a %% 100, s %% 100, 7))"
                " FROM generate_series(0, %s - 1) s, generate_series(0, %s - 1) a",
                (sid, shape.steps, shape.steps, shape.agents),
            )
            c.execute(
                "INSERT INTO simulation_steps (simulation_id, step, total_agents, total_resources,"
                " average_agent_resources, births, deaths, average_agent_health, average_reward,"
                " genetic_diversity) "
                "SELECT %s, s, %s, 1000 + 100 * random(), 10 * random(), 0, 0, 50 + 10 * random(),"
                " random(), random() FROM generate_series(0, %s - 1) s",
                (sid, shape.agents, shape.steps),
            )
            log(f"  loaded {sid}: {(i + 1) * shape.agents * shape.steps:,} agent states")
        timings["insert_s"] = time.perf_counter() - t0
        c.execute("RESET session_replication_role")
        t0 = time.perf_counter()
        c.execute("VACUUM ANALYZE")
        timings["vacuum_analyze_s"] = time.perf_counter() - t0
    return timings


Params = Callable[[random.Random], tuple[Any, ...]]


@dataclass(frozen=True)
class Query:
    name: str
    sql: str
    params: Params
    runs: int
    indexed: bool  # an index serves it: a Seq Scan on agent_states is a failure
    target_ms: float | None = None


def queries(shape: QueryShape, runs: int) -> list[Query]:
    def sim(r: random.Random) -> str:
        return shape.sim_id(r.randrange(shape.sims))

    def agent(r: random.Random) -> str:
        return f"agent-{r.randrange(shape.agents):06d}"

    return [
        Query(
            "agent history",
            "SELECT step, position_x, position_y, resource_level, health, total_reward "
            "FROM agent_states WHERE simulation_id = %s AND agent_id = %s ORDER BY step",
            lambda r: (sim(r), agent(r)),
            runs,
            True,
            10.0,
        ),
        Query(
            "step snapshot",
            "SELECT agent_id, position_x, position_y, resource_level, health, is_defending "
            "FROM agent_states WHERE simulation_id = %s AND step = %s",
            lambda r: (sim(r), r.randrange(shape.steps)),
            runs,
            True,
            10.0,
        ),
        Query(
            "population by type over time",
            "SELECT s.step, a.agent_type, count(*) FROM agent_states s "
            "JOIN agents a ON a.simulation_id = s.simulation_id AND a.agent_id = s.agent_id "
            "WHERE s.simulation_id = %s AND s.health > 0 GROUP BY s.step, a.agent_type "
            "ORDER BY s.step, a.agent_type",
            lambda r: (sim(r),),
            max(3, runs // 3),
            True,
        ),
        Query(
            "cross-simulation metric (10 sims)",
            "SELECT st.step, st.simulation_id, st.average_agent_health FROM simulation_steps st "
            "JOIN simulations s ON s.simulation_id = st.simulation_id "
            "WHERE s.experiment_id = %s ORDER BY st.step, st.simulation_id",
            lambda r: (EXPERIMENT,),
            runs,
            True,
            100.0,
        ),
        Query(
            "experiment final summary",
            "SELECT s.simulation_id, st.step, st.total_agents, st.average_agent_health,"
            " fin.alive, fin.mean_health, fin.mean_reward "
            "FROM simulations s "
            "CROSS JOIN LATERAL (SELECT * FROM simulation_steps x WHERE x.simulation_id ="
            " s.simulation_id ORDER BY x.step DESC LIMIT 1) st "
            "CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE a.health > 0) AS alive,"
            " avg(a.health) AS mean_health, avg(a.total_reward) AS mean_reward"
            " FROM agent_states a"
            " WHERE a.simulation_id = s.simulation_id AND a.step = st.step) fin "
            "WHERE s.experiment_id = %s ORDER BY s.simulation_id",
            lambda r: (EXPERIMENT,),
            runs,
            True,
        ),
        Query(
            "full export of one simulation",
            "COPY (SELECT * FROM agent_states WHERE simulation_id = %s ORDER BY step, agent_id)"
            " TO STDOUT",
            lambda r: (sim(r),),
            max(3, runs // 6),
            True,
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


def explain(c: psycopg.Connection[Any], q: Query, params: tuple[Any, ...]) -> list[str]:
    text = q.sql
    if text.startswith("COPY ("):
        text = text[len("COPY (") : text.rindex(") TO STDOUT")]
    row = c.execute(f"EXPLAIN (FORMAT JSON) {text}", params).fetchone()
    assert row is not None
    plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    nodes: list[str] = []
    _plan_nodes(plan[0]["Plan"], nodes)
    return nodes


def _run_once(c: psycopg.Connection[Any], q: Query, params: tuple[Any, ...]) -> float:
    t0 = time.perf_counter()
    if q.sql.startswith("COPY"):
        with c.cursor().copy(q.sql, params) as cp:
            for _ in cp:
                pass
    else:
        c.execute(q.sql, params).fetchall()
    return (time.perf_counter() - t0) * 1000


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def measure(dsn: str, shape: QueryShape, runs: int, seed: int = 7) -> list[dict[str, Any]]:
    """p50/p95 latency (ms, client side, rows fetched) and plan nodes of each query."""
    rng = random.Random(seed)
    results = []
    with connect(dsn) as c:
        for q in queries(shape, runs):
            nodes = explain(c, q, q.params(rng))
            seq = any(n.startswith("Seq Scan on agent_states") for n in nodes)
            _run_once(c, q, q.params(rng))  # warm the cache and the plan
            times = [_run_once(c, q, q.params(rng)) for _ in range(q.runs)]
            p50 = statistics.median(times)
            forced = None
            if seq:  # what the index would have given: same runs with seq scans disabled
                c.execute("SET enable_seqscan = off")
                forced_times = [_run_once(c, q, q.params(rng)) for _ in range(q.runs)]
                c.execute("RESET enable_seqscan")
                forced = round(statistics.median(forced_times), 2)
            results.append(
                {
                    "query": q.name,
                    "runs": q.runs,
                    "p50_ms": round(p50, 2),
                    "p95_ms": round(pct(times, 95), 2),
                    "target_p50_ms": q.target_ms,
                    "met": None if q.target_ms is None else p50 < q.target_ms,
                    "plan": nodes,
                    "plan_ok": not (q.indexed and seq),
                    "p50_ms_seqscan_off": forced,
                }
            )
    return results


def storage(dsn: str, table: str = "agent_states") -> dict[str, int]:
    """Heap, index and toast bytes of a table in the module schema."""
    with connect(dsn) as c:
        row = c.execute(
            "SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid),"
            " COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0),"
            " (SELECT count(*) FROM agent_states) "
            "FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (table,),
        ).fetchone()
        idx = c.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
            "WHERE indrelid = to_regclass(%s) ORDER BY 1",
            (table,),
        ).fetchall()
    assert row is not None
    heap, indexes, toast, rows = (int(v) for v in row)
    return {
        "heap": heap,
        "indexes": indexes,
        "toast": toast,
        "rows": rows,
        **{f"index:{name}": int(size) for name, size in idx},
    }
