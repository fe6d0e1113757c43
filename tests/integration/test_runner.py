"""The migration runner against a real server: apply, refuse, lock, recover.

Ad-hoc migration lists (`SqlMigration(...)` or files in tmp_path) keep each scenario small;
the shipped list is used where the scenario is about the real schema.
"""

from __future__ import annotations

import json
import os
import uuid
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
import pytest

from sim_schema.errors import (
    ConfigurationError,
    InvalidIndexError,
    LockTimeout,
    MigrationDefinitionError,
    MigrationFailed,
    PartialMigrationFailed,
    VerificationError,
)
from sim_schema.migrations.migration import SqlMigration, load_migrations, load_migrations_from
from sim_schema.migrations.runner import MigrationRunner

SHIPPED = load_migrations(None)


def mig(version: int, *statements: str, **options: Any) -> SqlMigration:
    return SqlMigration(version, f"step {version}", list(statements), **options)


BASE = [
    mig(0, "CREATE TABLE t (a integer)", "INSERT INTO t VALUES (1), (2)"),
    mig(1, "CREATE TABLE u (b text)"),
    mig(2, "ALTER TABLE u ADD COLUMN c integer"),
]


def applied_versions(conn: psycopg.Connection[Any], schema: str = "sim") -> list[int]:
    exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_migrations",)).fetchone()
    if exists is None or exists[0] is None:
        return []
    rows = conn.execute(f"SELECT version FROM {schema}.schema_migrations ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def relations(conn: psycopg.Connection[Any], schema: str = "sim") -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s",
        (schema,),
    ).fetchall()
    return {r[0] for r in rows}


def catalog_snapshot(conn: psycopg.Connection[Any]) -> Any:
    """Every user namespace, relation and column, and the tracking rows if any."""
    rels = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind, c.relfilenode,"
        " (SELECT array_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod)"
        "  ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2"
    ).fetchall()
    spaces = conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall()
    tracking = []
    if conn.execute("SELECT to_regclass('sim.schema_migrations')").fetchone() != (None,):
        tracking = conn.execute("SELECT * FROM sim.schema_migrations ORDER BY 1").fetchall()
    return rels, spaces, tracking


@pytest.fixture
def bconn(blank_dsn: str) -> Any:
    with psycopg.connect(blank_dsn, autocommit=True) as c:
        yield c


# --- apply ------------------------------------------------------------------------------


def test_fresh_apply_creates_every_table_and_records_each_version(bconn: Any) -> None:
    result = MigrationRunner(SHIPPED).migrate(bconn)
    assert [r.version for r in result.applied] == list(range(len(SHIPPED)))
    assert applied_versions(bconn) == list(range(len(SHIPPED)))
    assert {"experiments", "simulations", "agents", "agent_states", "events"} <= relations(bconn)
    rows = bconn.execute(
        "SELECT checksum, transactional, applied_by FROM sim.schema_migrations ORDER BY version"
    ).fetchall()
    assert [r[0] for r in rows] == [m.checksum for m in SHIPPED]
    user = bconn.execute("SELECT current_user").fetchone()[0]
    assert {r[2] for r in rows} == {user}  # no "user ()" when application_name is empty


def test_applied_by_names_the_application(blank_dsn: str) -> None:
    with psycopg.connect(blank_dsn, application_name="deploy-7") as c:
        MigrationRunner(BASE[:1]).migrate(c)
        assert c.autocommit is False  # the caller's mode is restored
        user = c.execute("SELECT current_user").fetchone()[0]
        by = c.execute("SELECT applied_by FROM sim.schema_migrations").fetchone()[0]
    assert by == f"{user} (deploy-7)"


def test_rerun_is_a_noop(bconn: Any) -> None:
    runner = MigrationRunner(SHIPPED)
    runner.migrate(bconn)
    before = catalog_snapshot(bconn)
    assert runner.migrate(bconn).applied == []
    assert catalog_snapshot(bconn) == before


