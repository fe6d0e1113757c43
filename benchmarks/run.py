"""One command for the whole benchmark: `python -m benchmarks.run [--dsn DSN] [--sections ...]`.

Sections: ingest (the schema before migration 0006 against the current one, every path
on the same rows), storage (bytes per agent state + action against the predecessor's
SQLite tables), parallel (1/2/4 simulations logging at once), memory (peak RSS while
logging), queries (N simulations x 1M agent states, 30 with --scale: query latency and
plans, the query API's overhead, delete and archive while another simulation logs).
Prints a table and writes benchmarks/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
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
from benchmarks import data, ours, queries, server, storage
from benchmarks.report import print_report

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECTIONS = ("ingest", "cpu", "storage", "parallel", "memory", "queries")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--dsn", help="PostgreSQL server to use (default: a throwaway embedded one)")
    p.add_argument(
        "--sections",
        default="ingest,cpu,storage,parallel,queries",
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but memory)",
    )
    p.add_argument("--sims", type=int, default=2, help="ingest/storage: simulations (default 2)")
    p.add_argument("--agents", type=int, default=500, help="ingest/storage: agents per simulation")
    p.add_argument("--steps", type=int, default=1000, help="ingest/storage: steps per simulation")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeat", type=int, default=3, help="runs per contender (interleaved)")
    p.add_argument("--parallel-rows", type=int, default=250_000, help="rows per simulation")
    p.add_argument(
        "--memory-rows", type=int, default=1_000_000, help="rows logged while sampling RSS"
    )
    p.add_argument(
        "--query-sims",
        type=int,
        default=3,
        help="queries: simulations of 1000 agents x 1000 steps (default 3)",
    )
    p.add_argument(
        "--scale", action="store_true", help="queries: 30 simulations (30M agent states)"
    )
    p.add_argument(
        "--query-steps", type=int, default=1000, help="queries: steps per simulation (1000)"
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

Contender = tuple[str, Callable[[str, Sequence[data.StateRow]], float], str, Sequence[Any]]


def run_ingest(maint: str, args: argparse.Namespace) -> dict[str, Any]:
    shape = data.Shape(sims=args.sims, agents=args.agents, steps=args.steps, seed=args.seed)
    log(f"generating {shape.rows:,} agent states ...")
    rows = data.all_states(shape)
    tmp = Path(tempfile.mkdtemp(prefix="sim_schema_bench_files_"))
    before_file, after_file = tmp / "before.bin", tmp / "after.bin"
    out: dict[str, Any] = {"shape": vars(shape) | {"rows": shape.rows}}
    modes: dict[str, str] = {}
    with (
        server.fresh_database(maint, "sim_bench_ingest_before", to=5) as before,
        server.fresh_database(maint, "sim_bench_ingest_after") as after,
    ):
        for dsn in (before, after):
            server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
        C.psycopg_copy(before, rows)
        C.dump_binary(before, before_file, C.BEFORE_TABLE)
        ours.bulk_ingest(after, rows)
        C.dump_binary(after, after_file, C.AFTER_TABLE)
        keyed = data.keyed(rows, *server.keys(after))
        out["binary_file_bytes"] = {
            "before": before_file.stat().st_size,
            "after": after_file.stat().st_size,
        }

        def ceiling_of(label: str, path: Path, table: str) -> Callable[..., float]:
            def run(dsn: str, _rows: Sequence[data.StateRow]) -> float:
                seconds, modes[label] = C.ceiling(dsn, path, table)
                return seconds

            return run

        ceiling_before = "before: ceiling, server COPY of a binary file into agent_states"
        ceiling_after = "after: ceiling, server COPY of a binary file into agent_states_data"
        contenders: list[Contender] = [
            (ceiling_before, ceiling_of(ceiling_before, before_file, C.BEFORE_TABLE), before, rows),
            (ceiling_after, ceiling_of(ceiling_after, after_file, C.AFTER_TABLE), after, rows),
            *[(name, fn, after, rows) for name, fn in ours.contenders()],
            (
                "after: asyncpg copy_records_to_table (keys mapped before)",
                C.asyncpg_copy,
                after,
                keyed,
            ),
        ]
        times: dict[str, list[float]] = {name: [] for name, *_ in contenders}
        for r in range(args.repeat):
            for name, fn, dsn, subset in contenders:
                # The inputs (1M row tuples, for the logger 1M dicts more) are built
                # before the clock; collected here, their promotion to the collector's
                # oldest generation does not trigger full collections inside the clock.
                server.reset_states(dsn)
                gc.collect()
                seconds = fn(dsn, subset)
                got = server.count_states(dsn)
                if got != len(subset):
                    raise SystemExit(f"{name}: {got} rows stored, expected {len(subset)}")
                times[name].append(seconds)
                log(f"  run {r + 1}: {name}: {len(subset) / seconds:,.0f} rows/s")
        out["contenders"] = [
            _stats(name, times[name], len(subset), modes.get(name, ""))
            for name, _, _, subset in contenders
        ]
        out["ablation"] = [
            *run_ablation(before, before_file, C.BEFORE_TABLE, len(rows), args.repeat),
            *run_ablation(after, after_file, C.AFTER_TABLE, len(rows), args.repeat),
        ]
    for f in (before_file, after_file):
        f.unlink(missing_ok=True)
    return out


def run_ablation(dsn: str, binfile: Path, table: str, n: int, repeat: int) -> list[dict[str, Any]]:
    """A ceiling's COPY with triggers and/or indexes removed: what each one costs."""
    variants = C.ABLATIONS[table]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, (drop, skip) in variants.items():
            server.reset_states(dsn)
            times[name].append(C.ceiling_variant(dsn, binfile, table, drop, skip))
            log(f"  ceiling {name}: {n / times[name][-1]:,.0f} rows/s")
    return [_stats(name, t, n) for name, t in times.items()]


