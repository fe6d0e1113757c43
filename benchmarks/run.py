"""One command for the whole benchmark: `python -m benchmarks.run [--dsn DSN] [--sections ...]`.

Sections: ingest (every contender on the same rows, plus storage per row), parallel
(1/2/4 simulations logging at once), memory (peak RSS while logging), queries (latency on
a large generated dataset, plans, and a delete during another simulation's ingest).
Prints a table and writes benchmarks/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import contenders as C
from benchmarks import data, ours, queries, server
from benchmarks.report import print_report

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECTIONS = ("ingest", "parallel", "memory", "queries")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--dsn", help="PostgreSQL server to use (default: a throwaway embedded one)")
    p.add_argument(
        "--sections",
        default="ingest,parallel,memory",
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but queries)",
    )
    p.add_argument("--sims", type=int, default=2, help="ingest: simulations (default 2)")
    p.add_argument("--agents", type=int, default=500, help="ingest: agents per simulation")
    p.add_argument("--steps", type=int, default=1000, help="ingest: steps per simulation")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeat", type=int, default=2, help="runs per contender (best and median)")
    p.add_argument("--slow-rows", type=int, default=20_000, help="rows for row-at-a-time INSERT")
    p.add_argument(
        "--alt-rows",
        type=int,
        default=0,
        help="rows for executemany and SQLAlchemy (default 0 = all)",
    )
    p.add_argument("--parallel-rows", type=int, default=250_000, help="rows per simulation")
    p.add_argument(
        "--memory-rows",
        type=int,
        default=1_000_000,
        help="rows logged while sampling RSS (the target is stated for 5000000)",
    )
    p.add_argument(
        "--query-rows",
        type=int,
        default=10_000_000,
        help="agent states over 10 simulations of 1000 agents",
    )
    p.add_argument("--query-runs", type=int, default=30, help="runs per query (p50/p95)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/<ts>.json)")
    return p.parse_args(argv)


def _stats(name: str, times: list[float], rows: int, note: str = "") -> dict[str, Any]:
    return {
        "contender": name,
        "rows": rows,
        "runs_s": [round(t, 3) for t in times],
        "best_rows_s": rows / min(times),
        "median_rows_s": rows / statistics.median(times),
        "note": note,
    }


# -- ingest -----------------------------------------------------------------------------


def run_ingest(maint: str, args: argparse.Namespace) -> dict[str, Any]:
    shape = data.Shape(sims=args.sims, agents=args.agents, steps=args.steps, seed=args.seed)
    log(f"generating {shape.rows:,} agent states ...")
    rows = data.all_states(shape)
    alt = rows[: args.alt_rows] if args.alt_rows else rows
    slow = rows[: args.slow_rows]
    tmp = Path(tempfile.mkdtemp(prefix="sim_schema_bench_files_"))
    binfile, sqlite_file = tmp / "agent_states.bin", tmp / "farm.db"
    out: dict[str, Any] = {"shape": vars(shape) | {"rows": shape.rows}}
    with server.fresh_database(maint, "sim_bench_ingest") as dsn:
        server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
        C.psycopg_copy(dsn, rows)
        C.dump_binary(dsn, binfile)
        out["binary_file_bytes"] = binfile.stat().st_size

        ceiling_mode = ""

        def ceiling(dsn: str, _rows: Sequence[data.StateRow]) -> float:
            nonlocal ceiling_mode
            seconds, ceiling_mode = C.ceiling(dsn, binfile)
            return seconds

        contenders: list[tuple[str, Callable[..., float], Sequence[data.StateRow], str]] = [
            ("ceiling: server COPY FROM binary file", ceiling, rows, "pg"),
            *[(name, fn, rows, "pg") for name, fn in ours.contenders()],
            ("asyncpg copy_records_to_table", C.asyncpg_copy, rows, "pg"),
            ("psycopg binary COPY, write_row (reference)", C.psycopg_copy, rows, "pg"),
            ("psycopg executemany (pipeline)", C.executemany_pipeline, alt, "pg"),
            ("SQLAlchemy bulk_insert_mappings -> SQLite", C.sqlalchemy_sqlite, alt, "sqlite"),
            ("SQLAlchemy bulk_insert_mappings -> PostgreSQL", C.sqlalchemy_postgres, alt, "pg"),
            ("row-at-a-time awaited INSERT (autocommit)", C.row_at_a_time, slow, "pg"),
        ]
        times: dict[str, list[float]] = {name: [] for name, *_ in contenders}
        for r in range(args.repeat):
            for name, fn, subset, target in contenders:
                # The inputs (1M row tuples, for the logger 1M dicts more) are built
                # before the clock; collected here, their promotion to the collector's
                # oldest generation does not trigger full collections inside the clock.
                gc.collect()
                if target == "pg":
                    server.reset_states(dsn)
                    seconds = fn(dsn, subset)
                    got = server.count_states(dsn)
                else:
                    seconds = fn(sqlite_file, subset)
                    got = C.sqlite_count(sqlite_file)
                if got != len(subset):
                    raise SystemExit(f"{name}: {got} rows stored, expected {len(subset)}")
                times[name].append(seconds)
                log(f"  run {r + 1}: {name}: {len(subset) / seconds:,.0f} rows/s")
        out["ablation"] = run_ablation(dsn, binfile, len(rows), args.repeat)
        if ours.HAVE_WRITER:
            out["client_us_per_row"] = ours.client_costs(rows)
        # Storage: the last contender left the table half-empty; reload the ceiling's rows.
        server.reset_states(dsn)
        C.ceiling(dsn, binfile)
        with server.connect(dsn) as c:
            c.execute("VACUUM ANALYZE agent_states")
        out["storage_pg"] = queries.storage(dsn)
        out["column_bytes"] = C.column_bytes(dsn)
        C.sqlalchemy_sqlite(sqlite_file, rows)
        out["storage_sqlite"] = {"file_bytes": sqlite_file.stat().st_size, "rows": len(rows)}
        out["contenders"] = [
            _stats(name, times[name], len(subset), ceiling_mode if fn is ceiling else "")
            for name, fn, subset, _ in contenders
        ]
    for f in (binfile, sqlite_file):
        f.unlink(missing_ok=True)
    return out


def run_ablation(dsn: str, binfile: Path, n: int, repeat: int) -> list[dict[str, Any]]:
    """The ceiling's COPY with FK checks and/or indexes removed: what each one costs."""
    times: dict[str, list[float]] = {name: [] for name in C.ABLATIONS}
    for _ in range(repeat):
        for name, (drop, skip_fk) in C.ABLATIONS.items():
            server.reset_states(dsn)
            times[name].append(C.ceiling_variant(dsn, binfile, drop, skip_fk))
            log(f"  ceiling {name}: {n / times[name][-1]:,.0f} rows/s")
    return [_stats(name, t, n) for name, t in times.items()]


