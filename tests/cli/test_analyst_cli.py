"""The analyst commands (info, list, summary, compare, final, agents-over-time, query)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from seed import EXPERIMENT, Seed

from sim_schema import cli


def run(dsn: str, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--dsn", dsn, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_and_list(seed: Seed, dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(dsn, capsys, "--json", "info")
    assert code == 0
    [info] = json.loads(out)
    assert (info["experiment_id"], info["simulations"]) == (EXPERIMENT, 3)
    code, out, _ = run(dsn, capsys, "list", "--experiment", EXPERIMENT)
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["simulation_id", "experiment_id", "name", "status"]
    assert [line.split()[0] for line in lines[2:]] == ["sim_a", "sim_b", "sim_c"]


def test_summary_csv_and_final_by_parameter(
    seed: Seed, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(dsn, capsys, "summary", "--csv", "--simulation", "solo")
    rows = list(csv.DictReader(io.StringIO(out)))
    agents = seed.rows("agents", "solo")
    assert code == 0 and len(rows) == 1
    assert int(rows[0]["deaths"]) == sum(1 for a in agents if a["death_step"] is not None)
    code, out, _ = run(dsn, capsys, "--json", "final", "--experiment", EXPERIMENT,
                       "--by-parameter", "rate", "--metric", "total_agents")
    groups = json.loads(out)
    assert [(g["rate"], g["simulations"]) for g in groups] == [(0.1, 2), (0.2, 1)]
    last = {r["simulation_id"]: r["total_agents"] for r in seed.rows("simulation_steps")
            if r["step"] == 29}
    assert groups[1]["mean_total_agents"] == last["sim_c"]


def test_compare_table_is_one_column_per_simulation(
    seed: Seed, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(dsn, capsys, "compare", "--metric", "total_agents",
                       "--experiment", EXPERIMENT, "--end-step", "2")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["step", "sim_a", "sim_b", "sim_c"]
    want = {(r["simulation_id"], r["step"]): r["total_agents"]
            for r in seed.rows("simulation_steps")}
    assert [int(v) for v in lines[4].split()] == [2, want[("sim_a", 2)], want[("sim_b", 2)],
                                                   want[("sim_c", 2)]]
    code, out, _ = run(dsn, capsys, "compare", "--csv", "--metric", "metrics.custom_score",
                       "--simulation", "solo")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["simulation_id", "step", "metrics.custom_score"]
    assert len(rows) == 31


def test_wrong_metric_lists_valid_names_and_exits_2(
    seed: Seed, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(dsn, capsys, "compare", "--metric", "total_agent")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "'total_agent'" in err and "total_agents" in err and "metrics.custom_score" in err
    code, _, err = run(dsn, capsys, "final", "--by-parameter", "speed")
    assert code == 2 and "valid: food, rate" in err


def test_unknown_simulation_is_not_found(
    seed: Seed, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(dsn, capsys, "agents-over-time", "--simulation", "nope")
    assert code == cli.EXIT_NOT_FOUND and "nope" in err


def test_agents_over_time(seed: Seed, dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(dsn, capsys, "--json", "agents-over-time", "--simulation", "sim_a")
    rows = json.loads(out)
    logged = {r["step"]: r for r in seed.rows("simulation_steps", "sim_a")}
    assert code == 0 and len(rows) == len(logged)
    for row in rows:
        s = logged[row["step"]]
        assert (row["system"], row["control"], row["total"]) == (
            s["system_agents"], s["control_agents"], s["total_agents"])


def test_query_runs_a_library_file(
    seed: Seed, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(dsn, capsys, "--json", "query", "learning_progress",
                       "--param", "simulation_id=sim_a", "--param", "bucket_size=10")
    rows = json.loads(out)
    exps = seed.rows("learning_experiences", "sim_a")
    assert code == 0 and sum(r["experiences"] for r in rows) == len(exps)
    code, _, err = run(dsn, capsys, "query", "learning_progress", "--param", "simulation_id=x")
    assert code == 2 and "missing parameter 'bucket_size'" in err
    code, _, err = run(dsn, capsys, "query", "nope")
    assert code == 2 and "valid:" in err


def test_commands_succeed_on_an_empty_database(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["info"], ["list"], ["summary"], ["final"], ["compare", "--metric", "births"]):
        code, out, _ = run(dsn, capsys, *argv)
        assert code == 0 and "(no rows)" in out, argv


def test_query_bad_value_exits_2_and_empty_csv_keeps_header(
    seed: Seed, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(dsn, capsys, "query", "step_snapshot", "--param", "simulation_id=sim_a",
                       "--param", "step=x")
    assert code == 2 and "step_snapshot" in err and "integer" in err
    code, out, _ = run(dsn, capsys, "query", "agent_history", "--csv",
                       "--param", "simulation_id=sim_a", "--param", "agent_id=nobody")
    assert code == 0 and out.splitlines() == [
        "simulation_id,step,agent_id,position_x,position_y,position_z,resource_level,health,"
        "is_defending,total_reward,age,profile,memory,relationships,extras"]
