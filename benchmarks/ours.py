"""The sim_schema contenders: the public SimulationLogger and the bulk writer, and the
module's delete and archive while another simulation logs."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg

from sim_schema import BulkWriter, CopyBatch, SimulationLogger, Store, admin, export
from sim_schema.settings import Settings

from . import data
from .data import StateRow
from .server import SCHEMA

PARALLEL_PATH = "SimulationLogger"


def contenders() -> list[tuple[str, Callable[[str, Sequence[StateRow]], float]]]:
    return [
        ("after: sim_schema SimulationLogger (public API)", logger_ingest),
        ("after: sim_schema bulk writer (BulkWriter.write_many)", bulk_ingest),
    ]


def _by_step(rows: Sequence[StateRow]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The rows as a simulation loop hands them over: one list of mappings per (sim, step)."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    key = None
    for row in rows:
        if (row[0], row[1]) != key:
            key = (row[0], row[1])
            out.append((row[0], []))
        out[-1][1].append(data.state_dict(row))
    return out


def _store(dsn: str) -> Store:
    return Store(Settings(dsn=dsn, schema_name=SCHEMA))


async def _log(dsn: str, steps: list[tuple[str, list[dict[str, Any]]]]) -> float:
    async with _store(dsn) as store:
        gc.collect()  # the mappings were just built: see run.py on collecting before a clock
        t0 = time.perf_counter()
        i = 0
        while i < len(steps):
            sim = steps[i][0]
            async with SimulationLogger(store, sim) as lg:
                while i < len(steps) and steps[i][0] == sim:
                    await lg.log_agent_states(steps[i][1])
                    i += 1
        return time.perf_counter() - t0


def logger_ingest(dsn: str, rows: Sequence[StateRow]) -> float:
    """The public API as a simulation loop uses it: `await log_agent_states(<one step's
    rows as mappings>)`, one logger per simulation (default options), clock stopped when
    `close()` returns. The mappings are built before the clock (they are the caller's
    data); the agents were registered before."""
    return asyncio.run(_log(dsn, _by_step(rows)))


WRITER_BATCH = 50_000  # rows per write_many call (one transaction each)


async def _bulk_ingest(dsn: str, rows: Sequence[StateRow]) -> float:
    writer = BulkWriter()  # one writer: it caches the agents' keys like the logger's does
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options=f"-c search_path={SCHEMA}"
    ) as conn:
        t0 = time.perf_counter()
        start = 0
        while start < len(rows):
            sim = rows[start][0]
            end = min(start + WRITER_BATCH, len(rows))
            while rows[end - 1][0] != sim:  # one simulation per batch
                end -= 1
            batch = CopyBatch(uuid.uuid4(), rows[start:end])
            await writer.write_many(conn, "agent_states", sim, [batch])
            start = end
        return time.perf_counter() - t0


def bulk_ingest(dsn: str, rows: Sequence[StateRow]) -> float:
    """`BulkWriter.write_many` (ledger row, id -> key mapping, validation streamed with
    the binary COPY), WRITER_BATCH rows per transaction."""
    return asyncio.run(_bulk_ingest(dsn, rows))


def parallel_ingest(dsn: str, rows: Sequence[StateRow]) -> float:
    return logger_ingest(dsn, rows)


# -- memory -----------------------------------------------------------------------------


def memory_worker(dsn: str, shape: data.Shape, queue: Any) -> None:
    """Log `shape` through the logger one step at a time while sampling RSS every 10 ms."""
    import psutil

    proc = psutil.Process()
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    start = proc.memory_info().rss
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    asyncio.run(_log_stream(dsn, shape))
    seconds = time.perf_counter() - t0
    done.set()
    t.join()
    end = proc.memory_info().rss
    mb = 2**20
    queue.put(
        {
            "rows": shape.rows,
            "path": PARALLEL_PATH,
            "start_mb": start / mb,
            "peak_mb": max(peak[0], end) / mb,
            "end_mb": end / mb,
            "rows_s": shape.rows / seconds,
        }
    )


def _steps(shape: data.Shape, sim_index: int) -> Iterator[list[StateRow]]:
    """One step of rows at a time, generated lazily (the generator holds one step)."""
    batch: list[StateRow] = []
    for row in data.iter_states(shape, sim_index):
        batch.append(row)
        if len(batch) == shape.agents:
            yield batch
            batch = []


async def _log_stream(dsn: str, shape: data.Shape) -> None:
    async with _store(dsn) as store, SimulationLogger(store, shape.sim_id(0)) as lg:
        for batch in _steps(shape, 0):
            await lg.log_agent_states([data.state_dict(r) for r in batch])


# -- delete and archive during ingest ---------------------------------------------------

DELETE_INGEST_PATH = "SimulationLogger, flush() after each step of 1000 rows"


async def _ingest_until_async(dsn: str, shape: data.Shape, stop: Any, queue: Any) -> None:
    """Log one step at a time and wait for its commit (flush), recording (time, rows)."""
    progress: list[tuple[float, int]] = [(time.time(), 0)]
    total = 0
    async with _store(dsn) as store, SimulationLogger(store, shape.sim_id(0)) as lg:
        for batch in _steps(shape, 0):
            await lg.log_agent_states([data.state_dict(r) for r in batch])
            await lg.flush()
            total += len(batch)
            progress.append((time.time(), total))
            if len(progress) == 5:
                queue.put("ready")
            if stop.is_set():
                break
    queue.put(progress)


def _ingest_until(dsn: str, shape: data.Shape, stop: Any, queue: Any) -> None:
    asyncio.run(_ingest_until_async(dsn, shape, stop, queue))


def _rate(progress: list[tuple[float, int]], t0: float, t1: float) -> float:
    inside = [p for p in progress if t0 <= p[0] <= t1]
    if len(inside) < 2:
        return 0.0
    return (inside[-1][1] - inside[0][1]) / max(1e-9, inside[-1][0] - inside[0][0])


def _during_ingest(
    dsn: str, live_index: int, action: Callable[[], Any]
) -> tuple[float, Any, dict[str, Any]]:
    """Run `action` while another simulation logs; (seconds, its result, the ingest's rates)."""
    import multiprocessing as mp

    from . import server

    shape = data.Shape(sims=1, agents=1000, steps=100_000, prefix=f"live{live_index}")
    server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
    ctx = mp.get_context("spawn")
    stop, queue = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_ingest_until, args=(dsn, shape, stop, queue))
    p.start()
    assert queue.get() == "ready"
    time.sleep(3)
    t0 = time.time()
    result = action()
    t1 = time.time()
    time.sleep(3)
    stop.set()
    progress: list[tuple[float, int]] = queue.get()
    p.join()
    times = [t for t, _ in progress if t0 - 1 <= t <= t1 + 1]
    max_gap = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    commits_inside = sum(1 for t, _ in progress if t0 <= t <= t1)
    rates = {
        "path": DELETE_INGEST_PATH,
        "before_rows_s": _rate(progress, t0 - 3, t0),
        "during_rows_s": _rate(progress, t0, t1),
        "after_rows_s": _rate(progress, t1, t1 + 3),
        "commits_during": commits_inside,
        "max_gap_s": max_gap,
        # blocked: its commits stalled (waiting on a lock) for over 1 s and half the action.
        "blocked": max_gap > max(1.0, 0.5 * (t1 - t0)),
    }
    return t1 - t0, result, rates


