"""Inside a host backend: our migrations beside the host's own, one truth for both runners,
and the data-access layer on the host's pool (docs/migrations.md, "Inside a host backend").

The host runner is `tests/host_double.py`, written from the host's documented semantics.
Every test starts from an empty database (`blank_dsn`) and connects the way the host does:
a default, non-autocommit psycopg connection with the host's search path.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import psycopg
import pytest
from host_double import (
    HostMigration,
    host_run_migrations,
    host_run_migrations_async,
    host_table_rows,
)
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

import sim_schema
from sim_schema import ops
from sim_schema.migrations import live_schema
from sim_schema.read import queries
from sim_schema import repositories as repo
from sim_schema.errors import (
    ConfigurationError,
    MigrationFailed,
    VerificationError,
)
from sim_schema.ingest.experiment import ExperimentManager
from sim_schema.read.export import export_async
from sim_schema.migrations.migration import SqlMigration, host_migrations, load_migrations, lock_key
from sim_schema.migrations.runner import MigrationRunner
from sim_schema.store import Store

N = len(load_migrations(None))
HOST = [
    HostMigration(0, "CREATE TABLE users (id integer PRIMARY KEY, name text)"),
    HostMigration(1, "CREATE TABLE experiments (id integer PRIMARY KEY, title text)"),
    HostMigration(2, "CREATE TABLE agents (id integer PRIMARY KEY, kind text)"),
]
HOST_DESCRIPTIONS = [(m.version(), m.description()) for m in HOST]


def state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """What a borrowed connection must get back unchanged (read without changing it)."""
    status = conn.info.transaction_status
    path = conn.execute("SELECT current_setting('search_path')").fetchone()
    locks = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ).fetchone()
    if status == psycopg.pq.TransactionStatus.IDLE and not conn.autocommit:
        conn.rollback()  # the two reads above opened a transaction; close it again
    return conn.autocommit, path, status, locks


def recorded(dsn: str) -> list[int]:
    """Versions in our tracking table (each at most once: it is the primary key)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        if c.execute("SELECT to_regclass('sim.schema_migrations')").fetchone() == (None,):
            return []
        return [r[0] for r in c.execute("SELECT version FROM sim.schema_migrations ORDER BY 1")]