# -- parallel ---------------------------------------------------------------------------


def _parallel_worker(dsn: str, shape: data.Shape, index: int, barrier: Any, queue: Any) -> None:
    rows = list(data.iter_states(shape, index))
    barrier.wait()
    t0 = time.time()
    ours.parallel_ingest(dsn, rows)
    queue.put((index, t0, time.time(), len(rows)))


def _get(queue: Any, procs: list[Any]) -> Any:
    """The next result, or exit if a worker died before sending one."""
    import queue as queue_mod

    while True:
        try:
            return queue.get(timeout=1)
        except queue_mod.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise SystemExit("a benchmark worker process failed (see its traceback)") from None


def run_parallel(maint: str, args: argparse.Namespace) -> dict[str, Any]:
    agents = 500
    shape = data.Shape(
        sims=4,
        agents=agents,
        steps=max(1, args.parallel_rows // agents),
        seed=args.seed,
        prefix="par",
    )
    ctx = mp.get_context("spawn")
    out: dict[str, Any] = {
        "rows_per_simulation": shape.agents * shape.steps,
        "path": ours.PARALLEL_PATH,
        "runs": [],
    }
    with server.fresh_database(maint, "sim_bench_parallel") as dsn:
        server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
        for n in (1, 2, 4):
            totals = []
            for _ in range(args.repeat):
                server.reset_states(dsn)
                barrier, queue = ctx.Barrier(n), ctx.Queue()
                procs = [
                    ctx.Process(target=_parallel_worker, args=(dsn, shape, i, barrier, queue))
                    for i in range(n)
                ]
                for p in procs:
                    p.start()
                res = [_get(queue, procs) for _ in procs]
                for p in procs:
                    p.join()
                    if p.exitcode:
                        raise SystemExit(f"parallel worker failed with exit code {p.exitcode}")
                total = sum(r[3] for r in res)
                if server.count_states(dsn) != total:
                    raise SystemExit("parallel: row count mismatch")
                totals.append(total / (max(r[2] for r in res) - min(r[1] for r in res)))
                log(f"  {n} simulation(s) at once: {totals[-1]:,.0f} rows/s total")
            out["runs"].append(
                {
                    "simulations": n,
                    "best_rows_s": max(totals),
                    "median_rows_s": statistics.median(totals),
                }
            )
    return out


# -- memory -----------------------------------------------------------------------------


def run_memory(maint: str, args: argparse.Namespace) -> dict[str, Any]:
    agents = 1000
    shape = data.Shape(
        sims=1,
        agents=agents,
        steps=max(1, args.memory_rows // agents),
        seed=args.seed,
        prefix="mem",
    )
    ctx = mp.get_context("spawn")
    with server.fresh_database(maint, "sim_bench_memory") as dsn:
        server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
        queue = ctx.Queue()
        p = ctx.Process(target=ours.memory_worker, args=(dsn, shape, queue))
        p.start()
        result: dict[str, Any] = _get(queue, [p])
        p.join()
        if server.count_states(dsn) != shape.rows:
            raise SystemExit("memory: row count mismatch")
    log(f"  memory: start {result['start_mb']:.0f} MB, peak {result['peak_mb']:.0f} MB")
    return result


# -- queries ----------------------------------------------------------------------------


def run_queries(maint: str, args: argparse.Namespace) -> dict[str, Any]:
    agents = 1000
    shape = queries.QueryShape(
        sims=10, agents=agents, steps=max(1, args.query_rows // (10 * agents))
    )
    out: dict[str, Any] = {"shape": vars(shape) | {"rows": shape.rows}}
    with server.fresh_database(maint, "sim_bench_queries") as dsn:
        log(f"loading {shape.rows:,} agent states for the query benchmark ...")
        out["load"] = queries.load(dsn, shape, log)
        out["storage_pg"] = queries.storage(dsn)
        out["queries"] = queries.measure(dsn, shape, args.query_runs, seed=args.seed)
        for q in out["queries"]:
            log(f"  {q['query']}: p50 {q['p50_ms']} ms, p95 {q['p95_ms']} ms")
        out["delete"] = ours.delete_during_ingest(dsn, shape.sim_id(shape.sims - 1), log)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
    started = time.time()
    results: dict[str, Any] = {"command": "python -m benchmarks.run " + " ".join(sys.argv[1:])}
    with server.server(args.dsn) as maint:
        with server.fresh_database(maint, "sim_bench_info") as dsn:
            results["machine"] = server.machine(dsn)
        runners = {
            "ingest": run_ingest,
            "parallel": run_parallel,
            "memory": run_memory,
            "queries": run_queries,
        }
        out = args.out or RESULTS_DIR / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
        out.parent.mkdir(parents=True, exist_ok=True)
        for section in SECTIONS:
            if section in sections:
                log(f"== {section}")
                results[section] = runners[section](maint, args)
                results["wall_s"] = round(time.time() - started, 1)
                out.write_text(json.dumps(results, indent=2, default=str))  # after each section
    print_report(results)
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