# -- cpu --------------------------------------------------------------------------------


def run_cpu(maint: str, args: argparse.Namespace) -> dict[str, Any]:
    """Where the time of the after-schema contenders goes: CPU of the harness process and
    of the server backends during one run of each, and the logger's client work per row."""
    shape = data.Shape(sims=args.sims, agents=args.agents, steps=args.steps, seed=args.seed)
    rows = data.all_states(shape)
    tmp = Path(tempfile.mkdtemp(prefix="sim_schema_bench_files_"))
    after_file = tmp / "after.bin"
    out: dict[str, Any] = {"shape": vars(shape) | {"rows": shape.rows}, "runs": []}
    with server.fresh_database(maint, "sim_bench_cpu") as dsn:
        server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
        ours.bulk_ingest(dsn, rows)
        C.dump_binary(dsn, after_file, C.AFTER_TABLE)
        keyed = data.keyed(rows, *server.keys(dsn))
        runs: list[tuple[str, Callable[[], float], Sequence[Any]]] = [
            ("ceiling after", lambda: C.ceiling(dsn, after_file, C.AFTER_TABLE)[0], rows),
            ("logger", lambda: ours.logger_ingest(dsn, rows), rows),
            ("bulk writer", lambda: ours.bulk_ingest(dsn, rows), rows),
            ("asyncpg", lambda: C.asyncpg_copy(dsn, keyed), keyed),
        ]
        for label, fn, subset in runs:
            server.reset_states(dsn)
            out["runs"].append(ours.cpu_split(dsn, subset, label, fn))
            log(f"  cpu {out['runs'][-1]}")
    after_file.unlink(missing_ok=True)
    out["fresh_database"] = run_fresh_logger(maint, shape, rows, args.repeat)
    out["client_us_per_row"] = ours.client_costs(rows)
    log(f"  client µs/row: {out['client_us_per_row']}")
    return out


# What PostgreSQL 18 does with the rollup functions' plans: after five executions on a
# connection a SQL function's statement may switch to a generic plan; the setting below
# (a lever, not the shipped schema) keeps population_add/action_add on custom plans.
PIN_CUSTOM_PLANS = (
    "ALTER FUNCTION population_add SET plan_cache_mode = force_custom_plan;"
    " ALTER FUNCTION action_add SET plan_cache_mode = force_custom_plan"
)


