"""What a backend service built on the module sees (issue 14): the event queue with a
pool of workers, decisions through the logger, and keyset paging through agent states.

    python -m benchmarks.services [--dsn DSN] [--events 2000] [--workers 4]
        [--decisions 20000] [--decisions-one-by-one 2000] [--agents 1000] [--steps 1000]

1. queue: `--workers` asyncio workers, each on its own pooled connection, handle
   `--events` events. "claim": `claim_events` (limit 10) -> handle -> `mark_event_processed
   (worker=)`. "list/mark": the predecessor's loop, `list_unprocessed_events` (limit 10) ->
   handle -> `mark_event_processed`, whose "already processed" error tells a worker it
   lost only after it handled the event. Reported: events/s, events handled more than once.
2. decisions: rows/s of `log_decisions` (the logger's COPY batches) against
   `record_decision` awaited one row at a time.
3. paging: `--agents` x `--steps` agent states (generated server-side), then every page
   of 10,000 through `list_agent_states(limit=, after=)`; the first, median and last
   page's time, and the whole walk.

Each part works in a fresh database (`sim_bench_services`), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections import Counter
from typing import Any

from sim_schema import Settings, SimulationLogger, Store
from sim_schema import repositories as repo
from sim_schema.errors import LifecycleError
from sim_schema.models import AgentDecisionCreate

from .server import fresh_database, server

PAGE = 10_000


async def _events(store: Store, n: int) -> None:
    async with store.connection() as conn:
        await conn.execute("DELETE FROM events")
        await conn.execute(
            "INSERT INTO events (simulation_id, step, event_type, payload)"
            " SELECT 'q', i / 100, 'ask', jsonb_build_object('i', i) FROM generate_series(1, %s) i",
            (n,),
        )


async def _claim_worker(store: Store, name: str, handled: list[Any]) -> None:
    async with store.connection() as conn:
        while batch := await repo.claim_events(conn, "q", worker=name, limit=10):
            for event in batch:
                handled.append(event.event_id)
                await repo.mark_event_processed(conn, "q", event.event_id, "ok", worker=name)


async def _list_mark_worker(store: Store, handled: list[Any]) -> None:
    async with store.connection() as conn:
        while batch := await repo.list_unprocessed_events(conn, "q", limit=10):
            for event in batch:
                handled.append(event.event_id)  # the work is done before the mark can fail
                with contextlib.suppress(LifecycleError):  # another worker marked it first
                    await repo.mark_event_processed(conn, "q", event.event_id, "ok")


async def queue(store: Store, events: int, workers: int) -> dict[str, dict[str, float]]:
    async with store.connection() as conn:
        await repo.create_simulation(conn, "q")
    results = {}
    for loop in ("claim", "list/mark"):
        await _events(store, events)
        handled: list[Any] = []
        started = time.perf_counter()
        if loop == "claim":
            tasks = [_claim_worker(store, f"w{i}", handled) for i in range(workers)]
        else:
            tasks = [_list_mark_worker(store, handled) for _ in range(workers)]
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - started
        twice = sum(1 for n in Counter(handled).values() if n > 1)
        assert len(set(handled)) == events, "an event was lost"
        results[loop] = {"events_per_s": events / seconds, "handled_twice": twice,
                         "seconds": seconds}
    return results


async def decisions(store: Store, logged: int, one_by_one: int) -> dict[str, float]:
    async with store.connection() as conn:
        await repo.create_simulation(conn, "d")
    rows = [
        {"step": i // 100, "agent_id": f"a{i % 100}", "prompt": f"step {i // 100}: where?",
         "output": "north", "context": {"seen": [i, "tree"]}, "action": {"move": "N"},
         "processing_time": 0.5}
        for i in range(logged)
    ]
    async with SimulationLogger(store, "d") as logger:
        await logger.log_agents([{"agent_id": f"a{i}", "agent_type": "llm"} for i in range(100)])
        await logger.flush()
        started = time.perf_counter()
        await logger.log_decisions(rows)
        await logger.flush()
        through_logger = logged / (time.perf_counter() - started)
    records = [AgentDecisionCreate(simulation_id="d", **r) for r in rows[:one_by_one]]
    async with store.connection() as conn:
        started = time.perf_counter()
        for record in records:
            await repo.record_decision(conn, record)
        single = one_by_one / (time.perf_counter() - started)
        cur = await conn.execute("SELECT count(*) FROM agent_decisions")
        stored = (await cur.fetchone() or (0,))[0]
    assert stored == logged + one_by_one
    return {"logger_rows_per_s": through_logger, "one_at_a_time_rows_per_s": single}


async def paging(store: Store, agents: int, steps: int) -> dict[str, float]:
    async with store.connection() as conn:
        await repo.create_simulation(conn, "p")
        await conn.execute(
            "INSERT INTO agents (simulation_id, agent_id, agent_type)"
            " SELECT 'p', 'a' || lpad(i::text, 5, '0'), 't' FROM generate_series(1, %s) i",
            (agents,),
        )
        await conn.execute(
            "INSERT INTO agent_states_data (sim_key, step, agent_key, health, memory)"
            " SELECT s.sim_key, t, a.agent_key, 1.0, jsonb_build_object('t', t)"
            " FROM simulations s JOIN agents a USING (simulation_id),"
            " generate_series(0, %s - 1) t WHERE s.simulation_id = 'p' ORDER BY 1, 2, 3",
            (steps,),
        )
        await conn.execute("VACUUM ANALYZE agents")
        await conn.execute("VACUUM ANALYZE agent_states_data")
        times: list[float] = []
        after = None
        rows = 0
        walk = time.perf_counter()
        while True:
            started = time.perf_counter()
            page = await repo.list_agent_states(conn, "p", limit=PAGE, after=after)
            times.append(time.perf_counter() - started)
            if not page:
                break
            rows += len(page)
            after = page[-1]
        walk = time.perf_counter() - walk
    assert rows == agents * steps
    pages = times[:-1]  # the last call returns the empty page that ends the walk
    return {"rows": rows, "pages": len(pages), "first_ms": pages[0] * 1000,
            "median_ms": statistics.median(pages) * 1000, "last_ms": pages[-1] * 1000,
            "walk_s": walk}


async def main(args: argparse.Namespace) -> None:
    with server(args.dsn) as maintenance, fresh_database(maintenance, "sim_bench_services") as dsn:
        async with Store(Settings(dsn=dsn, pool_max_size=args.workers + 2)) as store:
            async with store.connection() as conn:
                cur = await conn.execute("SHOW server_version")
                print("PostgreSQL", (await cur.fetchone() or ("?",))[0])
            q = await queue(store, args.events, args.workers)
            for loop, r in q.items():
                print(f"queue {loop:10s} {args.workers} workers x {args.events:,} events:"
                      f" {r['events_per_s']:8,.0f} events/s, {r['handled_twice']:,} handled twice")
            d = await decisions(store, args.decisions, args.decisions_one_by_one)
            print(f"decisions: logger {d['logger_rows_per_s']:,.0f} rows/s,"
                  f" one at a time {d['one_at_a_time_rows_per_s']:,.0f} rows/s")
            p = await paging(store, args.agents, args.steps)
            print(f"paging {p['rows']:,} agent states, {p['pages']} pages of {PAGE:,}:"
                  f" first {p['first_ms']:.1f} ms, median {p['median_ms']:.1f} ms,"
                  f" last {p['last_ms']:.1f} ms, whole walk {p['walk_s']:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a server to use (default: a throwaway embedded one)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--decisions-one-by-one", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    asyncio.run(main(parser.parse_args()))