def test_to_stops_at_a_version_and_never_goes_back(bconn: Any) -> None:
    runner = MigrationRunner(BASE)
    assert [r.version for r in runner.migrate(bconn, to=1).applied] == [0, 1]
    assert applied_versions(bconn) == [0, 1]
    with pytest.raises(ConfigurationError, match="already at version 1"):
        runner.migrate(bconn, to=0)
    with pytest.raises(ConfigurationError, match=r"knows versions 0\.\.2"):
        runner.migrate(bconn, to=7)


def test_runner_refuses_a_connection_inside_a_transaction(blank_dsn: str) -> None:
    with psycopg.connect(blank_dsn) as c:
        c.execute("SELECT 1")
        with pytest.raises(ConfigurationError, match="idle connection"):
            MigrationRunner(BASE).migrate(c)


@pytest.mark.slow
def test_eight_concurrent_migrator_processes_apply_each_version_once(
    blank_dsn: str, bconn: Any
) -> None:
    argv = [sys.executable, "-m", "sim_schema", "--dsn", blank_dsn, "--json", "migrate"]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    outcomes = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert [code for code, _, _ in outcomes] == [0] * 8, [err for _, _, err in outcomes]
    assert all(err == "" for _, _, err in outcomes)
    applied = [a["version"] for _, out, _ in outcomes for a in json.loads(out)["applied"]]
    assert sorted(applied) == list(range(len(SHIPPED)))  # each exactly once, all of them
    assert applied_versions(bconn) == list(range(len(SHIPPED)))


# --- failure ----------------------------------------------------------------------------


def test_failing_migration_rolls_back_only_itself(blank_dsn: str, bconn: Any) -> None:
    bad = mig(3, "CREATE TABLE v (x integer)", "SELECT 1 / 0")
    with pytest.raises(MigrationFailed, match=r"migration 3 \(step 3\)") as info:
        MigrationRunner([*BASE, bad]).migrate(bconn)
    assert info.value.version == 3
    assert isinstance(info.value.cause, psycopg.errors.DivisionByZero)
    assert applied_versions(bconn) == [0, 1, 2]
    assert relations(bconn) >= {"t", "u"}
    assert "v" not in relations(bconn)
    with psycopg.connect(blank_dsn, autocommit=True) as other:  # the lock was released
        key = MigrationRunner(BASE).lock_key
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,)


# --- verification refusals --------------------------------------------------------------


def test_drift_is_refused_naming_the_version(bconn: Any) -> None:
    MigrationRunner(BASE).migrate(bconn)
    edited = [BASE[0], mig(1, "CREATE TABLE u (b varchar)"), BASE[2]]
    with pytest.raises(VerificationError, match=r"migration 1 \(step 1\) has drifted"):
        MigrationRunner(edited).migrate(bconn)


def test_whitespace_and_line_endings_do_not_change_the_checksum(bconn: Any) -> None:
    MigrationRunner(BASE).migrate(bconn)
    reformatted = [BASE[0], mig(1, "CREATE TABLE u (b text)   \r\n"), BASE[2]]
    assert reformatted[1].checksum == BASE[1].checksum
    assert MigrationRunner(reformatted).migrate(bconn).applied == []


def test_gap_in_the_database_is_refused(bconn: Any) -> None:
    MigrationRunner(BASE).migrate(bconn)
    bconn.execute("DELETE FROM sim.schema_migrations WHERE version = 1")
    with pytest.raises(VerificationError, match="version 1 is missing"):
        MigrationRunner(BASE).migrate(bconn)


def test_duplicate_versions_in_code_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationDefinitionError, match="duplicate migration version 1"):
        MigrationRunner([BASE[0], BASE[1], mig(1, "SELECT 1")])
    (tmp_path / "0000_first.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "0001_second.sql").write_text("CREATE TABLE b (x int);")
    (tmp_path / "0001_other.sql").write_text("CREATE TABLE c (x int);")
    with pytest.raises(
        MigrationDefinitionError, match=r"duplicate migration version 1: 0001_other\.sql and"
    ):
        load_migrations_from(tmp_path)


def test_gap_in_code_is_refused() -> None:
    with pytest.raises(MigrationDefinitionError, match="version 1 is missing"):
        MigrationRunner([BASE[0], BASE[2]])


def test_database_ahead_of_the_code_is_refused(bconn: Any) -> None:
    MigrationRunner(BASE).migrate(bconn)
    before = catalog_snapshot(bconn)
    with pytest.raises(VerificationError, match=r"ahead of the code: version 2 \(step 2\)"):
        MigrationRunner(BASE[:2]).migrate(bconn)
    assert catalog_snapshot(bconn) == before


# --- non-transactional migrations and INVALID indexes -----------------------------------


def index_validity(conn: Any, name: str) -> bool | None:
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'sim' AND c.relname = %s",
        (name,),
    ).fetchone()
    return None if row is None else bool(row[0])


