"""Soak with faults: simulations logging at full speed while analysts query and export,
a no-op `sim-schema migrate` runs every few seconds, every `--kill-every` seconds the
backends of the loggers, analysts and exporter are terminated, and once, half-way, the
server restarts (`pg_ctl restart -m fast`; only on the throwaway server, not on `--dsn`).

    python benchmarks/soak.py [--minutes 30] [--dsn postgresql://...] [--simulations 4]
                              [--kill-every 120]

Reports committed rows per 10 s window, the faults injected and when, the interruptions
they caused (a reader whose connection was killed reconnects: counted, not an error),
errors (must be 0), deadlocks (pg_stat_database delta, must be 0), and per simulation the
stored row count and an order-independent digest (sum of per-row md5 prefixes) compared
with what was logged. Writes the report as JSON to benchmarks/results/soak-<time>.json.
Exit code 0 only if every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from benchmarks.server import connect, fresh_database, restartable_server
from sim_schema.errors import ConnectionFailed
from sim_schema.ingest.logger import RetryPolicy, SimulationLogger
from sim_schema.read.export import export
from sim_schema.read.sqllib import load_library, run_query
from sim_schema.settings import Settings
from sim_schema.store import Store

AGENTS = 50
WINDOW = 10.0
RESULTS = Path(__file__).resolve().parent / "results"
# Per-row text whose md5 both sides compute: health is a multiple of 0.25, so x4 is exact.
ROW_SQL = (
    "SELECT count(*), coalesce(sum(('x' || substr(md5(step || ':' || agent_id || ':' ||"
    " (health * 4)::bigint || ':' || (extras ->> 'i')), 1, 15))::bit(60)::bigint), 0)"
    " FROM agent_states WHERE simulation_id = %s"
)


def row_hash(step: int, agent: str, quarter: int, i: int) -> int:
    return int(hashlib.md5(f"{step}:{agent}:{quarter}:{i}".encode()).hexdigest()[:15], 16)


APPS = ("soak-logger", "soak-analyst", "soak-export")  # the backends a kill terminates


def _with_app(dsn: str, app: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, application_name=app)


class Soak:
    def __init__(
        self,
        dsn: str,
        simulations: int,
        seconds: float,
        *,
        kill_every: float = 120.0,
        restart: Callable[[], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.kill_every = kill_every
        self.restart = restart
        self.faults: list[dict[str, Any]] = []
        self.interruptions: dict[str, int] = {}
        self.started = time.monotonic()
        self.sims = [f"soak-{i}" for i in range(simulations)]
        self.seconds = seconds
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.logged: dict[str, tuple[int, int]] = {}  # rows, digest
        self.loggers: list[SimulationLogger] = []
        self.queries = 0
        self.exports = 0
        self.migrations = 0
        self.windows: list[dict[str, float]] = []

    def error(self, where: str, exc: BaseException) -> None:
        self.errors.append(f"{where}: {type(exc).__name__}: {exc}")
        traceback.print_exception(exc, file=sys.stderr)

    def interrupted(self, who: str) -> None:
        """A reader's connection was killed or the server restarted: it reconnects."""
        self.interruptions[who] = self.interruptions.get(who, 0) + 1
        self.stop.wait(0.5)

    # -- writers --------------------------------------------------------------------------

    async def simulate(self, store: Store, sim: str) -> None:
        # The budget outlasts a server restart (the default's 120 s would too).
        retry = RetryPolicy(attempts=None, timeout=300.0)
        logger = SimulationLogger(store, sim, buffer_size=5000, flush_interval=1.0, retry=retry)
        self.loggers.append(logger)
        rows = digest = 0
        try:
            agents = [f"a{k}" for k in range(AGENTS)]
            for k, a in enumerate(agents):
                await logger.log_agent(a, ("prey", "predator")[k % 2], profile={"k": k})
            step = 0
            while not self.stop.is_set():
                for k, a in enumerate(agents):
                    quarter = (step * 7 + k) % 4000
                    await logger.log_agent_state(
                        step, a, health=quarter / 4, resource_level=float(k), extras={"i": rows}
                    )
                    digest += row_hash(step, a, quarter, rows)
                    rows += 1
                await logger.log_step(step, total_agents=AGENTS, metrics={"m": step % 17})
                step += 1
                if step % 20 == 0:
                    await asyncio.sleep(0)  # let the writer tasks run
            await logger.close()
        except Exception as exc:
            self.error(f"logger {sim}", exc)
        self.logged[sim] = (rows, digest)

    async def writers(self) -> None:
        settings = Settings(
            dsn=self.dsn, pool_max_size=len(self.sims) + 2, application_name=APPS[0]
        )
        async with Store(settings) as store:
            await asyncio.gather(*(self.simulate(store, s) for s in self.sims))

    # -- readers and the deploy job -------------------------------------------------------

    def analyst(self, n: int) -> None:
        library = load_library()
        params = {
            "simulation_id": self.sims[n % len(self.sims)], "agent_id": "a1", "start_step": 0,
            "end_step": 100, "experiment_id": "soak-exp", "bucket_size": 10, "parameter": "seed",
            "step": 10, "min_rating": 0.0, "simulation_ids": self.sims, "action_type": None,
        }  # fmt: skip
        while not self.stop.is_set():
            try:
                with connect(_with_app(self.dsn, APPS[1])) as conn:
                    while not self.stop.is_set():
                        for name, q in library.items():
                            run_query(conn, name, {p: params[p] for p in q.parameters})
                            self.queries += 1
                            if self.stop.is_set():
                                break
            except (psycopg.OperationalError, ConnectionFailed):
                self.interrupted("analyst")
            except Exception as exc:
                self.error(f"analyst {n}", exc)
                return

    def exporter(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            while not self.stop.is_set():
                try:
                    with connect(_with_app(self.dsn, APPS[2])) as conn:
                        while not self.stop.is_set():
                            export(conn, Path(tmp) / str(self.exports), simulations=self.sims[:2],
                                   from_step=0, to_step=200, progress=False,
                                   overwrite=True)  # fmt: skip
                            self.exports += 1
                except (psycopg.OperationalError, ConnectionFailed):
                    # a killed connection, also when found while the module hands it back
                    self.interrupted("export")
                except Exception as exc:
                    self.error("export", exc)
                    return

    def injector(self) -> None:
        """Kill the module's backends every `kill_every` s; restart the server once."""
        restart_at = self.seconds / 2 if self.restart else None
        next_kill = self.kill_every
        while not self.stop.wait(1.0):
            t = time.monotonic() - self.started
            if restart_at is not None and t >= restart_at and self.restart is not None:
                restart_at = None
                began = time.monotonic()
                self.restart()
                self.faults.append({"t": round(t, 1), "fault": "server restart",
                                    "took_s": round(time.monotonic() - began, 1)})
            elif t >= next_kill:
                next_kill += self.kill_every
                try:
                    with connect(self.dsn) as conn:
                        killed = conn.execute(
                            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                            " FROM pg_stat_activity WHERE application_name = ANY(%s)"
                            " AND pid <> pg_backend_pid()",
                            (list(APPS),),
                        ).fetchone()
                    self.faults.append({"t": round(t, 1), "fault": "backends killed",
                                        "backends": killed[0] if killed else 0})
                except psycopg.OperationalError as exc:  # the server is restarting
                    self.faults.append({"t": round(t, 1), "fault": f"kill skipped: {exc}"})

    def migrator(self) -> None:
        env = {**os.environ, "SIM_SCHEMA_DSN": self.dsn}
        while not self.stop.wait(5.0):
            proc = subprocess.run(
                [sys.executable, "-m", "sim_schema", "migrate"], capture_output=True, text=True,
                env=env, timeout=120,
            )  # fmt: skip
            self.migrations += 1
            if proc.returncode == 3:  # no connection: the server is restarting
                self.interrupted("migrate")
            elif proc.returncode != 0:
                self.errors.append(f"migrate exit {proc.returncode}: {proc.stderr.strip()}")

    def sampler(self) -> None:
        started = last_time = time.monotonic()
        last_rows = 0
        while not self.stop.wait(WINDOW):
            now, rows = time.monotonic(), sum(lg.rows_written for lg in self.loggers)
            self.windows.append({
                "t": round(now - started, 1), "rows": rows - last_rows,
                "rows_per_s": round((rows - last_rows) / (now - last_time)),
                "queries": self.queries, "exports": self.exports,
            })  # fmt: skip
            last_time, last_rows = now, rows

    # -- the run --------------------------------------------------------------------------

    def deadlocks(self) -> int:
        with connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            return int(row[0]) if row else 0

    def run(self) -> dict[str, Any]:
        with connect(self.dsn) as conn:
            conn.execute(
                "INSERT INTO experiments (experiment_id, name) VALUES ('soak-exp', 'soak')"
            )
            for i, s in enumerate(self.sims):
                conn.execute(
                    "INSERT INTO simulations (simulation_id, experiment_id, parameters)"
                    " VALUES (%s, 'soak-exp', %s)", (s, json.dumps({"seed": i % 2})),
                )  # fmt: skip
        deadlocks_before = self.deadlocks()
        threads = [threading.Thread(target=self.analyst, args=(n,)) for n in range(2)]
        threads += [
            threading.Thread(target=f)
            for f in (self.exporter, self.migrator, self.sampler, self.injector)
        ]
        timer = threading.Timer(self.seconds, self.stop.set)
        started = self.started = time.monotonic()
        timer.start()
        for t in threads:
            t.start()
        asyncio.run(self.writers())
        elapsed = time.monotonic() - started
        for t in threads:
            t.join()
        checks = []
        with connect(self.dsn) as conn:
            for s in self.sims:
                rows, digest = self.logged.get(s, (0, 0))
                got_rows, got_digest = conn.execute(ROW_SQL, (s,)).fetchone() or (0, 0)
                checks.append({
                    "simulation": s, "logged": rows, "stored": int(got_rows),
                    "digest_logged": digest, "digest_stored": int(got_digest),
                    "equal": rows == got_rows and digest == got_digest,
                })  # fmt: skip
        total = sum(c["stored"] for c in checks)
        return {
            "started_at": datetime.now(UTC).isoformat(),
            "seconds": round(elapsed, 1),
            "simulations": len(self.sims),
            "rows_stored": total,
            "rows_per_s": round(total / elapsed),
            "windows": self.windows,
            "library_queries": self.queries,
            "exports": self.exports,
            "noop_migrations": self.migrations,
            "faults": self.faults,
            "interruptions": self.interruptions,
            "batches_replayed": sum(lg.batches_replayed for lg in self.loggers),
            "errors": self.errors,
            "deadlocks": self.deadlocks() - deadlocks_before,
            "simulations_checked": checks,
        }


def print_report(r: dict[str, Any]) -> None:
    print(f"soak: {r['simulations']} simulations, {r['seconds']} s")
    print(f"{'t (s)':>7} {'rows':>10} {'rows/s':>9} {'queries':>8} {'exports':>8}")
    for w in r["windows"]:
        print(
            f"{w['t']:>7} {w['rows']:>10} {w['rows_per_s']:>9} {w['queries']:>8} {w['exports']:>8}"
        )
    print(
        f"rows stored {r['rows_stored']} ({r['rows_per_s']} rows/s), library queries "
        f"{r['library_queries']}, exports {r['exports']}, no-op migrations {r['noop_migrations']}"
    )
    for f in r["faults"]:
        print(f"  fault at {f['t']} s: " + ", ".join(f"{k} {v}" for k, v in f.items() if k != "t"))
    print(f"interruptions (reconnected): {r['interruptions']}; batches found already"
          f" committed on a retry: {r['batches_replayed']}")
    print(f"errors {len(r['errors'])}, deadlocks {r['deadlocks']}")
    for e in r["errors"]:
        print(f"  {e}")
    for c in r["simulations_checked"]:
        print(
            f"  {c['simulation']}: logged {c['logged']} stored {c['stored']} "
            f"digest {'equal' if c['equal'] else 'DIFFERENT'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--kill-every", type=float, default=120.0,
                        help="seconds between two kills of the module's backends")
    parser.add_argument("--dsn", help="maintenance DSN of a server (default: a throwaway one)")
    parser.add_argument("--simulations", type=int, default=4)
    args = parser.parse_args(argv)
    with (
        restartable_server(args.dsn) as (maintenance, restart),
        fresh_database(maintenance, f"sim_schema_soak_{os.getpid()}") as dsn,
    ):
        report = Soak(dsn, args.simulations, args.minutes * 60, kill_every=args.kill_every,
                      restart=restart).run()
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"soak-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"report: {path}")
    ok = not report["errors"] and report["deadlocks"] == 0
    return 0 if ok and all(c["equal"] for c in report["simulations_checked"]) else 1


if __name__ == "__main__":
    sys.exit(main())