def run_fresh_logger(
    maint: str, shape: data.Shape, rows: Sequence[Any], repeat: int
) -> list[dict[str, Any]]:
    """The logger into a fresh database whose agents were just registered (no statistics
    yet, as in a user's first run), as shipped and with the rollup functions pinned to
    custom plans; interleaved, a new database per run."""
    out = []
    for r in range(repeat):
        for pinned in (False, True):
            with server.fresh_database(maint, "sim_bench_fresh") as dsn:
                if pinned:
                    with server.connect(dsn) as c:
                        c.execute(PIN_CUSTOM_PLANS)
                server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
                label = "rollup functions on custom plans" if pinned else "as shipped"
                out.append(
                    {"run": r + 1, "variant": label}
                    | ours.cpu_split(dsn, rows, "logger", lambda d=dsn: ours.logger_ingest(d, rows))
                )
                log(f"  fresh database, logger {label}: {out[-1]}")
    return out


# -- storage ----------------------------------------------------------------------------


def run_storage(maint: str, args: argparse.Namespace) -> dict[str, Any]:
    shape = data.Shape(sims=args.sims, agents=args.agents, steps=args.steps, seed=args.seed)
    return storage.measure(maint, shape, log)


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
    totals: dict[int, list[float]] = {1: [], 2: [], 4: []}
    with server.fresh_database(maint, "sim_bench_parallel") as dsn:
        server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
        for _ in range(args.repeat):
            for n in totals:  # interleaved: 1, 2, 4, 1, 2, 4, ...
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
                totals[n].append(total / (max(r[2] for r in res) - min(r[1] for r in res)))
                log(f"  {n} simulation(s) at once: {totals[n][-1]:,.0f} rows/s total")
    out["runs"] = [
        {
            "simulations": n,
            "runs_rows_s": [round(t) for t in ts],
            "best_rows_s": max(ts),
            "median_rows_s": statistics.median(ts),
        }
        for n, ts in totals.items()
    ]
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
    shape = queries.QueryShape(sims=30 if args.scale else args.query_sims, steps=args.query_steps)
    out: dict[str, Any] = {"shape": vars(shape) | {"rows": shape.rows}}
    with server.fresh_database(maint, "sim_bench_queries") as dsn:
        log(f"loading {shape.rows:,} agent states for the query benchmark ...")
        out["load"] = queries.load(dsn, shape, log)
        with server.connect(dsn) as c:
            out["database_bytes"] = c.execute(
                "SELECT pg_database_size(current_database())"
            ).fetchone()[0]
        out["queries"] = queries.measure(dsn, shape, args.query_runs, seed=args.seed)
        for q in out["queries"]:
            log(f"  {q['query']}: p50 {q['p50_ms']} ms, p95 {q['p95_ms']} ms")
        out["api_overhead"] = queries.api_overhead(dsn, shape, args.query_runs)
        for a in out["api_overhead"]:
            log(f"  API {a['function']}: {a['api_p50_ms']} vs {a['direct_p50_ms']} ms")
        last = shape.sims - 1
        out["delete"] = ours.delete_during_ingest(dsn, shape.sim_id(last), log)
        out["archive"] = ours.archive_during_ingest(dsn, shape.sim_id(last - 1), log)
        out["delete_breakdown"] = queries.delete_breakdown(dsn, shape.sim_id(last - 2))
        b = out["delete_breakdown"]
        log(f"  delete under EXPLAIN ANALYZE: {b['total_ms']} ms, {b['total_wal_mb']} MB WAL")
        for s in b["statements"]:
            log(f"  {s['statement']}: {s['rows']:,} rows, {s['s']} s, {s['wal_mb']} MB WAL")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
    started = time.time()
    results: dict[str, Any] = {
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        "load_average_start": os.getloadavg(),
    }
    with server.server(args.dsn) as maint:
        with server.fresh_database(maint, "sim_bench_info") as dsn:
            results["machine"] = server.machine(dsn)
        runners = {
            "ingest": run_ingest,
            "cpu": run_cpu,
            "storage": run_storage,
            "parallel": run_parallel,
            "memory": run_memory,
            "queries": run_queries,
        }
        out = args.out or RESULTS_DIR / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
        out.parent.mkdir(parents=True, exist_ok=True)
        for section in SECTIONS:
            if section in sections:
                log(f"== {section} (load average {os.getloadavg()[0]:.2f})")
                t0 = time.time()
                results[section] = runners[section](maint, args)
                results[section]["wall_s"] = round(time.time() - t0, 1)
                results[section]["load_average_end"] = os.getloadavg()
                results["wall_s"] = round(time.time() - started, 1)
                results["load_average_end"] = os.getloadavg()
                out.write_text(json.dumps(results, indent=2, default=str))  # after each section
    print_report(results)
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
