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

import sys
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from predecessors.onesim_schema import create_schema

from benchmarks.import_agentfarm import arguments, save, side_by_side
from benchmarks.server import SCHEMA, fresh_database, server
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


def main() -> None:
    args, work = arguments(__doc__, "sim_bench_onesim_")
    with (
        server(args.dsn) as maintenance,
        fresh_database(maintenance, "sim_bench_import_onesim") as dsn,
        psycopg.connect(dsn, options=f"-c search_path={SCHEMA}") as c,
    ):
        source, rows = make_source(maintenance, args.agents, args.steps)
        print(f"source:    {rows:,} rows")
        result = side_by_side(
            c, dsn, lambda store: import_onesim(store, source, progress=False), rows,
            args.rounds, work, CEILING_TABLES,
        )  # fmt: skip
    save(result, "import_onesim")


if __name__ == "__main__":
    main()
