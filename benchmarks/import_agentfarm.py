"""`sim-schema import agentfarm` throughput: rows/s of a farm file's import next to the
ingest ceiling (the server's own binary COPY of the same stored rows), and the time of an
idempotent re-import of the same file.

    python -m benchmarks.import_agentfarm --agents 1000 --steps 1000   # a 1M-state file
    python -m benchmarks.import_agentfarm --dsn postgresql://... --agents 20 --steps 50

The farm file (tests/farm_files.py: seed 001's schema) holds `agents` agents and
`agents x steps` agent states, with one action per state; every row counts towards
rows/s. The ceiling loads the stored `agent_states_data` rows (dumped with COPY TO, binary)
into an emptied table by server-side `COPY FROM` a file (or, if the server cannot read
files here, by streaming that file): PostgreSQL doing nothing but loading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from farm_files import create_schema  # noqa: E402

from benchmarks.server import SCHEMA, fresh_database, server  # noqa: E402
from sim_schema import Settings, Store  # noqa: E402
from sim_schema.importers.agentfarm import import_agentfarm  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def make_file(path: Path, agents: int, steps: int, seed: int = 7) -> int:
    """A per-simulation farm file; the number of rows in its data tables."""
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    create_schema(db, per_experiment=False)
    db.executemany(
        "INSERT INTO agents (agent_id, birth_time, agent_type, position_x, position_y,"
        " initial_resources, starting_health, generation) VALUES (?, 0, ?, ?, ?, 10, 100, 0)",
        [(f"a{i}", ("system", "independent", "control")[i % 3], rng.random(), rng.random())
         for i in range(agents)],
    )  # fmt: skip
    for s in range(steps):
        db.executemany(
            "INSERT INTO agent_states (id, step_number, agent_id, position_x, position_y,"
            " position_z, resource_level, current_health, is_defending, total_reward, age)"
            " VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
            [(f"a{i}-{s}", s, f"a{i}", rng.random() * 100, rng.random() * 100,
              rng.random() * 30, rng.random() * 100, rng.random() < 0.1, rng.random(), s)
             for i in range(agents)],
        )  # fmt: skip
        db.executemany(
            "INSERT INTO agent_actions (step_number, agent_id, action_type, state_before_id,"
            " state_after_id, resources_before, resources_after, reward, details)"
            " VALUES (?, ?, 'move', ?, ?, ?, ?, ?, ?)",
            [(s, f"a{i}", f"a{i}-{s}", f"a{i}-{s + 1}", 1.0, 1.5, rng.random(),
              '{"distance": 1}') for i in range(agents)],
        )  # fmt: skip
    db.commit()
    db.close()
    return agents + 2 * agents * steps


def ceiling(dsn: str, rows: int) -> tuple[float, str]:
    """Rows/s of the server's binary COPY of the stored agent states, and how it was fed."""
    with psycopg.connect(dsn, options=f"-c search_path={SCHEMA}") as c:
        dump = Path(tempfile.mkdtemp(prefix="sim_bench_import_")) / "states.bin"
        with dump.open("wb") as f, c.cursor().copy(
            "COPY agent_states_data TO STDOUT (FORMAT BINARY)"
        ) as cp:
            for chunk in cp:
                f.write(chunk)
        dump.chmod(0o644)
        dump.parent.chmod(0o755)
        with c.transaction(force_rollback=True):
            c.execute("DELETE FROM agent_states_data")
            try:
                with c.transaction():
                    t0 = time.perf_counter()
                    c.execute(
                        sql.SQL("COPY agent_states_data FROM {} (FORMAT BINARY)").format(
                            sql.Literal(str(dump))
                        )
                    )
                    return rows / (time.perf_counter() - t0), "server file"
            except psycopg.Error:
                pass
            t0 = time.perf_counter()
            with c.cursor().copy("COPY agent_states_data FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(dump.read_bytes())
            return rows / (time.perf_counter() - t0), "client stream of the file"


async def timed_import(dsn: str, path: Path) -> tuple[float, Any]:
    async with Store(Settings(dsn=dsn, schema_name=SCHEMA)) as store:
        t0 = time.perf_counter()
        report = await import_agentfarm(store, [path], progress=False)
        return time.perf_counter() - t0, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="maintenance DSN (default: a throwaway embedded server)")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sim_bench_farm_"))
    path = work / "farm_sim.db"
    rows = make_file(path, args.agents, args.steps)
    with server(args.dsn) as maintenance, fresh_database(maintenance, "sim_bench_import") as dsn:
        first, report = await_import(dsn, path)
        again, second = await_import(dsn, path)
        states = args.agents * args.steps
        top, mode = ceiling(dsn, states)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "file_rows": rows,
        "file_bytes": path.stat().st_size,
        "import_seconds": round(first, 3),
        "import_rows_per_s": round(rows / first),
        "reimport_seconds": round(again, 3),
        "reimport_rows_written": second.rows_written,
        "ceiling_rows_per_s": round(top),
        "ceiling_mode": mode,
        "rows_written": report.rows_written,
    }
    print(f"farm file: {rows:,} rows ({result['file_bytes']:,} bytes)")
    print(f"import:    {first:8.2f} s  {result['import_rows_per_s']:>12,} rows/s")
    print(f"re-import: {again:8.2f} s  ({second.rows_written} rows written)")
    print(f"ceiling:   {result['ceiling_rows_per_s']:>23,} rows/s ({mode}, agent_states_data)")
    print(f"ratio:     {result['import_rows_per_s'] / top:8.2f} x the ceiling")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"import_agentfarm_{result['when'].replace(':', '')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results:   {out}")


def await_import(dsn: str, path: Path) -> tuple[float, Any]:
    return asyncio.run(timed_import(dsn, path))


if __name__ == "__main__":
    main()
