"""`sim-schema import agentfarm` throughput: rows/s of a farm file's import next to the
ingest ceiling (the server's own binary COPY of the same stored rows), and the time of an
idempotent re-import of the same file.

    python -m benchmarks.import_agentfarm --agents 1000 --steps 1000   # a 1M-state file
    python -m benchmarks.import_agentfarm --dsn postgresql://... --agents 20 --steps 50

The farm file (tests/farm_files.py: seed 001's schema) holds `agents` agents and
`agents x steps` agent states, with one action per state; every row counts towards
rows/s. The ceiling loads the stored `agent_states_data` and `agent_actions_data` rows
(dumped with COPY TO, binary) into the emptied tables (and emptied rollups) by
server-side `COPY FROM` a file (or, if the server cannot read files here, by streaming the
files): PostgreSQL doing nothing but loading the rows the import wrote, with the same
indexes and triggers. Each of `--rounds` rounds imports the file into the emptied schema,
then times the ceiling: the ratio is taken per round, side by side, and its median is
reported (a CHECKPOINT precedes every timed load). Then the file is imported once more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from farm_files import create_schema

from benchmarks.server import SCHEMA, fresh_database, server
from sim_schema import Settings, Store
from sim_schema.importers.agentfarm import import_agentfarm

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


CEILING_TABLES = ("agent_states_data", "agent_actions_data")
ROLLUPS = ("population_rollup", "action_rollup")  # filled by the data tables' triggers


def checkpoint(c: psycopg.Connection[Any]) -> None:
    """Flush the server's dirty buffers, so that a timed load does not pay for the one
    before it (needs superuser or pg_checkpoint; skipped without)."""
    try:
        with c.transaction():
            c.execute("CHECKPOINT")
    except psycopg.Error:
        pass


def dump_stored(c: psycopg.Connection[Any], work: Path, tables: tuple[str, ...] = CEILING_TABLES
                ) -> tuple[list[tuple[str, Path]], int]:  # fmt: skip
    """The stored rows of `tables` (parents first), each table in a binary COPY file; the
    rows."""
    dumps = []
    for name in tables:
        dump = work / f"{name}.bin"
        with dump.open("wb") as f, c.cursor().copy(
            sql.SQL("COPY {} TO STDOUT (FORMAT BINARY)").format(sql.Identifier(name))
        ) as cp:
            for chunk in cp:
                f.write(chunk)
        dump.chmod(0o644)
        dumps.append((name, dump))
    rows = sum(
        c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(n))).fetchone()[0]
        for n in tables
    )
    c.commit()
    return dumps, rows


def load_rate(c: psycopg.Connection[Any], dumps: list[tuple[str, Path]], rows: int) -> tuple[
        float, str]:  # fmt: skip
    """Rows/s of the server's binary COPY of the dumps into the emptied tables (TRUNCATE,
    rolled back after: the state the import started from, triggers and indexes included),
    and how the files were fed (the server reads them, or, if it cannot, they are streamed)."""
    emptied = sql.SQL("TRUNCATE {}").format(
        sql.SQL(", ").join(map(sql.Identifier, (*(name for name, _ in dumps), *ROLLUPS)))
    )
    checkpoint(c)
    with c.transaction(force_rollback=True):
        c.execute(emptied)
        try:
            with c.transaction():
                t0 = time.perf_counter()
                for name, dump in dumps:
                    c.execute(
                        sql.SQL("COPY {} FROM {} (FORMAT BINARY)").format(
                            sql.Identifier(name), sql.Literal(str(dump))
                        )
                    )
                return rows / (time.perf_counter() - t0), "server file"
        except psycopg.Error:
            pass
        t0 = time.perf_counter()
        for name, dump in dumps:
            with c.cursor().copy(
                sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(name))
            ) as cp:
                cp.write(dump.read_bytes())
        return rows / (time.perf_counter() - t0), "client stream of the files"


def empty_schema(c: psycopg.Connection[Any]) -> None:
    """Every table of the module emptied (its migrations' record kept): a fresh install."""
    names = [
        r[0]
        for r in c.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s"
            " AND tablename NOT LIKE 'schema_migrations%%'",
            (SCHEMA,),
        )
    ]
    c.execute(
        sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, names)))
    )
    c.commit()


Importer = Callable[[Store], Awaitable[Any]]


def timed_import(dsn: str, importer: Importer) -> tuple[float, Any]:
    """The seconds of one import into `dsn` (after a CHECKPOINT), and its report."""
    with psycopg.connect(dsn) as c:
        checkpoint(c)

    async def run() -> tuple[float, Any]:
        async with Store(Settings(dsn=dsn, schema_name=SCHEMA)) as store:
            t0 = time.perf_counter()
            report = await importer(store)
            return time.perf_counter() - t0, report

    return asyncio.run(run())


def side_by_side(c: psycopg.Connection[Any], dsn: str, importer: Importer, rows: int,
                 rounds: int, work: Path, tables: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    """`rounds` rounds, each an import of `rows` rows into the emptied schema, then the
    ceiling of `tables` (this round's stored rows); then the import once more. The figures,
    printed as they come."""
    imports: list[float] = []
    ceilings: list[float] = []
    for n in range(rounds):
        if n:
            empty_schema(c)
        seconds, report = timed_import(dsn, importer)
        imports.append(rows / seconds)
        dumps, loaded = dump_stored(c, work, tables)  # this round's keys
        rate, mode = load_rate(c, dumps, loaded)
        ceilings.append(rate)
        print(f"round {n + 1}: import {seconds:6.2f} s {imports[-1]:>10,.0f} rows/s,"
              f" ceiling {rate:>10,.0f} rows/s, ratio {imports[-1] / rate:.2f}")
    again, second = timed_import(dsn, importer)
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
    print(f"import:    median {statistics.median(imports):>10,.0f} rows/s")
    print(f"ceiling:   median {statistics.median(ceilings):>10,.0f} rows/s ({mode}, {loaded:,}"
          f" rows of {', '.join(tables)})")
    print(f"ratio:     median {result['median_ratio']:.2f} x the ceiling (per round)")
    print(f"re-import: {again:8.2f} s  ({second.rows_written} rows written)")
    return result


def save(result: dict[str, Any], name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}_{result['when'].replace(':', '')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results:   {out}")


def arguments(doc: str, prefix: str) -> tuple[argparse.Namespace, Path]:
    """An import benchmark's options, and a scratch directory the server can read."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--dsn", help="maintenance DSN (default: a throwaway embedded server)")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    work.chmod(0o755)
    return parser.parse_args(), work


def main() -> None:
    args, work = arguments(__doc__, "sim_bench_farm_")
    path = work / "farm_sim.db"
    rows = make_file(path, args.agents, args.steps)
    print(f"farm file: {rows:,} rows ({path.stat().st_size:,} bytes)")
    with (
        server(args.dsn) as maintenance,
        fresh_database(maintenance, "sim_bench_import") as dsn,
        psycopg.connect(dsn, options=f"-c search_path={SCHEMA}") as c,
    ):
        result = side_by_side(
            c, dsn, lambda store: import_agentfarm(store, [path], progress=False), rows,
            args.rounds, work, CEILING_TABLES,
        )  # fmt: skip
    save({**result, "file_bytes": path.stat().st_size}, "import_agentfarm")


if __name__ == "__main__":
    main()
