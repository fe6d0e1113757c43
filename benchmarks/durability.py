"""What the durability default costs: the same model logged with today's default (buffers
sealed after at most 1 s, the writer given a turn every 2 ms, at most about 1 s of the
writer's work held) and with the old one (sealed after 30 s, the writer running only when
the model waits, 50,000 rows held), side by side.

    python benchmarks/durability.py [--dsn postgresql://...] [--steps 2000] [--repeat 3]

The model is the one of the crash tests (tests/crash_child.py shape, 60 agents: a state
and one or two actions per agent, a step row and an event per step) computing in the event
loop between its log calls. Each run logs into a fresh simulation; runs alternate between
the variants. Reported: rows/s from the first log call to `close()` returning (all rows
committed) and, sampled every 50 ms by a second connection, the largest number of logged
rows not yet committed: what a `kill -9` at the worst moment would have lost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

import sim_schema.ingest.logger as logger_module
from benchmarks.server import fresh_database, server
from sim_schema import Settings, SimulationLogger, Store, repositories

AGENTS = 60
VARIANTS = {  # name: (flush_interval, TURN_INTERVAL, max_pending_seconds)
    "default (1 s)": (logger_module.DEFAULT_FLUSH_INTERVAL, logger_module.TURN_INTERVAL,
                      logger_module.DEFAULT_MAX_PENDING_SECONDS),
    "before (30 s, rows bound only)": (30.0, float("inf"), None),
}


class Lag:
    """The most rows logged and not yet committed, sampled from another connection."""

    def __init__(self, dsn: str, simulation_id: str) -> None:
        self.dsn, self.simulation_id = dsn, simulation_id
        self.logged = 0
        self.worst = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True, options="-c search_path=sim") as conn:
            while not self.stop.wait(0.05):
                logged = self.logged
                row = conn.execute(
                    "SELECT coalesce(sum(row_count), 0) FROM ingest_batches"
                    " WHERE simulation_id = %s", (self.simulation_id,),
                ).fetchone()  # fmt: skip
                self.worst = max(self.worst, logged - int(row[0] if row else 0))


async def run_once(dsn: str, simulation_id: str, steps: int, variant: str) -> dict[str, Any]:
    flush_interval, turn, seconds_held = VARIANTS[variant]
    logger_module.TURN_INTERVAL = turn
    lag = Lag(dsn, simulation_id)
    async with Store(Settings(dsn=dsn)) as store:
        async with store.connection() as conn:
            await repositories.create_simulation(conn, simulation_id)
        lag.thread.start()
        started = time.perf_counter()
        log = SimulationLogger(store, simulation_id, flush_interval=flush_interval,
                               max_pending_seconds=seconds_held)
        await log.log_agents([{"agent_id": f"a{i}", "agent_type": "prey"} for i in range(AGENTS)])
        lag.logged += AGENTS
        for step in range(steps):
            await log.log_agent_states(
                [{"step": step, "agent_id": f"a{i}", "health": (step + i) % 100 / 100,
                  "age": step} for i in range(AGENTS)]
            )  # fmt: skip
            rows = AGENTS
            for i in range(AGENTS):
                for kind in ("move", "eat")[: 1 + (step + i) % 2]:
                    await log.log_action(step, f"a{i}", kind, reward=0.25)
                    rows += 1
            await log.log_step(step, total_agents=AGENTS)
            await log.log_event(step, "tick")
            lag.logged += rows + 2
        await log.close()
        seconds = time.perf_counter() - started
        lag.stop.set()
        lag.thread.join()
    return {"variant": variant, "rows": lag.logged, "seconds": seconds,
            "rows_per_s": lag.logged / seconds, "worst_uncommitted": lag.worst}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="maintenance DSN of a server (default: a throwaway one)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with server(args.dsn) as maintenance, fresh_database(maintenance, "sim_bench_durability") as dsn:
        for n in range(args.repeat):
            for variant in VARIANTS:
                r = asyncio.run(run_once(dsn, f"d-{n}-{len(results)}", args.steps, variant))
                results.append(r)
                print(f"  {variant:30s} {r['rows']:>9,} rows {r['rows_per_s']:>9,.0f} rows/s"
                      f"  worst uncommitted {r['worst_uncommitted']:>7,}", flush=True)
    print(f"\n{'variant':30s} {'median rows/s':>14} {'worst uncommitted (max)':>24}")
    medians = {}
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        medians[variant] = statistics.median(r["rows_per_s"] for r in runs)
        worst = max(r["worst_uncommitted"] for r in runs)
        print(f"{variant:30s} {medians[variant]:>14,.0f} {worst:>24,}")
    default, before = medians.values()
    print(f"\nthroughput of the default / before: {default / before:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