def test_concurrent_index_build_runs_outside_a_transaction(bconn: Any) -> None:
    concurrent = mig(
        3, "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_a_idx ON t (a)", transactional=False
    )
    result = MigrationRunner([*BASE, concurrent]).migrate(bconn)
    assert [r.version for r in result.applied] == [0, 1, 2, 3]
    assert result.applied[-1].transactional is False
    assert index_validity(bconn, "t_a_idx") is True
    assert bconn.execute("SHOW lock_timeout").fetchone()[0] == "0"  # reset afterwards


def test_non_transactional_statements_must_be_rerunnable(tmp_path: Path) -> None:
    with pytest.raises(MigrationDefinitionError, match=r"statement 1 .* must use IF NOT EXISTS"):
        mig(3, "CREATE INDEX CONCURRENTLY t_a_idx ON t (a)", transactional=False)
    (tmp_path / "0000_index.sql").write_text(
        "-- transactional: false\nDROP INDEX CONCURRENTLY t_a_idx;\n"
    )
    with pytest.raises(MigrationDefinitionError, match="must use IF EXISTS"):
        load_migrations_from(tmp_path)


def test_invalid_index_is_reported_then_recovered(bconn: Any) -> None:
    unique = mig(
        3,
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t_a_key ON t (a)",
        transactional=False,
    )
    bconn.execute("SET search_path = sim")
    runner = MigrationRunner([*BASE, unique])
    runner.migrate(bconn, to=2)
    bconn.execute("INSERT INTO t VALUES (1)")  # a duplicate: the unique build fails
    with pytest.raises(
        PartialMigrationFailed, match=r"migration 3 .* INVALID index.* t_a_key"
    ) as e:
        runner.migrate(bconn)
    assert e.value.invalid_indexes == ["t_a_key"]
    assert index_validity(bconn, "t_a_key") is False
    assert applied_versions(bconn) == [0, 1, 2]

    with pytest.raises(InvalidIndexError, match="t_a_key"):
        runner.migrate(bconn)  # IF NOT EXISTS would silently keep the broken index
    assert applied_versions(bconn) == [0, 1, 2]

    bconn.execute("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t WHERE a = 1)")
    result = runner.migrate(bconn, drop_invalid_indexes=True)
    assert result.dropped_invalid_indexes == ["t_a_key"]
    assert [r.version for r in result.applied] == [3]
    assert index_validity(bconn, "t_a_key") is True


# --- timeouts and the migration lock ----------------------------------------------------


def test_lock_timeout_fires_behind_a_conflicting_lock(blank_dsn: str, bconn: Any) -> None:
    MigrationRunner(BASE).migrate(bconn)
    alter = mig(3, "ALTER TABLE t ADD COLUMN b integer")
    with psycopg.connect(blank_dsn) as holder:
        holder.execute("SELECT * FROM sim.t")  # ACCESS SHARE held until rollback
        with pytest.raises(MigrationFailed, match=r"migration 3 \(step 3\).*lock timeout") as e:
            MigrationRunner([*BASE, alter], lock_timeout="200ms").migrate(bconn)
        holder.rollback()
    assert isinstance(e.value.cause, psycopg.errors.LockNotAvailable)
    assert applied_versions(bconn) == [0, 1, 2]
    columns = bconn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'sim.t'::regclass AND attnum > 0"
    ).fetchall()
    assert columns == [("a",)]


