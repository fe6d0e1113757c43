"""`sim-schema migrate | status | plan` as a deploy job runs them: real processes, real server.

Every failure is one line on stderr, with no traceback and no password, and the exit code
documented in docs/migrations.md.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sim_schema.migrations.migration import load_migrations

pytestmark = pytest.mark.slow  # each command runs in its own process (about 0.7 s a start)

N = len(load_migrations(None))
SECRET = "hunter2-" + secrets.token_hex(4)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process whose environment names no database unless `env` does."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    return subprocess.run(
        [sys.executable, "-m", "sim_schema", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    err = done.stderr.strip()
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert len(err.splitlines()) == 1, done.stderr
    assert err.startswith("sim-schema: ")
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stdout + done.stderr
    for word in words:
        assert word in err, (word, err)
    return err


def with_password(dsn: str, **changes: Any) -> str:
    return make_conninfo(dsn, password=SECRET, **changes)


def tracking(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('sim.schema_migrations')").fetchone() == (None,):
            return []
        return conn.execute(
            "SELECT version, checksum FROM sim.schema_migrations ORDER BY 1"
        ).fetchall()


# --- connection failures ----------------------------------------------------------------


def test_malformed_dsn_is_a_usage_error() -> None:
    done = run("--dsn", f"not a dsn password={SECRET}", "status")
    assert_one_line_error(done, 2, "invalid DSN")


def test_unreachable_server_is_a_connection_error() -> None:
    done = run("--dsn", f"host=127.0.0.1 port=1 dbname=x user=u password={SECRET}", "migrate")
    assert_one_line_error(done, 3, "cannot connect", "port=1")


def test_unknown_host_is_a_connection_error() -> None:
    done = run("--dsn", f"postgresql://u:{SECRET}@no-such-host.invalid/db", "plan")
    assert_one_line_error(done, 3, "no-such-host.invalid")


def test_wrong_password_is_reported_without_the_password(server_dsn: str, blank_dsn: str) -> None:
    role = "sim_cli_pw_" + secrets.token_hex(4)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal("right-" + SECRET)
            )
        )
        try:
            dsn = with_password(blank_dsn, user=role)
            try:
                psycopg.connect(dsn).close()
                password_checked = False  # the server trusts this connection
            except psycopg.OperationalError:
                password_checked = True
            done = run("--dsn", dsn, "--json", "status")
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    if password_checked:
        assert_one_line_error(done, 3, "cannot connect", "password authentication failed")
    else:  # trust auth: the password is never checked, but must still never be printed
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr


def test_password_in_dsn_never_appears_in_a_failure(blank_dsn: str) -> None:
    assert run("--dsn", blank_dsn, "migrate", "--to", str(N - 2)).returncode == 0
    with psycopg.connect(blank_dsn, autocommit=True) as conn:
        conn.execute("CREATE INDEX events_claim_idx ON sim.events (step)")  # made by the last
    done = run("--dsn", with_password(blank_dsn), "migrate")  # the last one collides
    assert_one_line_error(done, 6, f"migration {N - 1}", "already exists")


def test_objects_without_tracking_rows_are_untracked_not_pending(blank_dsn: str) -> None:
    with psycopg.connect(blank_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA sim")
        conn.execute("CREATE TABLE sim.experiments (x integer)")
    for command in ("migrate", "plan"):
        line = assert_one_line_error(run("--dsn", blank_dsn, command), 8, "records no migration")
        assert "sim-schema baseline" in line and "experiments" in line
    done = run("--dsn", blank_dsn, "--json", "status")
    assert done.returncode == 8, done.stderr
    assert {m["state"] for m in json.loads(done.stdout)["migrations"]} == {"untracked"}
    assert tracking(blank_dsn) == []  # nothing was recorded or created


# --- databases the code does not expect -------------------------------------------------


def test_database_without_the_schema_shows_everything_pending(blank_dsn: str) -> None:
    done = run("--dsn", blank_dsn, "--json", "status")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["schema"] == "sim"
    assert [m["state"] for m in report["migrations"]] == ["pending"] * N
    assert tracking(blank_dsn) == []  # status created nothing
    text = run("--dsn", blank_dsn, "status")
    assert text.returncode == 0 and text.stdout.count("pending") == N


def test_schema_newer_than_the_code_is_refused(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO sim.schema_migrations"
            " (version, description, checksum, transactional, duration_ms, applied_by)"
            " VALUES (%s, 'from the future', 'f00d', true, 1, 'newer deploy')",
            (N,),
        )
    assert_one_line_error(run("--dsn", dsn, "migrate"), 5, "ahead of the code", f"version {N}")
    assert_one_line_error(run("--dsn", dsn, "plan"), 5, "ahead of the code")
    status = run("--dsn", dsn, "--json", "status")
    assert status.returncode == 5
    assert json.loads(status.stdout)["migrations"][-1] == {
        **json.loads(status.stdout)["migrations"][-1],
        "version": N,
        "state": "unknown",
    }


def test_drift_is_refused_and_shown(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE sim.schema_migrations SET checksum = 'edited' WHERE version = 1")
    assert_one_line_error(run("--dsn", dsn, "migrate"), 5, "migration 1", "drifted")
    status = run("--dsn", dsn, "--json", "status")
    assert status.returncode == 5
    states = [m["state"] for m in json.loads(status.stdout)["migrations"]]
    assert states[1] == "drifted" and states.count("applied") == N - 1


def test_invalid_index_refusal_and_recovery(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE sim.scratch (a integer)")
        conn.execute("INSERT INTO sim.scratch VALUES (1), (1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY scratch_a_key ON sim.scratch (a)")
    assert_one_line_error(run("--dsn", dsn, "migrate"), 5, "INVALID", "scratch_a_key")
    done = run("--dsn", dsn, "--json", "migrate", "--drop-invalid-indexes")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dropped_invalid_indexes"] == ["scratch_a_key"]
    assert run("--dsn", dsn, "migrate").returncode == 0


# --- normal operation -------------------------------------------------------------------


def test_migrate_from_pg_environment_variables(blank_dsn: str) -> None:
    params = conninfo_to_dict(blank_dsn)
    env = {
        "PGHOST": str(params.get("host", "")),
        "PGPORT": str(params.get("port", "5432")),
        "PGUSER": str(params.get("user", "")),
        "PGDATABASE": str(params["dbname"]),
    }
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    done = run("--json", "migrate", "--to", "1", env=env)
    assert done.returncode == 0, done.stderr
    assert [a["version"] for a in json.loads(done.stdout)["applied"]] == [0, 1]
    # SIM_SCHEMA_DSN wins over PG*: pointing it elsewhere fails on the other database.
    bad = run("status", env={**env, "SIM_SCHEMA_DSN": make_conninfo(blank_dsn, port="1")})
    assert_one_line_error(bad, 3, "port=1")
    done = run("migrate", env={**env, "SIM_SCHEMA_DSN": blank_dsn})
    assert done.returncode == 0, done.stderr
    assert [v for v, _ in tracking(blank_dsn)] == list(range(N))
    assert "up to date" in run("migrate", env={"SIM_SCHEMA_DSN": blank_dsn}).stdout


def test_plan_prints_pending_sql_and_changes_nothing(blank_dsn: str) -> None:
    done = run("--dsn", blank_dsn, "--json", "plan", "--to", "1")
    assert done.returncode == 0, done.stderr
    pending = json.loads(done.stdout)["pending"]
    assert [p["version"] for p in pending] == [0, 1]
    assert any("CREATE TABLE experiments" in s for s in pending[0]["statements"])
    text = run("--dsn", blank_dsn, "plan")
    assert text.returncode == 0 and "-- migration 0:" in text.stdout
    assert tracking(blank_dsn) == []
    with psycopg.connect(blank_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('sim')").fetchone() == (None,)


def test_other_schema_and_invalid_schema(blank_dsn: str) -> None:
    done = run("--dsn", blank_dsn, "--schema", "tenant_b", "migrate")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(blank_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('tenant_b.simulations')").fetchone() != (None,)
        assert conn.execute("SELECT to_regnamespace('sim')").fetchone() == (None,)
    assert_one_line_error(run("--dsn", blank_dsn, "--schema", "Bad-Name", "status"), 2, "schema")


def test_bad_options_are_usage_errors(blank_dsn: str) -> None:
    assert run("--dsn", blank_dsn, "migrate", "--to", "x").returncode == 2
    assert_one_line_error(run("--dsn", blank_dsn, "migrate", "--to", str(N + 5)), 2, "--to")
    done = run("--dsn", blank_dsn, "migrate", "--lock-timeout", "soon")
    assert_one_line_error(done, 2, "lock_timeout")
    assert tracking(blank_dsn) == []
