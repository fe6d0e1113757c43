"""The sim_schema contenders: the public SimulationLogger and the bulk writer.

Everything that depends on their API is in this module. Until they exist (or if they fail
to import), the parallel, memory and delete sections fall back to plain psycopg binary COPY
and say so in their `path` field.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg

from . import data
from .contenders import psycopg_copy
from .data import StateRow
from .server import SCHEMA

try:
    from sim_schema import copy as _copy

    HAVE_WRITER = True
except ImportError:
    HAVE_WRITER = False
try:
    from sim_schema import logger as _logger

    HAVE_LOGGER = True
except ImportError:
    HAVE_LOGGER = False

PARALLEL_PATH = "SimulationLogger" if HAVE_LOGGER else "psycopg binary COPY (logger not available)"


def contenders() -> list[tuple[str, Callable[[str, Sequence[StateRow]], float]]]:
    out: list[tuple[str, Callable[[str, Sequence[StateRow]], float]]] = []
    if HAVE_LOGGER:
        out.append(("sim_schema SimulationLogger (public API)", logger_ingest))
        out.append(("sim_schema SimulationLogger, buffer_size=10000", logger_ingest_10k))
    if HAVE_WRITER:
        out.append(("sim_schema bulk writer (direct)", bulk_ingest))
    return out


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


async def _log(dsn: str, steps: list[tuple[str, list[dict[str, Any]]]], buffer_size: int) -> float:
    from sim_schema.settings import Settings
    from sim_schema.store import Store

    async with Store(Settings(dsn=dsn, schema_name=SCHEMA)) as store:
        gc.collect()  # the mappings were just built: see run.py on collecting before a clock
        t0 = time.perf_counter()
        i = 0
        while i < len(steps):
            sim = steps[i][0]
            async with _logger.SimulationLogger(store, sim, buffer_size=buffer_size) as lg:
                while i < len(steps) and steps[i][0] == sim:
                    await lg.log_agent_states(steps[i][1])
                    i += 1
        return time.perf_counter() - t0


def logger_ingest(dsn: str, rows: Sequence[StateRow], buffer_size: int = 1000) -> float:
    """The public API as a simulation loop uses it: `await log_agent_states(<one step's
    rows as mappings>)`, one logger per simulation, clock stopped when `close()` returns.
    The mappings are built before the clock (they are the caller's data)."""
    return asyncio.run(_log(dsn, _by_step(rows), buffer_size))


def logger_ingest_10k(dsn: str, rows: Sequence[StateRow]) -> float:
    return logger_ingest(dsn, rows, buffer_size=10_000)


WRITER_BATCH = 50_000  # rows per copy_rows call (one transaction each); see --writer-batch


async def _bulk_ingest(dsn: str, rows: Sequence[StateRow]) -> float:
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
            await _copy.copy_rows(conn, "agent_states", sim, rows[start:end])
            start = end
        return time.perf_counter() - t0


def bulk_ingest(dsn: str, rows: Sequence[StateRow]) -> float:
    """`sim_schema.ingest.writer.copy_rows` (validation + ledger + binary COPY), WRITER_BATCH rows a call."""
    return asyncio.run(_bulk_ingest(dsn, rows))


def parallel_ingest(dsn: str, rows: Sequence[StateRow]) -> float:
    return logger_ingest(dsn, rows) if HAVE_LOGGER else psycopg_copy(dsn, rows)


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
    _log_stream(dsn, shape)
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


def _log_stream(dsn: str, shape: data.Shape) -> None:
    """One step of mappings at a time, generated lazily (the generator holds one step)."""

    def steps() -> Iterator[list[StateRow]]:
        batch: list[StateRow] = []
        for row in data.iter_states(shape, 0):
            batch.append(row)
            if len(batch) == shape.agents:
                yield batch
                batch = []

    if not HAVE_LOGGER:
        for batch in steps():
            psycopg_copy(dsn, batch)
        return

    async def run() -> None:
        from sim_schema.settings import Settings
        from sim_schema.store import Store

        async with (
            Store(Settings(dsn=dsn, schema_name=SCHEMA)) as store,
            _logger.SimulationLogger(store, shape.sim_id(0)) as lg,
        ):
            for batch in steps():
                await lg.log_agent_states([data.state_dict(r) for r in batch])

    asyncio.run(run())


# -- delete during ingest ---------------------------------------------------------------


DELETE_INGEST_PATH = (
    "bulk writer copy_rows, one step (1000 rows) per transaction"
    if HAVE_WRITER
    else "psycopg binary COPY, one step per transaction"
)


async def _ingest_until_async(dsn: str, shape: data.Shape, stop: Any, queue: Any) -> None:
    progress: list[tuple[float, int]] = [(time.time(), 0)]
    total = 0
    step_rows: list[StateRow] = []
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options=f"-c search_path={SCHEMA}"
    ) as conn:
        for row in data.iter_states(shape, 0):
            step_rows.append(row)
            if len(step_rows) < shape.agents:
                continue
            if HAVE_WRITER:
                await _copy.copy_rows(conn, "agent_states", row[0], step_rows)
            else:
                psycopg_copy(dsn, step_rows)
            total += len(step_rows)
            step_rows = []
            progress.append((time.time(), total))
            if len(progress) == 5:
                queue.put("ready")
            if stop.is_set():
                break
    queue.put(progress)


