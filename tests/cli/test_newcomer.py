"""The CLI as a newcomer meets it (issue 16), through the installed `sim-schema` entry point:
global options before or after the command, `--version`, one option name per thing, exit 7
for every unknown simulation or experiment, JSON that keeps its types and reports errors,
messages that quote what was typed, and exports without the ledger or empty tables.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import add_simulation_sync
from seed import EXPERIMENT, Seed

from sim_schema import Settings, SyncSimulationLogger
from sim_schema.cli import EXIT_CONNECTION, EXIT_NOT_FOUND, EXIT_USAGE
from sim_schema.cli.main import build_parser, main

pytestmark = pytest.mark.slow  # each command runs in its own process (about 0.7 s a start)


def entry_point() -> list[str]:
    installed = shutil.which("sim-schema", path=str(Path(sys.executable).parent))
    assert installed, "the sim-schema entry point is not installed in this environment"
    return [installed]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`sim-schema ARGS` in a child whose environment names no database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    return subprocess.run([*entry_point(), *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sim-schema: "), done.stderr
    return lines[0]


# --- options where people type them --------------------------------------------------


def test_global_options_go_before_or_after_the_command(seed: Seed, dsn: str) -> None:
    status = [cli("--dsn", dsn, "--json", "status"), cli("status", "--json", "--dsn", dsn),
              cli("--json", "status", "--dsn", dsn)]  # fmt: skip
    assert [s.returncode for s in status] == [0, 0, 0]
    assert status[0].stdout == status[1].stdout == status[2].stdout
    assert {m["state"] for m in json.loads(status[1].stdout)["migrations"]} == {"applied"}

    migrate = cli("migrate", "--dsn", dsn)
    assert (migrate.returncode, migrate.stdout) == (0, "schema sim: up to date\n")

    after, before = cli("summary", "--json", "--dsn", dsn), cli("--json", "--dsn", dsn, "summary")
    assert after.returncode == 0 and after.stdout == before.stdout
    assert [r["simulation_id"] for r in json.loads(after.stdout)] == seed.simulation_ids

    after, before = cli("summary", "--csv", "--dsn", dsn), cli("--csv", "--dsn", dsn, "summary")
    assert after.returncode == 0 and after.stdout == before.stdout
    assert after.stdout.splitlines()[0] == (
        "simulation_id,status,step_count,agents,births,deaths,final_step,final_total_agents,"
        "final_average_agent_health"
    )

    # The value given after the command wins over the one before it.
    other = cli("--schema", "sim", "status", "--dsn", dsn, "--schema", "other_schema", "--json")
    report = json.loads(other.stdout)
    assert other.returncode == 0 and report["schema"] == "other_schema"
    assert {m["state"] for m in report["migrations"]} == {"pending"}

    line = one_line_error(cli("--json", "summary", "--csv", "--dsn", dsn), EXIT_USAGE)
    assert line == "sim-schema: --json and --csv: choose one"
    line = one_line_error(cli("migrate", "--csv", "--dsn", dsn), EXIT_USAGE)
    assert line == "sim-schema: --csv: `migrate` prints no table (use --json)"


def test_version() -> None:
    done = cli("--version")
    assert (done.returncode, done.stdout) == (0, f"sim-schema {version('sim_schema')}\n")


def test_delete_commands_take_simulation_and_experiment_options(dsn: str) -> None:
    for sim in ("s1", "s2", "s3"):
        add_simulation_sync(dsn, sim, agents=2, experiment_id="e1" if sim == "s3" else None)

    done = cli("--json", "delete-simulation", "--simulation", "s1", "--yes", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["deleted"] is True
    assert (report["rows"]["simulations"], report["rows"]["agents"]) == (1, 2)

    bare = cli("delete-simulation", "s2", "--yes", "--dsn", dsn)  # the earlier spelling
    assert bare.returncode == 0, bare.stderr
    assert bare.stderr == ("sim-schema: `delete-simulation ID` is deprecated: write "
                           "`delete-simulation --simulation ID`\n")  # fmt: skip

    line = one_line_error(cli("delete-simulation", "s3", "--simulation", "s4", "--dsn", dsn), 2)
    assert line == "sim-schema: two simulations given: 's3' and --simulation 's4'"
    line = one_line_error(cli("delete-simulation", "--yes", "--dsn", dsn), 2)
    assert line == "sim-schema: `delete-simulation` needs --simulation ID"

    done = cli("delete-experiment", "--experiment", "e1", "--cascade", "--yes", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT simulation_id FROM sim.simulations").fetchall()
        experiments = conn.execute("SELECT count(*) FROM sim.experiments").fetchone()
    assert left == [] and experiments == (0,)


def _logged_simulation(dsn: str) -> int:
    """Simulation `logged` written by the logger (so the ingest ledger has rows); returns
    the number of ledger rows."""
    add_simulation_sync(dsn, "logged")
    with SyncSimulationLogger("logged", settings=Settings(dsn=dsn), buffer_size=10) as log:
        log.log_agents([{"agent_id": f"a{i}", "agent_type": "prey"} for i in range(3)])
        for step in range(10):
            log.log_agent_states([{"step": step, "agent_id": f"a{i}"} for i in range(3)])
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM sim.ingest_batches").fetchone()
    assert row is not None and row[0] > 0
    return int(row[0])


def test_export_skips_the_ledger_and_empty_tables_unless_asked(dsn: str, tmp_path: Path) -> None:
    batches = _logged_simulation(dsn)

    done = cli("export", "--simulation", "logged", "--output", str(tmp_path / "a"), "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["agent_states.csv", "agents.csv", "manifest.json", "simulations.csv"]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["tables"]["agent_states"]["rows"] == 30
    assert "simulation_config" in manifest["empty"] and "ingest_batches" not in manifest["empty"]
    out = done.stdout.splitlines()
    assert out[-3].startswith("no rows, no file: simulation_config, ")
    assert out[-3].endswith(" (--include-empty writes them)")
    assert out[-2] == ("not exported: ingest_batches (the ingest ledger; --tables names it to "
                       "include it)")  # fmt: skip

    done = cli("export", "--simulation", "logged", "--out", str(tmp_path / "b"),
               "--include-empty", "--dsn", dsn)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = {p.name for p in (tmp_path / "b").iterdir()}
    assert "simulation_config.csv" in written and "ingest_batches.csv" not in written
    header_only = (tmp_path / "b" / "simulation_config.csv").read_text().splitlines()
    assert header_only == ["simulation_id,config_id,config,created_at"]

    done = cli("--json", "export", "--simulation", "logged", "--out", str(tmp_path / "c"),
               "--tables", "ingest_batches", "--dsn", dsn)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tables"]["ingest_batches"]["rows"] == batches

    done = cli("archive", "--simulation", "logged", "--output", str(tmp_path / "d"), "--yes",
               "--dsn", dsn)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "d" / "manifest.json").exists()


# --- exit 7 for every unknown simulation or experiment -------------------------------


def unknown_names(out: Path) -> dict[str, list[str]]:
    """Every command that names a simulation or experiment, naming one that does not exist."""
    return {
        "info --experiment": ["info", "--experiment", "nope"],
        "list --experiment": ["list", "--experiment", "nope"],
        "list --simulation": ["list", "--simulation", "nope"],
        "summary --simulation": ["summary", "--simulation", "sim_a", "--simulation", "nope"],
        "summary --experiment": ["summary", "--experiment", "nope"],
        "compare --simulation": ["compare", "--metric", "births", "--simulation", "nope"],
        "compare --experiment": ["compare", "--metric", "births", "--experiment", "nope"],
        "final --simulation": ["final", "--simulation", "nope"],
        "final --experiment": ["final", "--by-parameter", "food", "--experiment", "nope"],
        "agents-over-time --simulation": ["agents-over-time", "--simulation", "nope"],
        "query simulation_id": ["query", "population_dynamics", "--param", "simulation_id=nope"],
        "query experiment_id": ["query", "compare_simulations", "--param", "experiment_id=nope"],
        "export --simulation": ["export", "--simulation", "nope", "--out", str(out / "e")],
        "export --experiment": ["export", "--experiment", "nope", "--out", str(out / "e")],
        "export-decisions --simulation": ["export-decisions", "--simulation", "nope",
                                          "--out", str(out / "d.jsonl")],
        "export-decisions --experiment": ["export-decisions", "--experiment", "nope",
                                          "--out", str(out / "d.jsonl")],
        "delete-simulation --simulation": ["delete-simulation", "--simulation", "nope"],
        "delete-simulation --yes": ["delete-simulation", "--simulation", "nope", "--yes"],
        "delete-experiment --experiment": ["delete-experiment", "--experiment", "nope"],
        "delete-experiment --yes": ["delete-experiment", "--experiment", "nope", "--yes"],
        "archive --simulation": ["archive", "--simulation", "nope", "--out", str(out / "a"),
                                 "--yes"],
    }  # fmt: skip


def test_every_command_naming_a_simulation_or_experiment_is_covered() -> None:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    naming = {
        (name, option)
        for name, command in commands.choices.items()
        for action in command._actions
        for option in action.option_strings
        if option in ("--simulation", "--experiment") and name != "demo"  # demo makes its own
    }
    tested = {
        (argv[0], f"--{what}")
        for argv in unknown_names(Path(".")).values()
        for what in ("simulation", "experiment")
        if f"--{what}" in argv
    }
    assert naming - tested == set()


def test_unknown_simulation_or_experiment_exits_7(
    seed: Seed, dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each case through the entry point; its --json form in this process (`main(argv)`)."""
    for case, argv in unknown_names(tmp_path).items():
        line = one_line_error(cli(*argv, "--dsn", dsn), EXIT_NOT_FOUND)
        assert "'nope'" in line and ("simulation" in line or "experiment" in line), (case, line)
        assert main([*argv, "--dsn", dsn, "--json"]) == EXIT_NOT_FOUND, case
        out, err = capsys.readouterr()
        assert json.loads(out) == {"error": line.removeprefix("sim-schema: "),
                                   "exit_code": EXIT_NOT_FOUND}, case  # fmt: skip
        assert err.strip() == line, case