def test_per_migration_timeout_header_overrides_the_default(blank_dsn: str, bconn: Any) -> None:
    slow = mig(3, "SELECT pg_sleep(1)", statement_timeout="100ms")
    with pytest.raises(MigrationFailed, match=r"migration 3 .*statement timeout"):
        MigrationRunner([*BASE, slow], statement_timeout="1min").migrate(bconn)
    assert applied_versions(bconn) == [0, 1, 2]


def test_invalid_timeouts_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="invalid lock_timeout"):
        MigrationRunner(BASE, lock_timeout="5 parsecs")
    with pytest.raises(ConfigurationError, match="invalid statement_timeout"):
        mig(0, "SELECT 1", statement_timeout="; DROP TABLE t")


def test_a_foreign_role_holding_the_lock_is_named_with_what_to_do(
    blank_dsn: str, bconn: Any
) -> None:
    """Any role may take an advisory lock (PostgreSQL has no privilege for it): an analyst
    holding the migration lock is named as not a migrator, with the statement that ends it."""
    role = f"sim_lock_{uuid.uuid4().hex[:10]}"
    bconn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    runner = MigrationRunner(BASE, lock_wait=0.3)
    try:
        with psycopg.connect(blank_dsn, user=role, autocommit=True) as analyst:
            analyst.execute("SELECT pg_advisory_lock(%s)", (runner.lock_key,))
            pid = analyst.info.backend_pid
            with pytest.raises(LockTimeout) as info:
                runner.migrate(bconn)
        message = str(info.value)
        assert f"a session of another role (pid {pid}, role '{role}')" in message
        assert f"SELECT pg_terminate_backend({pid})" in message
        assert "nothing was applied" in message
        assert applied_versions(bconn) == []
        assert [r.version for r in runner.migrate(bconn).applied] == [0, 1, 2]  # lock gone
    finally:
        bconn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_lock_wait_times_out_while_another_migrator_holds_the_lock(
    blank_dsn: str, bconn: Any
) -> None:
    runner = MigrationRunner(BASE, lock_wait=0.5)
    with psycopg.connect(blank_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (runner.lock_key,))
        with pytest.raises(
            LockTimeout, match=r"more than 0\.5s by another migrator \(pid \d+, role '\w+'\)"
        ):
            runner.migrate(bconn)
        env = {**os.environ, "SIM_SCHEMA_DSN": blank_dsn}
        done = subprocess.run(
            [sys.executable, "-m", "sim_schema", "migrate", "--lock-wait", "0.5"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert done.returncode == 4, done.stderr
    assert done.stderr.count("\n") == 1 and "lock" in done.stderr
    assert applied_versions(bconn) == []
    assert "sim" not in {r[0] for r in bconn.execute("SELECT nspname FROM pg_namespace")}


def test_a_waiting_migrator_proceeds_when_the_lock_is_released(blank_dsn: str, bconn: Any) -> None:
    runner = MigrationRunner(BASE, lock_wait=30)
    with psycopg.connect(blank_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (runner.lock_key,))
        pid = bconn.info.backend_pid

        def release_once_polled() -> None:  # the runner has tried and failed at least once
            for _ in range(600):
                polled = holder.execute(
                    "SELECT FROM pg_stat_activity WHERE pid = %s"
                    " AND query LIKE '%%pg_try_advisory_lock%%'",
                    (pid,),
                ).fetchall()
                if polled:
                    break
                time.sleep(0.02)
            holder.execute("SELECT pg_advisory_unlock_all()")

        threading.Thread(target=release_once_polled).start()
        result = runner.migrate(bconn)
    assert result.lock_wait_s > 0
    assert [r.version for r in result.applied] == [0, 1, 2]


# --- plan and status --------------------------------------------------------------------


def test_plan_changes_nothing(bconn: Any) -> None:
    runner = MigrationRunner(SHIPPED)
    before = catalog_snapshot(bconn)
    assert [m.version() for m in runner.plan(bconn)] == list(range(len(SHIPPED)))
    assert catalog_snapshot(bconn) == before
    runner.migrate(bconn, to=1)
    before = catalog_snapshot(bconn)
    pending = runner.plan(bconn)
    assert [m.version() for m in pending] == list(range(2, len(SHIPPED)))
    assert pending[0].statements == SHIPPED[2].statements
    assert catalog_snapshot(bconn) == before


def test_status_reports_applied_pending_drifted_and_unknown(bconn: Any) -> None:
    MigrationRunner(BASE).migrate(bconn)
    edited = [BASE[0], mig(1, "CREATE TABLE u (b varchar)")]
    states = {s.version: s for s in MigrationRunner(edited).status(bconn)}
    assert {v: s.state for v, s in states.items()} == {0: "applied", 1: "drifted", 2: "unknown"}
    assert states[1].checksum == edited[1].checksum
    assert states[1].applied_checksum == BASE[1].checksum
    assert states[0].applied_at is not None and states[0].duration_ms is not None
    longer = [*BASE, mig(3, "SELECT 1")]
    states = {s.version: s for s in MigrationRunner(longer).status(bconn)}
    assert states[3].state == "pending" and states[3].applied_at is None
    assert states[2].state == "applied"
    assert states[2].as_dict()["applied_at"] == states[2].applied_at.isoformat()  # type: ignore[union-attr]


def test_status_of_an_empty_database_is_all_pending(bconn: Any) -> None:
    states = MigrationRunner(SHIPPED).status(bconn)
    assert [s.state for s in states] == ["pending"] * len(SHIPPED)


def test_other_schema_is_independent(bconn: Any) -> None:
    MigrationRunner(BASE, schema="tenant_b").migrate(bconn)
    assert applied_versions(bconn, "tenant_b") == [0, 1, 2]
    assert applied_versions(bconn, "sim") == []
    with pytest.raises(ConfigurationError, match="invalid schema name"):
        MigrationRunner(BASE, schema='x"; DROP')


# --- async entry points -----------------------------------------------------------------


async def test_migrate_async_applies_then_is_a_noop(blank_dsn: str) -> None:
    runner = MigrationRunner(SHIPPED)
    async with await psycopg.AsyncConnection.connect(blank_dsn) as aconn:
        result = await runner.migrate_async(aconn)
        assert [r.version for r in result.applied] == list(range(len(SHIPPED)))
        assert (await runner.migrate_async(aconn)).applied == []
        assert aconn.autocommit is False
        states = await runner.status_async(aconn)
        assert [s.state for s in states] == ["applied"] * len(SHIPPED)
        assert await runner.plan_async(aconn) == []


async def test_migrate_async_refuses_drift_and_rolls_back_a_failure(blank_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(blank_dsn, autocommit=True) as aconn:
        await MigrationRunner(BASE).migrate_async(aconn)
        edited = [BASE[0], BASE[1], mig(2, "ALTER TABLE u ADD COLUMN d integer")]
        with pytest.raises(VerificationError, match=r"migration 2 .* has drifted"):
            await MigrationRunner(edited).migrate_async(aconn)
        bad = mig(3, "CREATE TABLE w (x integer)", "SELECT 1 / 0")
        with pytest.raises(MigrationFailed, match="migration 3"):
            await MigrationRunner([*BASE, bad]).migrate_async(aconn)
        cur = await aconn.execute(
            "SELECT to_regclass('sim.w'), max(version) FROM sim.schema_migrations"
        )
        assert await cur.fetchone() == (None, 2)


def test_a_lost_connection_names_the_migration_and_masks_nothing(
    blank_dsn: str, bconn: Any
) -> None:
    slow = mig(3, "SELECT pg_sleep(30)")
    pid = bconn.info.backend_pid

    def kill_when_sleeping() -> None:
        with psycopg.connect(blank_dsn, autocommit=True) as admin:
            for _ in range(300):
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE pid = %s AND query LIKE 'SELECT pg_sleep%%'",
                    (pid,),
                ).fetchall()
                if killed:
                    return
                time.sleep(0.05)

    threading.Thread(target=kill_when_sleeping).start()
    with pytest.raises(MigrationFailed, match=r"migration 3 \(step 3\).*terminating connection"):
        MigrationRunner([*BASE, slow]).migrate(bconn)
    with psycopg.connect(blank_dsn, autocommit=True) as other:
        assert applied_versions(other) == [0, 1, 2]
        key = MigrationRunner(BASE).lock_key  # released with the session
        assert other.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,)
