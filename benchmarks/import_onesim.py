"""`sim-schema import onesim` throughput: rows/s of a OneSim database's import next to the
ceiling (the server's own binary COPY of the same stored rows), and the time of an
idempotent re-import.

    python -m benchmarks.import_onesim --agents 1000 --steps 1000   # 1M agent states
    python -m benchmarks.import_onesim --dsn postgresql://... --agents 20 --steps 50

The source is a database on the same server with OneSim's schema as seed 000 describes it
(tests/predecessors/onesim_schema.py), filled by the server itself: one scenario, one
trail of `agents` agents over `steps` steps, an agent state (three jsonb columns) per
agent and step, an environment state per step, an event with its processing result for
every tenth agent and step, a decision with feedback for each event. Every row counts
towards rows/s. The ceiling loads the rows the import stored (`agent_states_data`,
`environment_states`, `events`, `agent_decisions`, dumped with COPY TO, binary) into the
emptied tables and rollups by server-side `COPY FROM` (see benchmarks/import_agentfarm.py):
rounds side by side, the ratio taken per round, a CHECKPOINT before every timed load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from predecessors.onesim_schema import create_schema

from benchmarks.import_agentfarm import RESULTS, checkpoint, dump_stored, empty_schema, load_rate
from benchmarks.server import SCHEMA, fresh_database, server
from sim_schema import Settings, Store
from sim_schema.importers.onesim import import_onesim

CEILING_TABLES = ("agent_states_data", "environment_states", "events", "agent_decisions")
TRAIL = "5e11a000-0000-4000-8000-000000000001"

FILL = """
INSERT INTO scenarios (scenario_id, name, tags) VALUES ('bench', 'Benchmark', '{"n": 1}');
INSERT INTO trails (trail_id, scenario_id, name, config, status, step_count, start_time,
                    end_time)
VALUES (%(trail)s, 'bench', 'run', '{"seed": 7}', 'COMPLETED', %(steps)s,
        '2024-05-01 09:00', '2024-05-01 11:00');
INSERT INTO agents (trail_id, agent_id, agent_type, name, initial_profile)
SELECT %(trail)s, 'agent-' || i, (ARRAY['captain', 'pilot', 'clerk'])[i %% 3 + 1],
       'Agent ' || i, jsonb_build_object('age', 20 + i %% 50)
FROM generate_series(0, %(agents)s - 1) i;
INSERT INTO environment_states (trail_id, step, state)
SELECT %(trail)s, s, jsonb_build_object('tide', s * 0.5, 'ships', s %% 40)
FROM generate_series(0, %(steps)s - 1) s;
INSERT INTO agent_states (trail_id, agent_id, step, profile, memory, relationships)
SELECT %(trail)s, 'agent-' || i, s,
       jsonb_build_object('mood', CASE WHEN (i + s) %% 2 = 0 THEN 'calm' ELSE 'busy' END,
                          'cargo', round((random() * 100)::numeric, 3)),
       jsonb_build_object('seen', jsonb_build_array('ship-' || s)),
       jsonb_build_object('agent-' || (i + 1) %% %(agents)s,
                          jsonb_build_object('trust', round(random()::numeric, 3)))
FROM generate_series(0, %(steps)s - 1) s, generate_series(0, %(agents)s - 1) i;
INSERT INTO events (event_id, trail_id, step, event_type, source_type, source_id,
                    target_type, target_id, payload, processed, processing_result)
SELECT gen_random_uuid(), %(trail)s, s, 'hail', 'agent', 'agent-' || i, 'agent',
       'agent-' || (i + 1) %% %(agents)s, jsonb_build_object('words', 'ahoy ' || s), true,
       jsonb_build_object('answered', true)
FROM generate_series(0, %(steps)s - 1) s, generate_series(0, %(agents)s - 1, 10) i;
INSERT INTO agent_decisions (decision_id, trail_id, agent_id, step, event_id, context,
                             prompt, output, action, processing_time, feedback, rating)
SELECT gen_random_uuid(), trail_id, target_id, step, event_id,
       jsonb_build_object('heard', payload->'words'), 'you are hailed', 'ahoy back',
       'reply', 0.5, 'polite', 4.5
FROM events;
"""


def make_source(maintenance: str, agents: int, steps: int) -> tuple[str, int]:
    """A OneSim database filled on the server; its DSN and the rows of its data tables."""
    name = "sim_bench_onesim_source"
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))  # fmt: skip
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(maintenance, dbname=name)
    with psycopg.connect(dsn) as c:
        create_schema(c)
        for statement in filter(str.strip, FILL.split(";\n")):
            c.execute(statement, {"trail": TRAIL, "agents": agents, "steps": steps})
        rows = sum(
            c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
            for t in ("agents", "environment_states", "agent_states", "events", "agent_decisions")
        )
        c.execute("ANALYZE")
        c.commit()
    return dsn, rows


async def timed_import(dsn: str, source: str) -> tuple[float, Any]:
    with psycopg.connect(dsn) as c:
        checkpoint(c)
    async with Store(Settings(dsn=dsn, schema_name=SCHEMA)) as store:
        t0 = time.perf_counter()
        report = await import_onesim(store, source, progress=False)
        return time.perf_counter() - t0, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="maintenance DSN (default: a throwaway embedded server)")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sim_bench_onesim_"))
    work.chmod(0o755)
    imports: list[float] = []
    ceilings: list[float] = []
    with (
        server(args.dsn) as maintenance,
        fresh_database(maintenance, "sim_bench_import_onesim") as dsn,
        psycopg.connect(dsn, options=f"-c search_path={SCHEMA}") as c,
    ):
        source, rows = make_source(maintenance, args.agents, args.steps)
        for n in range(args.rounds):
            if n:
                empty_schema(c)
            seconds, report = asyncio.run(timed_import(dsn, source))
            imports.append(rows / seconds)
            dumps, loaded = dump_stored(c, work, CEILING_TABLES)
            rate, mode = load_rate(c, dumps, loaded)
            ceilings.append(rate)
            print(f"round {n + 1}: import {seconds:6.2f} s {imports[-1]:>10,.0f} rows/s,"
                  f" ceiling {rate:>10,.0f} rows/s, ratio {imports[-1] / rate:.2f}")
        again, second = asyncio.run(timed_import(dsn, source))
    ratios = [i / top for i, top in zip(imports, ceilings, strict=True)]
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "source_rows": rows,
        "import_rows_per_s": [round(r) for r in imports],
        "ceiling_rows_per_s": [round(r) for r in ceilings],
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "ceiling_mode": mode,
        "ceiling_rows": loaded,
        "reimport_seconds": round(again, 3),
        "reimport_rows_written": second.rows_written,
        "rows_written": report.rows_written,
    }
    print(f"source:    {rows:,} rows")
    print(f"import:    median {statistics.median(imports):>10,.0f} rows/s")
    print(f"ceiling:   median {statistics.median(ceilings):>10,.0f} rows/s ({mode}, {loaded:,}"
          f" rows of {', '.join(CEILING_TABLES)})")
    print(f"ratio:     median {result['median_ratio']:.2f} x the ceiling (per round)")
    print(f"re-import: {again:8.2f} s  ({second.rows_written} rows written)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"import_onesim_{result['when'].replace(':', '')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results:   {out}")


if __name__ == "__main__":
    main()