def delete_during_ingest(dsn: str, sim_id: str, log: Callable[[str], None]) -> dict[str, Any]:
    """`admin.delete_simulation` of `sim_id` while another simulation logs."""

    def delete() -> dict[str, int]:
        with psycopg.connect(dsn, autocommit=True) as c:
            return admin.delete_simulation(c, sim_id, schema=SCHEMA)

    seconds, counts, rates = _during_ingest(dsn, 0, delete)
    result = {"simulation": sim_id, "rows": counts, "delete_s": seconds, **rates}
    log(
        f"  delete {sum(counts.values()):,} rows: {seconds:.2f} s; other ingest "
        f"{rates['before_rows_s']:,.0f} -> {rates['during_rows_s']:,.0f} rows/s"
    )
    return result


def archive_during_ingest(dsn: str, sim_id: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The archive of `sim_id` while another simulation logs: the two steps
    `admin.archive_simulation` runs, timed each: `export` (CSV, every table) and
    `admin.delete_archived` (re-read and check the files, compare counts, delete)."""
    out_dir = tempfile.mkdtemp(prefix="sim_schema_bench_archive_")
    timings: dict[str, float] = {}

    def archive() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            t0 = time.perf_counter()
            export(c, out_dir, simulations=[sim_id], progress=False, schema=SCHEMA)
            timings["export_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            admin.delete_archived(c, sim_id, out_dir, schema=SCHEMA)
            timings["verify_and_delete_s"] = time.perf_counter() - t0

    seconds, _, rates = _during_ingest(dsn, 1, archive)
    result = {"simulation": sim_id, "archive_s": seconds, **timings, **rates}
    log(
        f"  archive: {seconds:.2f} s (export {timings['export_s']:.2f} s, verify + delete "
        f"{timings['verify_and_delete_s']:.2f} s); other ingest {rates['before_rows_s']:,.0f}"
        f" -> {rates['during_rows_s']:,.0f} rows/s"
    )
    return result


# -- where the logger's time goes -------------------------------------------------------


def _backend_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a server process on this machine, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BackendCpu:
    """Samples the CPU time of the database's other client backends every 50 ms (a backend
    may end before it can be read once more: its last sample counts; autovacuum workers
    are not counted)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self._stop.is_set():
                pids = [
                    r[0]
                    for r in c.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                    )
                ]
                for pid in pids:
                    try:
                        cpu = _backend_cpu_s(pid)
                    except OSError:  # ended, or not on this machine
                        continue
                    self.first.setdefault(pid, cpu)
                    self.last[pid] = cpu
                time.sleep(0.05)

    def __enter__(self) -> BackendCpu:
        self._thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.last[p] - self.first[p] for p in self.last)