def statuses(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        return [s.state for s in MigrationRunner(load_migrations(None)).status(c)]


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim_schema", "--dsn", dsn, *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def assert_same_schema_as_a_fresh_install(dsn: str, reference_dsn: str) -> None:
    """Catalog of `sim` here equals the one our runner built in the template database."""

    def dump(d: str) -> live_schema.Catalog:
        with psycopg.connect(d) as c:
            return ops.run_borrowed(c, live_schema.catalog("sim"), what="test")  # type: ignore[no-any-return]

    assert live_schema.first_difference(dump(dsn), dump(reference_dsn)) is None


# --- path 1: our runner, called by the host at start-up ----------------------------------


def test_path1_host_with_its_own_migrations_then_ours(blank_dsn: str, dsn: str) -> None:
    with psycopg.connect(blank_dsn) as conn:  # the host's default connection
        host_run_migrations(conn, HOST)
        before = state(conn)
        result = sim_schema.migrate(conn)
        assert [r.version for r in result.applied] == list(range(N))
        assert state(conn) == before
        host_run_migrations(conn, HOST)  # the next start-up: both are no-ops
        assert sim_schema.migrate(conn).applied == []
        assert state(conn) == before
        assert host_table_rows(conn) == HOST_DESCRIPTIONS
        conn.commit()
    assert recorded(blank_dsn) == list(range(N))
    assert_same_schema_as_a_fresh_install(blank_dsn, dsn)


def test_path1_ours_first_then_the_hosts_own(blank_dsn: str) -> None:
    with psycopg.connect(blank_dsn) as conn:
        sim_schema.migrate(conn)
        host_run_migrations(conn, HOST)
        assert host_table_rows(conn) == HOST_DESCRIPTIONS
        # the host's own `experiments` is its table in public, ours is sim.experiments
        cols = conn.execute(
            "SELECT table_schema, string_agg(column_name, ',' ORDER BY ordinal_position)"
            " FROM information_schema.columns WHERE table_name = 'experiments'"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert cols[0] == ("public", "id,title")
        assert cols[1][0] == "sim" and cols[1][1].startswith("experiment_id,name")
    assert recorded(blank_dsn) == list(range(N))


async def test_path1_async_on_a_non_autocommit_connection(blank_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(blank_dsn) as conn:
        await host_run_migrations_async(conn, HOST)
        result = await sim_schema.migrate_async(conn)
        assert [r.version for r in result.applied] == list(range(N))
        assert conn.autocommit is False
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert recorded(blank_dsn) == list(range(N))


def test_path1_refuses_an_open_transaction(blank_dsn: str) -> None:
    with psycopg.connect(blank_dsn) as conn:
        conn.execute("SELECT 1")  # a transaction is now open on the host's connection
        with pytest.raises(ConfigurationError, match="needs an idle connection"):
            sim_schema.migrate(conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert recorded(blank_dsn) == []


# --- path 2: our migrations appended to the host's list ----------------------------------


def test_path2_host_list_with_ours_appended(blank_dsn: str, dsn: str) -> None:
    migrations = [*HOST, *host_migrations(3)]
    with psycopg.connect(blank_dsn) as conn:
        host_run_migrations(conn, migrations)
        assert [v for v, _ in host_table_rows(conn)] == list(range(3 + N))
        host_run_migrations(conn, migrations)  # restart: nothing to do
    assert recorded(blank_dsn) == list(range(N))  # recorded as ours: 0..N-1
    assert statuses(blank_dsn) == ["applied"] * N
    with psycopg.connect(blank_dsn) as conn:
        assert sim_schema.migrate(conn).applied == []
    assert_same_schema_as_a_fresh_install(blank_dsn, dsn)


def test_path2_two_releases_interleaved_with_new_host_migrations(blank_dsn: str) -> None:
    """Release 1 of this module shipped versions 0..3; the host appended them at 3..6, then
    added its own 7 and 8; release 2 ships 0..N-1 and the host appends the new slice."""
    release1 = [*HOST, *host_migrations(3, stop=4)]
    host_later = [
        HostMigration(7, "CREATE TABLE sessions (id integer PRIMARY KEY)"),
        HostMigration(8, "CREATE TABLE tokens (id integer PRIMARY KEY)"),
    ]
    release2 = [*release1, *host_later, *host_migrations(9, start=4)]
    with psycopg.connect(blank_dsn) as conn:
        host_run_migrations(conn, release1)
        assert recorded(blank_dsn) == [0, 1, 2, 3]
        assert statuses(blank_dsn) == ["applied"] * 4 + ["pending"] * (N - 4)
        host_run_migrations(conn, [*release1, *host_later])
        host_run_migrations(conn, release2)
        assert [v for v, _ in host_table_rows(conn)] == list(range(9 + N - 4))
    assert recorded(blank_dsn) == list(range(N))
    assert statuses(blank_dsn) == ["applied"] * N


def test_path2_up_refuses_a_drifted_migration(blank_dsn: str) -> None:
    with psycopg.connect(blank_dsn) as conn:
        sim_schema.migrate(conn)
        edited = SqlMigration(0, "edited", ["SELECT 2"], schema="sim")
        with pytest.raises(VerificationError, match="migration 0 .* has drifted"):
            host_run_migrations(conn, [edited])
        conn.rollback()


# --- one truth: switching runners --------------------------------------------------------


@pytest.mark.parametrize("at", sorted({2, 5, N - 1}))
def test_switch_from_our_runner_to_the_hosts(blank_dsn: str, dsn: str, at: int) -> None:
    with psycopg.connect(blank_dsn) as conn:
        assert [r.version for r in sim_schema.migrate(conn, to=at).applied] == list(range(at + 1))
        host_run_migrations(conn, [*HOST, *host_migrations(3)])
        assert [v for v, _ in host_table_rows(conn)] == list(range(3 + N))
    assert recorded(blank_dsn) == list(range(N))
    assert statuses(blank_dsn) == ["applied"] * N
    assert_same_schema_as_a_fresh_install(blank_dsn, dsn)


@pytest.mark.parametrize("at", sorted({2, 5, N - 1}))
def test_switch_from_the_hosts_runner_to_ours(blank_dsn: str, dsn: str, at: int) -> None:
    with psycopg.connect(blank_dsn) as conn:
        host_run_migrations(conn, [*HOST, *host_migrations(3, stop=at + 1)])
        assert recorded(blank_dsn) == list(range(at + 1))
        done = cli(blank_dsn, "--json", "status")
        assert done.returncode == 0, done.stderr
        states = [m["state"] for m in json.loads(done.stdout)["migrations"]]
        assert states == ["applied"] * (at + 1) + ["pending"] * (N - at - 1)
        applied = sim_schema.migrate(conn).applied
        assert [r.version for r in applied] == list(range(at + 1, N))
        host_run_migrations(conn, [*HOST, *host_migrations(3)])  # back to the host: no-ops
    assert recorded(blank_dsn) == list(range(N))
    assert_same_schema_as_a_fresh_install(blank_dsn, dsn)


# --- adopting an untracked install ---------------------------------------------------------


def _install_untracked(dsn: str, upto: int) -> None:
    """What an older host integration left: our objects, no tracking rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA sim")
        conn.execute("SET search_path = sim")
        for migration in load_migrations(None)[: upto + 1]:
            for statement in migration.statements:
                conn.execute(sql.SQL(statement))  # type: ignore[arg-type]


def test_baseline_adopts_an_untracked_install(blank_dsn: str) -> None:
    _install_untracked(blank_dsn, N - 1)
    done = cli(blank_dsn, "status")
    assert done.returncode == 8 and "records no migration" in done.stderr
    assert "untracked" in done.stdout
    done = cli(blank_dsn, "baseline", "--to", str(N - 1))
    assert done.returncode == 0, done.stderr
    assert f"matches versions 0..{N - 1}" in done.stdout
    assert recorded(blank_dsn) == list(range(N))
    assert statuses(blank_dsn) == ["applied"] * N
    with psycopg.connect(blank_dsn) as conn:
        assert sim_schema.migrate(conn).applied == []
        by = conn.execute("SELECT DISTINCT applied_by FROM sim.schema_migrations").fetchall()
        assert len(by) == 1 and by[0][0].endswith(" by baseline")


def test_baseline_of_an_older_version_then_migrate(blank_dsn: str, dsn: str) -> None:
    _install_untracked(blank_dsn, 2)
    done = cli(blank_dsn, "baseline", "--to", "2")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(blank_dsn) as conn:
        assert [r.version for r in sim_schema.migrate(conn).applied] == list(range(3, N))
    assert_same_schema_as_a_fresh_install(blank_dsn, dsn)


@pytest.mark.parametrize(
    ("change", "to", "named"),
    [
        ("ALTER TABLE sim.agents ALTER COLUMN position_z TYPE real", None,
         "column agents.position_z is 'position 9: real', expected 'position 9: double precision'"),
        ("DROP INDEX sim.simulations_experiment_idx", None,
         "index simulations_experiment_idx is missing"),
        (None, 2, "relation action_rollup is not created by these migrations (table)"),
    ],
    ids=["column type", "missing index", "version too low"],
)  # fmt: skip
def test_baseline_refuses_naming_the_first_difference(
    blank_dsn: str, change: str | None, to: int | None, named: str
) -> None:
    _install_untracked(blank_dsn, N - 1)
    if change is not None:
        with psycopg.connect(blank_dsn, autocommit=True) as conn:
            conn.execute(change)  # type: ignore[arg-type]
    done = cli(blank_dsn, "baseline", "--to", str(N - 1 if to is None else to))
    assert done.returncode == 5, done.stderr
    assert named in done.stderr and "nothing was recorded" in done.stderr
    assert recorded(blank_dsn) == []


# --- the host's search path ------------------------------------------------------------------

PATHS = ["public", "app, public", '"$user", public']


def _relations_outside_sim(dsn: str) -> set[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'v', 'm', 'p', 'S')"
            " AND n.nspname NOT IN ('sim', 'pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%'"
        ).fetchall()
    return {(s, r) for s, r in rows if not r.endswith("_pkey")}


@pytest.mark.parametrize("path", [1, 2], ids=["path 1", "path 2"])
@pytest.mark.parametrize("search_path", PATHS)
def test_the_hosts_search_path_is_respected(blank_dsn: str, search_path: str, path: int) -> None:
    with psycopg.connect(blank_dsn, autocommit=True) as c:
        c.execute("CREATE SCHEMA app")
    home = "app" if search_path.startswith("app") else "public"
    with psycopg.connect(blank_dsn) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (search_path,))
        conn.commit()  # the host's session setting
        if path == 1:
            host_run_migrations(conn, HOST)
            sim_schema.migrate(conn)
        else:
            host_run_migrations(conn, [*HOST, *host_migrations(3)])
        shown = conn.execute("SHOW search_path").fetchone()
        conn.commit()
    assert shown is not None and shown[0] == search_path
    assert _relations_outside_sim(blank_dsn) == {
        (home, name) for name in ("users", "experiments", "agents", "migrations")
    }
    with psycopg.connect(blank_dsn, autocommit=True) as c:
        assert c.execute("SELECT to_regclass('sim.migrations')").fetchone() == (None,)
    assert recorded(blank_dsn) == list(range(N))


def test_module_schema_first_in_the_hosts_path_captures_its_tracking_table(
    blank_dsn: str,
) -> None:
    """The warning of docs/migrations.md, shown: with `sim` first in the host's search path,
    the host's unqualified `migrations` table (and any table of its own) is created in
    `sim`."""
    with psycopg.connect(blank_dsn, autocommit=True) as c:
        c.execute("CREATE SCHEMA sim")
    with psycopg.connect(blank_dsn, options="-c search_path=sim,public") as conn:
        host_run_migrations(conn, [HOST[0], *host_migrations(1)])
    with psycopg.connect(blank_dsn, autocommit=True) as c:
        assert c.execute("SELECT to_regclass('sim.migrations')").fetchone() != (None,)
        assert c.execute("SELECT to_regclass('sim.users')").fetchone() != (None,)
        assert c.execute("SELECT to_regclass('public.migrations')").fetchone() == (None,)


# --- concurrency --------------------------------------------------------------------------


def _replicas(count: int, target: Any) -> tuple[list[Any], list[BaseException]]:
    barrier = threading.Barrier(count)
    results: list[Any] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            value = target()
        except BaseException as exc:
            with lock:
                failures.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results, failures


@pytest.mark.slow
@pytest.mark.parametrize("start_at", [None, 2], ids=["empty database", "at version 2"])
def test_eight_replicas_call_migrate_at_once(blank_dsn: str, start_at: int | None) -> None:
    if start_at is not None:
        with psycopg.connect(blank_dsn) as conn:
            sim_schema.migrate(conn, to=start_at)
    first = 0 if start_at is None else start_at + 1

    def replica() -> list[int]:
        with psycopg.connect(blank_dsn) as conn:
            return [r.version for r in sim_schema.migrate(conn).applied]

    results, failures = _replicas(8, replica)
    assert failures == [] and len(results) == 8
    applied = sorted(v for versions in results for v in versions)
    assert applied == list(range(first, N))  # each version applied exactly once
    assert recorded(blank_dsn) == list(range(N))


@pytest.mark.slow
@pytest.mark.parametrize("own", [True, False], ids=["with host migrations", "ours only"])
def test_concurrent_host_runners_fail_only_on_the_hosts_own_race(
    blank_dsn: str, own: bool
) -> None:
    """Four host replicas with the host runner: the host's own race on its tables remains
    (the docs say so and point to path 1); nothing of ours adds a failure or a duplicate.
    With our migrations alone in the host's list, the replicas meet first in our `up()`."""
    migrations = [*HOST, *host_migrations(3)] if own else host_migrations(0)
    with psycopg.connect(blank_dsn) as conn:
        host_run_migrations(conn, [])  # an earlier deploy created the host's table

    def replica() -> None:
        with psycopg.connect(blank_dsn) as conn:
            host_run_migrations(conn, migrations)

    results, failures = _replicas(4, replica)
    assert results, "no replica succeeded"
    for failure in failures:
        frames = traceback.extract_tb(failure.__traceback__)
        assert not any("sim_schema" in f.filename for f in frames), "".join(
            traceback.format_exception(failure)
        )
    assert recorded(blank_dsn) == list(range(N))
    assert statuses(blank_dsn) == ["applied"] * N


# --- failure midway ------------------------------------------------------------------------


def test_failure_midway_under_the_host_runner_rolls_back_the_run_truthfully(
    blank_dsn: str, dsn: str
) -> None:
    """Release 1 committed; release 2 fails in a host migration between ours: the host
    runner leaves one failed transaction, the host rolls it back, and with it every
    migration of that run, ours and their tracking rows included."""
    release1 = [*HOST, *host_migrations(3, stop=3)]
    broken = [
        *release1,
        *host_migrations(6, start=3, stop=4),
        HostMigration(7, "SELECT 1 / 0", "a host migration that fails"),
        *host_migrations(8, start=4),
    ]
    with psycopg.connect(blank_dsn) as conn:
        host_run_migrations(conn, release1)
        with pytest.raises(psycopg.errors.DivisionByZero):
            host_run_migrations(conn, broken)
        conn.rollback()  # what the host does with the failed run
        assert recorded(blank_dsn) == [0, 1, 2]
        assert statuses(blank_dsn) == ["applied"] * 3 + ["pending"] * (N - 3)
        fixed = [*broken[:7], HostMigration(7, "SELECT 1"), *broken[8:]]
        host_run_migrations(conn, fixed)
    assert recorded(blank_dsn) == list(range(N))
    assert_same_schema_as_a_fresh_install(blank_dsn, dsn)


def test_failure_midway_under_our_runner_keeps_earlier_versions(blank_dsn: str, dsn: str) -> None:
    with psycopg.connect(blank_dsn) as conn:
        sim_schema.migrate(conn, to=N - 2)
        conn.execute("CREATE INDEX events_claim_idx ON sim.events (step)")  # made by the last
        conn.commit()
        before = state(conn)
        with pytest.raises(MigrationFailed, match=f"migration {N - 1} .* rolled back"):
            sim_schema.migrate(conn)
        assert state(conn) == before
        assert statuses(blank_dsn) == ["applied"] * (N - 1) + ["pending"]
        conn.execute("DROP INDEX sim.events_claim_idx")
        conn.commit()
        assert [r.version for r in sim_schema.migrate(conn).applied] == [N - 1]
    assert_same_schema_as_a_fresh_install(blank_dsn, dsn)


# --- cancellation --------------------------------------------------------------------------


def _slow_list() -> list[SqlMigration]:
    return [*load_migrations(None), SqlMigration(N, "slow", ["SELECT pg_sleep(30)"])]


@pytest.mark.slow
@pytest.mark.parametrize("autocommit", [False, True])
async def test_cancelled_migrate_async_hands_the_connection_back(
    blank_dsn: str, autocommit: bool
) -> None:
    async with await psycopg.AsyncConnection.connect(
        blank_dsn, autocommit=autocommit, options="-c search_path=app,public"
    ) as conn:
        task = asyncio.create_task(MigrationRunner(_slow_list()).migrate_async(conn))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if len(recorded(blank_dsn)) == N:
                break
        await asyncio.sleep(0.3)  # now inside the slow migration
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert conn.autocommit is autocommit
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        cur = await conn.execute(
            "SELECT current_setting('search_path'), (SELECT count(*) FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid = pg_backend_pid())"
        )
        assert await cur.fetchone() == ("app,public", 0)
        if not autocommit:
            await conn.rollback()
    assert recorded(blank_dsn) == list(range(N))  # the slow one rolled back, the rest kept
    with psycopg.connect(blank_dsn) as other:  # the lock is free: no wait at all
        MigrationRunner(load_migrations(None), lock_wait=0).migrate(other)


def test_xact_lock_key_is_the_runners(blank_dsn: str) -> None:
    """`up()` under the host runner and our runner serialize on one key per schema."""
    assert MigrationRunner(load_migrations(None)).lock_key == lock_key("sim")
    assert lock_key("sim") != lock_key("other")


# --- the data-access layer on the host's pool ---------------------------------------------


async def test_full_workflow_on_the_hosts_pool_leaves_its_tables_alone(
    blank_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(blank_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE public.experiments (id integer PRIMARY KEY, title text)")
        c.execute("CREATE TABLE public.agents (id integer PRIMARY KEY, kind text)")
        c.execute("INSERT INTO public.experiments VALUES (1, 'host experiment')")
        c.execute("INSERT INTO public.agents VALUES (1, 'host agent'), (2, 'another')")

    def host_rows() -> list[Any]:
        with psycopg.connect(blank_dsn, autocommit=True) as c:
            return [
                c.execute("SELECT * FROM public.experiments ORDER BY 1").fetchall(),
                c.execute("SELECT * FROM public.agents ORDER BY 1").fetchall(),
            ]

    before = host_rows()
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        blank_dsn, min_size=1, max_size=3, open=False
    )  # the host's pool: non-autocommit connections, search_path "$user", public
    async with pool:
        async with pool.connection() as conn:
            await sim_schema.migrate_async(conn)
        store = Store.from_pool(pool)
        async with ExperimentManager(store, "e1", name="on the host's pool") as experiment:
            run = await experiment.create_simulation("s1", parameters={"seed": 1})
            await run.logger.log_agents(
                [{"agent_id": f"a{i}", "agent_type": "prey"} for i in range(3)]
            )
            for step in range(20):
                for i in range(3):
                    await run.logger.log_agent_state(step, f"a{i}", health=step + i / 10)
                await run.logger.log_step(step, total_agents=3)
            await run.complete(step_count=20)
        async with store.connection() as conn:
            history = [s.health async for s in queries.agent_history(conn, "s1", "a2")]
            assert history == [step + 0.2 for step in range(20)]
            summary = await queries.simulation_summaries(conn, simulation_ids=["s1"])
            assert summary[0].agents == 3 and summary[0].final_step == 19
            manifest = await export_async(conn, tmp_path / "out", simulations=["s1"])
            assert manifest.tables["agent_states"].rows == 60
            assert manifest.tables["agents"].rows == 3
            deleted = await repo.delete_experiment(conn, "e1", cascade=True)
            assert deleted["agent_states"] == 60 and deleted["simulations"] == 1
        await store.close()
        assert not pool.closed  # closing our store leaves the host's pool open
        async with pool.connection() as conn:
            assert conn.autocommit is False
            cur = await conn.execute("SELECT current_setting('search_path'), count(*) FROM agents")
            assert await cur.fetchone() == ('"$user", public', 2)  # the host's agents
    assert host_rows() == before
    lines = (tmp_path / "out" / "agent_states.csv").read_text().splitlines()
    assert len(lines) == 61 and lines[0].startswith("simulation_id,step,agent_id")


def _work_with_failing_clean_up() -> ops.Work:
    """Work that reads a value, then a best-effort clean-up step that fails on the server."""
    (row,) = yield ops.Query("SELECT 41 + 1")
    yield ops.Query("SELECT 1 / 0", best_effort=True)
    return row[0]


def test_a_failed_clean_up_closes_the_hosts_connection_and_names_its_cause(
    blank_dsn: str,
) -> None:
    with psycopg.connect(blank_dsn) as conn:
        with pytest.raises(sim_schema.ConnectionFailed, match="the work was done") as failed:
            ops.run_borrowed(conn, _work_with_failing_clean_up(), what="the test")
        assert isinstance(failed.value.__cause__, psycopg.errors.DivisionByZero)
        assert conn.closed  # not handed back half-restored


async def test_a_failed_clean_up_closes_the_async_connection_and_names_its_cause(
    blank_dsn: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(blank_dsn) as conn:
        with pytest.raises(sim_schema.ConnectionFailed, match="the work was done") as failed:
            await ops.run_borrowed_async(conn, _work_with_failing_clean_up(), what="the test")
        assert isinstance(failed.value.__cause__, psycopg.errors.DivisionByZero)
        assert conn.closed