# --- JSON that keeps its types, errors included --------------------------------------


def test_json_keeps_integers_and_parameter_values_typed(seed: Seed, dsn: str) -> None:
    done = cli("compare", "--metric", "total_agents", "--simulation", "sim_a", "--json",
               "--dsn", dsn)  # fmt: skip
    points = json.loads(done.stdout)
    logged = [r["total_agents"] for r in seed.rows("simulation_steps", "sim_a")]
    assert [p["total_agents"] for p in points] == logged
    assert all(type(p["total_agents"]) is int for p in points)
    assert '"total_agents": 2.0' not in done.stdout

    done = cli("compare", "--metric", "metrics.custom_score", "--simulation", "sim_a", "--json",
               "--dsn", dsn)  # fmt: skip
    scores = [p["metrics.custom_score"] for p in json.loads(done.stdout)]
    assert scores == [r["metrics"]["custom_score"] for r in seed.rows("simulation_steps", "sim_a")]

    for parameter, values in (("food", [1, 2]), ("rate", [0.1, 0.2])):
        done = cli("final", "--by-parameter", parameter, "--experiment", EXPERIMENT, "--json",
                   "--dsn", dsn)  # fmt: skip
        groups = json.loads(done.stdout)
        assert [g[parameter] for g in groups] == values, done.stdout
        assert all(type(g["max_total_agents"]) is int for g in groups)

    listed = {r["simulation_id"]: r["parameters"]
              for r in json.loads(cli("list", "--json", "--dsn", dsn).stdout)}  # fmt: skip
    assert listed["sim_b"] == {"food": 2, "rate": 0.1}

    done = cli("query", "parameter_sweep", "--param", f"experiment_id={EXPERIMENT}",
               "--param", "parameter=food", "--json", "--dsn", dsn)  # fmt: skip
    sweep = json.loads(done.stdout)
    assert [(r["value"], r["simulations"]) for r in sweep] == [(1, 1), (2, 2)]


