"""The CLI's failure modes for every command but migrate/status/plan (tests/cli/test_migrate_cli.py):
one clear line on stderr, the documented exit code (sim_schema/cli/common.py), no traceback, and
never the password of the DSN.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sim_schema.cli import EXIT_CONNECTION, EXIT_NOT_FOUND, EXIT_USAGE

pytestmark = pytest.mark.slow  # each command runs in its own process (about 0.7 s a start)

PASSWORD = "Pa55-w0rd-s3cret"


def commands(out: Path) -> dict[str, list[str]]:
    """One invocation of every data command, each naming a simulation that may not exist."""
    return {
        "info": ["info"],
        "list": ["list"],
        "summary": ["summary"],
        "compare": ["compare", "--metric", "total_agents"],
        "final": ["final"],
        "agents-over-time": ["agents-over-time", "--simulation", "s1"],
        "query": ["query", "agent_lifespans", "--param", "simulation_id=s1"],
        "export": ["export", "--simulation", "s1", "--out", str(out / "export")],
        "export-decisions": [
            "export-decisions",
            "--simulation",
            "s1",
            "--out",
            str(out / "d.jsonl"),
        ],
        "delete-simulation": ["delete-simulation", "--simulation", "s1", "--yes"],
        "delete-experiment": ["delete-experiment", "--experiment", "e1", "--yes"],
        "archive": ["archive", "--simulation", "s1", "--out", str(out / "archive"), "--yes"],
        "grant-read-only": ["grant-read-only", "analyst_role_missing"],
    }


NAMES = sorted(commands(Path(".")))


def run(args: list[str], *, dsn: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    environ.update(env)
    if dsn is not None:
        environ["SIM_SCHEMA_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "sim_schema", *args],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip


def assert_one_line_failure(proc: subprocess.CompletedProcess[str], codes: set[int]) -> str:
    err = proc.stderr
    assert proc.returncode in codes, (proc.returncode, err)
    assert "Traceback" not in err, err
    assert PASSWORD not in err and PASSWORD not in proc.stdout
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("sim-schema"), lines[0]
    return lines[0]


def with_password(dsn: str, **changes: Any) -> str:
    params = {**conninfo_to_dict(dsn), "password": PASSWORD, **changes}
    return make_conninfo(**params)


# --- bad arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["compare"],  # --metric is required
        ["compare", "--metric", "total_agents", "--start-step", "abc"],
        ["export", "--simulation", "s1", "--out", "o", "--format", "xml"],
        ["export", "--out", "o"],  # neither --simulation nor --experiment
        ["agents-over-time"],
        ["delete-simulation"],
        ["query", "x", "--param", "no-equals-sign"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_arguments_are_usage_errors(args: list[str], dsn: str) -> None:
    proc = run(args, dsn=with_password(dsn))
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr
    assert "error" in proc.stderr.splitlines()[-1] or proc.stderr.startswith("sim-schema:")


def test_unknown_names_are_usage_errors(dsn: str, tmp_path: Path) -> None:
    d = with_password(dsn)
    for args in (
        ["query", "no_such_query"],
        ["export", "--simulation", "s1", "--out", str(tmp_path), "--tables", "nope"],
        ["--schema", "bad-schema!", "list"],
        ["grant-read-only", "bad role;"],
    ):
        line = assert_one_line_failure(run(args, dsn=d), {EXIT_USAGE})
        assert any(w in line for w in ("query", "table", "schema", "role")), line


# --- no server, wrong DSN --------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_missing_dsn_pghost_nowhere_is_a_connection_error(name: str, tmp_path: Path) -> None:
    proc = run(
        commands(tmp_path)[name],
        PGHOST=str(tmp_path / "no-socket-here"), PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="3",
    )  # fmt: skip
    line = assert_one_line_failure(proc, {EXIT_CONNECTION})
    assert "cannot connect" in line


@pytest.mark.parametrize("name", NAMES)
def test_unreachable_server_is_a_connection_error_without_password(
    name: str, tmp_path: Path
) -> None:
    dsn = f"postgresql://someone:{PASSWORD}@127.0.0.1:1/db?connect_timeout=3"
    line = assert_one_line_failure(run(commands(tmp_path)[name], dsn=dsn), {EXIT_CONNECTION})
    assert "127.0.0.1" in line


@pytest.mark.parametrize("name", ["list", "export", "delete-simulation", "grant-read-only"])
def test_wrong_database_is_a_connection_error_without_password(
    name: str, dsn: str, tmp_path: Path
) -> None:
    wrong = with_password(dsn, dbname="sim_schema_no_such_database")
    line = assert_one_line_failure(run(commands(tmp_path)[name], dsn=wrong), {EXIT_CONNECTION})
    assert "sim_schema_no_such_database" in line


@pytest.mark.parametrize("bad", ["host=x port", "postgresql://[::1", "not a dsn = ="])
def test_malformed_dsn_is_a_usage_error(bad: str, tmp_path: Path) -> None:
    for name in ("list", "export", "delete-simulation"):
        assert_one_line_failure(run(commands(tmp_path)[name], dsn=bad), {EXIT_USAGE})


# --- database without the schema, schema ahead of the code -----------------------------


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"grant-read-only"}))
def test_database_without_the_schema_says_so(name: str, blank_dsn: str, tmp_path: Path) -> None:
    proc = run(commands(tmp_path)[name], dsn=with_password(blank_dsn))
    line = assert_one_line_failure(proc, {1, 5, EXIT_NOT_FOUND})
    assert "migrat" in line.lower() or "schema" in line.lower(), line


@pytest.mark.parametrize("name", ["list", "summary", "export", "delete-simulation"])
def test_schema_ahead_of_the_code_is_refused_or_read_cleanly(
    name: str, dsn: str, tmp_path: Path
) -> None:
    """A database migrated by a newer release: the data commands either work (the v1
    tables are still there) or refuse with one line; they never crash."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO sim.schema_migrations (version, description, checksum, transactional,"
            " duration_ms, applied_by) VALUES (999, 'from the future', 'x', true, 0, 'test')"
        )
    proc = run(commands(tmp_path)[name], dsn=with_password(dsn))
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr
    if proc.returncode not in (0, EXIT_NOT_FOUND):
        line = assert_one_line_failure(proc, {5})
        assert "999" in line