def _ingest_until(dsn: str, shape: data.Shape, stop: Any, queue: Any) -> None:
    """Ingest one step per commit until `stop`; report (wall time, rows) after each commit."""
    asyncio.run(_ingest_until_async(dsn, shape, stop, queue))


def _rate(progress: list[tuple[float, int]], t0: float, t1: float) -> float:
    inside = [p for p in progress if t0 <= p[0] <= t1]
    if len(inside) < 2:
        return 0.0
    return (inside[-1][1] - inside[0][1]) / max(1e-9, inside[-1][0] - inside[0][0])


def delete_during_ingest(dsn: str, sim_id: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Delete `sim_id` (cascading to its agent states) while another simulation ingests."""
    import multiprocessing as mp

    from . import server

    with server.connect(dsn) as c:
        row = c.execute(
            "SELECT count(*) FROM agent_states WHERE simulation_id = %s", (sim_id,)
        ).fetchone()
    n = int(row[0]) if row else 0
    shape = data.Shape(sims=1, agents=1000, steps=100_000, prefix="live")
    server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
    ctx = mp.get_context("spawn")
    stop, queue = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_ingest_until, args=(dsn, shape, stop, queue))
    p.start()
    assert queue.get() == "ready"
    time.sleep(3)
    with server.connect(dsn) as c:
        t0 = time.time()
        c.execute("DELETE FROM simulations WHERE simulation_id = %s", (sim_id,))
        t1 = time.time()
    time.sleep(3)
    stop.set()
    progress: list[tuple[float, int]] = queue.get()
    p.join()
    during = [p for p in progress if t0 <= p[0] <= t1 + 0.5]
    times = [t for t, _ in progress if t0 - 1 <= t <= t1 + 1]
    max_gap = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    before, after = _rate(progress, t0 - 3, t0), _rate(progress, t1, t1 + 3)
    during_rate = _rate(progress, t0, t1) if len(during) >= 2 else 0.0
    result = {
        "rows": n,
        "delete_s": t1 - t0,
        "path": DELETE_INGEST_PATH,
        "before_rows_s": before,
        "during_rows_s": during_rate,
        "after_rows_s": after,
        "max_gap_s": max_gap,
        # blocked: commits stalled (waiting on a lock) for over 1 s and half the delete.
        "blocked": max_gap > max(1.0, 0.5 * (t1 - t0)),
    }
    log(f"  delete {n:,} rows: {t1 - t0:.2f} s; ingest {before:,.0f} -> {during_rate:,.0f} rows/s")
    return result


def client_costs(rows: Sequence[StateRow]) -> dict[str, float]:
    """Client-side CPU per row (µs) of the steps our paths add, no database involved."""
    import json

    from sim_schema.catalog import SPECS
    from sim_schema.values import encode_json, validate

    out: dict[str, float] = {}
    sim = rows[0][0]
    same = [r for r in rows if r[0] == sim]
    dicts = [data.state_dict(r) for r in same]
    spec = SPECS["agent_states"]

    def clock(label: str, work: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        work()
        out[label] = (time.perf_counter() - t0) / len(same)

    clock("logger: mappings -> row tuples (SPECS[...].rows)", lambda: spec.rows(sim, dicts))
    clock(
        "logger: JSON encoded at log time (encode_json)", lambda: encode_json("agent_states", same)
    )
    encoded = encode_json("agent_states", same)
    clock(
        "logger: validate() of encoded rows",
        lambda: validate("agent_states", sim, encoded, json_encoded=True),
    )
    clock(
        "bulk writer: validate() incl. JSON serialization",
        lambda: validate("agent_states", sim, same),
    )
    clock("of which json.dumps(extras) alone", lambda: [json.dumps(r[14]) for r in same])
    return {k: round(v * 1e6, 2) for k, v in out.items()}