def cpu_split(
    dsn: str, rows: Sequence[StateRow], label: str, run: Callable[[], float]
) -> dict[str, Any]:
    """Wall time of one run, the harness process's CPU time and the server backends'."""
    gc.collect()
    cpu0 = time.process_time()
    with BackendCpu(dsn) as server_cpu:
        wall = run()
    client = time.process_time() - cpu0
    return {
        "contender": label,
        "rows": len(rows),
        "wall_s": round(wall, 2),
        "client_cpu_s": round(client, 2),
        "server_cpu_s": round(server_cpu.seconds, 2),
    }


def client_costs(rows: Sequence[StateRow]) -> dict[str, float]:
    """Client CPU per row (µs) of the steps the logger runs on each call, no database:
    mappings to tuples (`TableSpec.rows`) and `values.validate` (which also encodes the
    JSON), in 500-row calls as the harness makes them."""
    from sim_schema.catalog import spec_of
    from sim_schema.values import validate

    sim = rows[0][0]
    same = [r for r in rows if r[0] == sim]
    dicts = [data.state_dict(r) for r in same]
    spec = spec_of("agent_states")
    step = 500
    parts: list[Any] = []
    out: dict[str, float] = {}

    def clock(label: str, work: Callable[[], list[Any]]) -> list[Any]:
        gc.collect()
        t0 = time.perf_counter()
        result = work()
        out[label] = round((time.perf_counter() - t0) / len(same) * 1e6, 2)
        return result

    parts = clock(
        "mappings -> row tuples (TableSpec.rows)",
        lambda: [spec.rows(sim, dicts[i : i + step]) for i in range(0, len(dicts), step)],
    )
    clock(
        "values.validate incl. JSON encoding",
        lambda: [validate("agent_states", sim, part) for part in parts],
    )
    return out