def test_json_errors_are_json(dsn: str) -> None:
    done = cli("--json", "status", "--dsn", "host=127.0.0.1 port=1 dbname=x connect_timeout=3")
    report = json.loads(done.stdout)
    assert done.returncode == report["exit_code"] == EXIT_CONNECTION
    assert report["error"].startswith("cannot connect to ") and "port=1" in report["error"]

    done = cli("compare", "--json", "--dsn", dsn)
    assert done.returncode == EXIT_USAGE
    assert json.loads(done.stdout) == {
        "error": "compare: the following arguments are required: --metric", "exit_code": 2}

    done = cli("--json", "compare", "--metric", "nope", "--dsn", dsn)
    assert done.returncode == EXIT_USAGE
    report = json.loads(done.stdout)  # one object: no half-written array before it
    assert report["exit_code"] == EXIT_USAGE and "'nope'" in report["error"]


def test_error_messages_quote_what_was_typed(seed: Seed, dsn: str) -> None:
    line = one_line_error(cli("compare", "--metric", "metrics.nope", "--dsn", dsn), EXIT_USAGE)
    assert line.startswith("sim-schema: unknown step metric 'metrics.nope'; valid: total_agents")
    line = one_line_error(cli("final", "--by-parameter", "food", "--metric", "metrics.nope",
                              "--dsn", dsn), EXIT_USAGE)  # fmt: skip
    assert "'metrics.nope'" in line
    line = one_line_error(cli("query", "population_dynamics", "--param", "sim=sim_a",
                              "--dsn", dsn), EXIT_USAGE)  # fmt: skip
    assert line == ("sim-schema: query 'population_dynamics': unknown parameter 'sim'; "
                    "missing parameter 'simulation_id'; it takes: simulation_id")  # fmt: skip
    line = one_line_error(cli("final", "--by-parameter", "speed", "--dsn", dsn), EXIT_USAGE)
    assert line == "sim-schema: unknown simulation parameter 'speed'; valid: food, rate"


def test_a_reader_that_stops_early_ends_the_command(seed: Seed, dsn: str, conn: Any) -> None:
    """`sim-schema --json compare ... | head -1` used to hang with the stream left open."""
    conn.execute(
        "INSERT INTO simulation_steps (simulation_id, step, total_agents)"
        " SELECT 'solo', s, 1 FROM generate_series(30, 60000) s"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    child = subprocess.Popen(
        [*entry_point(), "--json", "compare", "--metric", "total_agents", "--dsn", dsn],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline() == "[\n"
    child.stdout.close()
    try:
        code = child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        raise AssertionError("the command did not end after its reader went away") from None
    assert code == 0 and "Traceback" not in child.stderr.read()


def test_csv_header_for_an_empty_result(dsn: str) -> None:
    done = cli("list", "--csv", "--dsn", dsn)
    assert done.returncode == 0
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows == [["simulation_id", "experiment_id", "name", "status", "step_count",
                     "parameters"]]  # fmt: skip
    assert cli("list", "--json", "--dsn", dsn).stdout == "[]\n"
