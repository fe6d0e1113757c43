"""`import_agentfarm` and `sim-schema import agentfarm`: farm files built from seed 001's
schema (tests/farm_files.py), imported, and read back value by value, column by column.

The expected rows are computed here from the farm rows with the mapping the issue states
(state ids -> steps, id order -> ordinals, JSON text -> jsonb, birth/death times ->
steps), independently of the importer's own tables.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from farm_files import FarmData, simulation_rows, write_file
from helpers import SCHEMA

from sim_schema import SimSchemaError, Store
from sim_schema.cli import EXIT_ERROR, EXIT_OK, main
from sim_schema.errors import SourceError
from sim_schema.importers.agentfarm import import_agentfarm
from sim_schema.ingest.writer import BulkWriter

RENAMED = {"step_number": "step", "current_health": "health", "birth_time": "birth_step",
           "death_time": "death_step"}  # fmt: skip
ORDINAL_BY = {"agent_actions": ("step_number", "agent_id"),
              "learning_experiences": ("step_number", "agent_id"),
              "health_incidents": ("step_number", "agent_id")}  # fmt: skip
DROPPED = {"id", "action_id", "experience_id", "incident_id"}
KEYS = {
    "agents": ("simulation_id", "agent_id"),
    "agent_states": ("simulation_id", "step", "agent_id"),
    "agent_actions": ("simulation_id", "step", "agent_id", "ordinal"),
    "resource_states": ("simulation_id", "step", "resource_id"),
    "simulation_steps": ("simulation_id", "step"),
    "learning_experiences": ("simulation_id", "step", "agent_id", "ordinal"),
    "health_incidents": ("simulation_id", "step", "agent_id", "ordinal"),
}


def _value(table: str, column: str, value: Any) -> Any:
    if column in ("state_before_id", "state_after_id"):
        return None if value is None else int(value.rsplit("-", 1)[1])
    if column == "is_defending":
        return bool(value)
    if column == "details" and value is not None:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def expected(data: FarmData, table: str, simulation_id: str) -> list[dict[str, Any]]:
    """Our rows of `table` for one simulation, from the farm rows."""
    out = []
    seen: dict[tuple[Any, ...], int] = {}
    for row in data.rows(table, simulation_id if "simulation_id" in data.rows(table)[0] else None):
        mapped: dict[str, Any] = {"simulation_id": simulation_id}
        for column, value in row.items():
            if column in DROPPED or column == "simulation_id":
                continue
            name = RENAMED.get(column, column)
            name = {"state_before_id": "state_before_step",
                    "state_after_id": "state_after_step"}.get(name, name)  # fmt: skip
            mapped[name] = _value(table, column, value)
        if table in ORDINAL_BY:  # rows were inserted in id order
            key = tuple(row[c] for c in ORDINAL_BY[table])
            mapped["ordinal"] = seen.get(key, 0)
            seen[key] = mapped["ordinal"] + 1
        out.append(mapped)
    keys = KEYS[table]
    return sorted(out, key=lambda r: tuple(r[k] for k in keys))


def stored(conn: psycopg.Connection[Any], table: str, simulation_id: str,
           columns: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    keys = ", ".join(KEYS[table])
    cur = conn.execute(
        f"SELECT {', '.join(columns)} FROM {table} WHERE simulation_id = %s ORDER BY {keys}",
        (simulation_id,),
    )
    return [dict(zip(columns, r, strict=True)) for r in cur]


def _edit(path: Path, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    """Change a farm file: each statement, or (statement, parameters), then commit."""
    db = sqlite3.connect(path)
    for st in statements:
        db.execute(*((st,) if isinstance(st, str) else st))
    db.commit()
    db.close()


def _per_simulation(tmp_path: Path, name: str = "sim_007.db", n: int = 0, **drop: Any) -> tuple[
        Path, FarmData]:  # fmt: skip
    data = FarmData()
    simulation_rows(data, None, n, farm_sim_id=n + 1)
    return write_file(tmp_path / name, data, per_experiment=False, drop=drop or None), data


def _experiment_file(tmp_path: Path) -> tuple[Path, FarmData]:
    data = FarmData()
    for n in range(2):
        simulation_rows(data, f"sim_{n}", n)
    data.add("experiments", {
        "experiment_id": "exp_farm", "name": "Farm sweep", "description": "two runs",
        "hypothesis": "lr matters", "status": "completed",
        "variables": json.dumps({"learning_rate": [0.1, 0.2]}),
        "results_summary": json.dumps({"best": "sim_1"}), "creation_date": "2024-02-29 08:00:00",
    })  # fmt: skip
    return write_file(tmp_path / "experiment.db", data, per_experiment=True), data


async def test_per_simulation_file_values(store: Store, conn: psycopg.Connection[Any],
                                          tmp_path: Path) -> None:  # fmt: skip
    path, data = _per_simulation(tmp_path)
    report = await import_agentfarm(store, [path], batch_size=5)
    assert report.simulations == ["sim_007"]
    for table in KEYS:
        want = expected(data, table, "sim_007")
        got = stored(conn, table, "sim_007", list(want[0]))
        for name in want[0]:
            assert [r[name] for r in got] == [r[name] for r in want], (table, name)
    sim = conn.execute(
        "SELECT experiment_id, status, parameters, results_summary, metadata, started_at,"
        " ended_at FROM simulations WHERE simulation_id = 'sim_007'"
    ).fetchone()
    assert sim == (
        None, "completed", {"seed": 0, "learning_rate": 0.1}, {"survivors": 2},
        {"agentfarm": {"source": "sim_007.db", "simulation_db_path": "runs/sim_0.db",
                       "simulation_id": 1}},
        datetime(2024, 3, 1, 10, 0, 0, 250000, tzinfo=UTC),
        datetime(2024, 3, 1, 11, 30, tzinfo=UTC),
    )  # fmt: skip
    config = conn.execute(
        "SELECT config_id, config FROM simulation_config WHERE simulation_id = 'sim_007'"
    ).fetchall()
    assert config == [(1, {"width": 100, "agents": {"system": 3}})]
    actions = report.tables["agent_actions"]
    assert (actions.rows_read, actions.rows_written, actions.rows_already_stored) == (16, 16, 0)
    assert actions.defaulted == {"details: not JSON text, kept as a string": 4}
    assert actions.mapped["state_before_step"] == "state_before_id"
    assert "id" in report.tables["agent_states"].skipped


async def test_experiment_file_values(store: Store, conn: psycopg.Connection[Any],
                                      tmp_path: Path) -> None:  # fmt: skip
    path, data = _experiment_file(tmp_path)
    report = await import_agentfarm(store, [path], batch_size=7)
    assert sorted(report.simulations) == ["sim_0", "sim_1"]
    assert report.experiments == ["exp_farm"]
    for sim in ("sim_0", "sim_1"):
        for table in KEYS:
            want = expected(data, table, sim)
            got = stored(conn, table, sim, list(want[0]))
            for name in want[0]:
                assert [r[name] for r in got] == [r[name] for r in want], (sim, table, name)
    exp = conn.execute(
        "SELECT name, description, hypothesis, status, variables, results_summary, created_at"
        " FROM experiments WHERE experiment_id = 'exp_farm'"
    ).fetchone()
    assert exp == ("Farm sweep", "two runs", "lr matters", "completed",
                   {"learning_rate": [0.1, 0.2]}, {"best": "sim_1"},
                   datetime(2024, 2, 29, 8, tzinfo=UTC))  # fmt: skip
    sims = conn.execute(
        "SELECT simulation_id, experiment_id, parameters FROM simulations ORDER BY 1"
    ).fetchall()
    assert sims == [("sim_0", "exp_farm", {"seed": 0, "learning_rate": 0.1}),
                    ("sim_1", "exp_farm", {"seed": 1, "learning_rate": 0.2})]  # fmt: skip
    deaths = conn.execute(
        "SELECT agent_id, birth_step, death_step FROM agents WHERE simulation_id = 'sim_1'"
        " ORDER BY agent_id"
    ).fetchall()
    assert deaths == [("a-1-0", 0, None), ("a-1-1", 1, 3), ("a-1-2", 2, 4)]


async def test_experiment_option_groups_files(store: Store, conn: psycopg.Connection[Any],
                                              tmp_path: Path) -> None:  # fmt: skip
    first, _ = _per_simulation(tmp_path, "run_a.db", 0)
    second, data = _per_simulation(tmp_path, "run_b.db", 1)
    report = await import_agentfarm(store, [first, second], experiment_id="grouped")
    assert report.experiments == ["grouped"]
    rows = conn.execute(
        "SELECT simulation_id, experiment_id FROM simulations ORDER BY 1"
    ).fetchall()
    assert rows == [("run_a", "grouped"), ("run_b", "grouped")]
    states = stored(conn, "agent_states", "run_b", ["step", "agent_id", "health"])
    assert [r["health"] for r in states] == [
        r["current_health"] for r in sorted(data.rows("agent_states"),
                                            key=lambda r: (r["step_number"], r["agent_id"]))
    ]  # fmt: skip


def _snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    tables = [*KEYS, "simulations", "experiments", "simulation_config", "ingest_batches"]
    out = {}
    for t in tables:
        out[t] = sorted(map(repr, conn.execute(f"SELECT * FROM {t}").fetchall()))
    return out


async def test_reimport_changes_nothing(store: Store, conn: psycopg.Connection[Any],
                                        tmp_path: Path) -> None:  # fmt: skip
    path, _ = _experiment_file(tmp_path)
    single, _ = _per_simulation(tmp_path)
    await import_agentfarm(store, [path, single], batch_size=6)
    before = _snapshot(conn)
    again = await import_agentfarm(store, [single, path], batch_size=4)  # other batches
    assert _snapshot(conn) == before
    assert again.rows_written == 0
    assert sorted(again.simulations_existing) == ["sim_0", "sim_007", "sim_1"]
    for t in KEYS:
        report = again.tables[t]
        assert report.rows_already_stored == report.rows_read > 0, t


async def test_interrupted_import_resumes(store: Store, conn: psycopg.Connection[Any],
                                          tmp_path: Path) -> None:  # fmt: skip
    path, data = _per_simulation(tmp_path)
    bad = sqlite3.connect(path)  # a bad value late in agent_states stops the first import
    bad.execute("UPDATE agent_states SET current_health = 'n/a' WHERE id = 'a-0-2-3'")
    bad.commit()
    with pytest.raises(SourceError) as failed:
        await import_agentfarm(store, [path], batch_size=5)
    assert "a-0-2" in str(failed.value) and "current_health" in str(failed.value)
    partial = conn.execute(
        "SELECT count(*) FROM agent_states WHERE simulation_id = 'sim_007'"
    ).fetchone()
    assert partial == (10,)  # two batches of five committed before the bad one
    bad.execute("UPDATE agent_states SET current_health = 77.0 WHERE id = 'a-0-2-3'")
    bad.commit()
    bad.close()
    report = await import_agentfarm(store, [path], batch_size=5)
    states = report.tables["agent_states"]
    assert (states.rows_already_stored, states.rows_written) == (10, 2)
    data.tables["agent_states"][-1]["current_health"] = 77.0
    want = expected(data, "agent_states", "sim_007")
    got = stored(conn, "agent_states", "sim_007", list(want[0]))
    assert got == want


async def test_changed_source_is_refused(store: Store, tmp_path: Path) -> None:
    path, _ = _per_simulation(tmp_path)
    await import_agentfarm(store, [path])
    _edit(path, "UPDATE agent_actions SET reward = 9.5 WHERE action_id = 3")
    with pytest.raises(SourceError, match=r"sim_007.db, table agent_actions: imported before"
                       r" with other values: .*reward"):  # fmt: skip
        await import_agentfarm(store, [path])


async def test_missing_columns_defaulted(store: Store, conn: psycopg.Connection[Any],
                                         tmp_path: Path) -> None:  # fmt: skip
    path, _ = _per_simulation(
        tmp_path, agent_states={"is_defending", "position_z"}, agents={"agent_type"}
    )
    report = await import_agentfarm(store, [path])
    states = conn.execute(
        "SELECT DISTINCT is_defending, position_z FROM agent_states"
    ).fetchall()
    assert states == [(False, None)]
    assert conn.execute("SELECT DISTINCT agent_type FROM agents").fetchall() == [("unknown",)]
    assert report.tables["agents"].defaulted == {
        "agent_type: the source has no agent_type column, 'unknown'": 3
    }
    assert report.tables["agent_states"].defaulted == {
        "is_defending: the source has no is_defending column, False": 12,
        "position_z: the source has no position_z column, None": 12,
    }


async def test_bad_value_names_file_table_row_field(store: Store, tmp_path: Path) -> None:
    path, _ = _per_simulation(tmp_path)
    _edit(path, "UPDATE agent_actions SET state_after_id = 'a-0-1-x' WHERE action_id = 7")
    with pytest.raises(SourceError) as caught:
        await import_agentfarm(store, [path])
    assert str(caught.value) == (
        f"{path}, table agent_actions, row (step_number=1, agent_id='a-0-1', #2 of its agent at"
        " its step), field 'state_after_id': 'a-0-1-x' is not a state id 'agent_id-step'"
    )


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        ('{"why": "a\\u0000b"}', "NUL character (\\u0000) in a JSON string"),
        ('{"why": "\\ud800"}', "JSON: a lone surrogate ('\\ud800') cannot be stored as UTF-8"),
    ],
    ids=["nul-escape", "lone-surrogate-escape"],
)
async def test_json_the_server_refuses_names_the_row(
    store: Store, tmp_path: Path, details: str, reason: str
) -> None:
    """SQLite finds these valid JSON; PostgreSQL refuses them: the value rules name them."""
    path, _ = _per_simulation(tmp_path)
    _edit(path, ("UPDATE agent_actions SET details = ? WHERE action_id = 7", (details,)))
    with pytest.raises(SourceError) as caught:
        await import_agentfarm(store, [path])
    assert str(caught.value) == (
        f"{path}, table agent_actions, row (step_number=1, agent_id='a-0-1', #2 of its agent at"
        f" its step), field 'details': {reason}"
    )


async def test_json_that_is_not_utf8_names_the_row(store: Store, tmp_path: Path) -> None:
    """Bytes SQLite passes inside a JSON string, which are not UTF-8, refused by the server:
    the row is found and named."""
    path, _ = _per_simulation(tmp_path)
    _edit(
        path,  # {"w":"a\xffb"}
        "UPDATE agent_actions SET details = CAST(X'7B2277223A2261FF62227D' AS TEXT)"
        " WHERE action_id = 7",
    )
    with pytest.raises(SourceError) as caught:
        await import_agentfarm(store, [path])
    message = str(caught.value)
    assert message.startswith(
        f"{path}, table agent_actions, row (step_number=1, agent_id='a-0-1', #2 of its agent at"
        " its step), field 'details': not UTF-8 text"
    ), message


async def test_state_ids_of_any_form_map_to_steps(
    store: Store, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """SQLite parses the ids "<own agent>-<step>"; the ids of other agents go through
    Python in the same column."""
    path, _ = _per_simulation(tmp_path)
    _edit(
        path,
        "UPDATE agent_actions SET state_before_id = 'other-agent-41' WHERE action_id = 1",
        "UPDATE agent_actions SET state_after_id = 'x-42' WHERE action_id = 2",
    )
    await import_agentfarm(store, [path])
    got = conn.execute(
        "SELECT step, agent_id, ordinal, state_before_step, state_after_step FROM agent_actions"
        " WHERE simulation_id = 'sim_007' AND step = 0 ORDER BY agent_id, ordinal"
    ).fetchall()
    assert got == [
        (0, "a-0-0", 0, 41, 1),
        (0, "a-0-1", 0, 0, 42),
        (0, "a-0-1", 1, 0, 1),
        (0, "a-0-2", 0, 0, 1),
    ]


async def test_unreadable_files(store: Store, tmp_path: Path) -> None:
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(SourceError, match="notes.db: cannot be read as a SQLite database"):
        await import_agentfarm(store, [junk])
    with pytest.raises(SourceError, match="nothere.db: no such file"):
        await import_agentfarm(store, [tmp_path / "nothere.db"])
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE other (x)").connection.close()
    with pytest.raises(SourceError, match="empty.db: holds none of the AgentFarm tables"):
        await import_agentfarm(store, [empty])
    a, _ = _per_simulation(tmp_path / ".." / tmp_path.name, "sim.db")
    (tmp_path / "b").mkdir()
    b, _ = _per_simulation(tmp_path / "b", "sim.db")
    with pytest.raises(SimSchemaError, match="would both be simulation 'sim'"):
        await import_agentfarm(store, [a, b])


def test_cli(dsn: str, conn: psycopg.Connection[Any], tmp_path: Path,
             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    path, _ = _experiment_file(tmp_path)
    single, _ = _per_simulation(tmp_path)
    argv = ["--dsn", dsn, "--schema", SCHEMA, "import", "agentfarm", str(path), str(single)]
    assert main([*argv, "--experiment", "cli_exp"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "imported 3 simulation(s) from 2 source(s) (0 already present)" in out
    assert "step <- step_number" in out
    assert conn.execute(
        "SELECT count(*) FROM simulations WHERE experiment_id = 'cli_exp'"
    ).fetchone() == (3,)
    assert main(["--json", *argv, "--experiment", "cli_exp"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert {t["table"]: t["rows_written"] for t in report["tables"]}["agent_states"] == 0
    junk = tmp_path / "junk.db"
    junk.write_text("no")
    assert main(["--dsn", dsn, "import", "agentfarm", str(junk)]) == EXIT_ERROR
    assert "junk.db: cannot be read as a SQLite database" in capsys.readouterr().err


class _Flights:
    """Which connections the writer's transactions ran on, and how many at once (a spy on
    `BulkWriter.write_many`; the writes themselves are real)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.connections: set[int] = set()
        self.tables: list[str] = []  # the table of each transaction, in order
        self.now = self.most = 0
        real = BulkWriter.write_many

        async def write_many(writer: BulkWriter, conn: Any, *args: Any, **kw: Any) -> Any:
            self.connections.add(id(conn))
            self.tables.append(args[0])
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                return await real(writer, conn, *args, **kw)
            finally:
                self.now -= 1

        monkeypatch.setattr(BulkWriter, "write_many", write_many)


def _long_file(tmp_path: Path) -> tuple[Path, FarmData]:
    """A per-simulation file of 12 steps: 36 states, 48 actions (agent 1 acts twice a
    step), so that batches of 4 split steps and share rollup rows."""
    data = FarmData()
    simulation_rows(data, None, 0, steps=12, farm_sim_id=1)
    return write_file(tmp_path / "sim_long.db", data, per_experiment=False), data


def _rollups(conn: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall()
            for t in ("population_rollup", "action_rollup")}  # fmt: skip


async def test_batches_on_two_connections_in_turn(
    store: Store, conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of a table go on two connections, one streamed while the one before ends
    and commits; every value and the rollups come out as on one connection."""
    path, data = _long_file(tmp_path)
    flights = _Flights(monkeypatch)
    report = await import_agentfarm(store, [path], batch_size=4)
    assert len(flights.connections) == 2 and flights.most == 2
    for table in ("agent_states", "agent_actions"):
        want = expected(data, table, "sim_long")
        got = stored(conn, table, "sim_long", list(want[0]))
        assert got == want, table
        assert report.tables[table].rows_written == len(want)
    rollups = _rollups(conn)  # kept by the triggers of transactions that overlapped
    conn.execute("SELECT rebuild_rollups('sim_long')")
    assert _rollups(conn) == rollups and rollups["action_rollup"]


async def test_a_batch_refused_at_its_end_rolls_back_the_one_in_flight(
    store: Store, conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server refuses a batch when its COPY ends, while the next batch is streamed on
    the other connection: that one is rolled back too, the batches before stay, and the
    import run again writes the rest."""
    path, data = _long_file(tmp_path)
    first_of_step_5 = 5 * 4 + 1  # action ids in step order, 4 a step: batch 6 of 12
    _edit(
        path,  # {"w":"a\xffb"}: not UTF-8, refused by the server only
        ("UPDATE agent_actions SET details = CAST(X'7B2277223A2261FF62227D' AS TEXT)"
         " WHERE action_id = ?", (first_of_step_5,)),
    )  # fmt: skip
    flights = _Flights(monkeypatch)
    with pytest.raises(SourceError, match=r"step_number=5, agent_id='a-0-0'.*not UTF-8"):
        await import_agentfarm(store, [path], batch_size=4)
    assert flights.tables.count("agent_actions") == 7  # the 7th started before the 6th ended
    ids = conn.execute(
        "SELECT step, agent_id, ordinal FROM agent_actions WHERE simulation_id = 'sim_long'"
        " ORDER BY 1, 2, 3"
    ).fetchall()
    want = [(r["step"], r["agent_id"], r["ordinal"]) for r in expected(data, "agent_actions",
                                                                       "sim_long")]  # fmt: skip
    assert ids == want[:20]  # batches 1-5; 6 refused, 7 (in flight) rolled back
    _edit(path, ("UPDATE agent_actions SET details = NULL WHERE action_id = ?",
                 (first_of_step_5,)))  # fmt: skip
    again = await import_agentfarm(store, [path], batch_size=4)
    actions = again.tables["agent_actions"]
    assert (actions.rows_already_stored, actions.rows_written) == (20, 28)
    rollups = _rollups(conn)
    conn.execute("SELECT rebuild_rollups('sim_long')")
    assert _rollups(conn) == rollups


async def test_a_failure_in_a_files_last_batch_names_that_file(
    store: Store, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The last batch of one file may still be in flight when the next file starts: its
    error names its own file, and the next file's rows are not written."""
    first, _ = _per_simulation(tmp_path, "sim_a.db")
    second, _ = _per_simulation(tmp_path, "sim_b.db", n=1)
    _edit(first, "UPDATE health_incidents SET details = CAST(X'7B2277223A2261FF62227D' AS TEXT)"
                 " WHERE incident_id = (SELECT max(incident_id) FROM health_incidents)")  # fmt: skip
    with pytest.raises(SourceError) as caught:
        await import_agentfarm(store, [first, second], batch_size=2)
    assert str(caught.value).startswith(f"{first}, table health_incidents, row (step_number=3,")
    assert conn.execute("SELECT count(*) FROM agent_states WHERE simulation_id = 'sim_b'"
                        ).fetchone() == (0,)  # fmt: skip


async def test_files_of_the_same_simulations_share_one_sink(
    store: Store, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Two copies of an experiment file into one experiment: the second file's
    simulations are known already, its config rows are written while the first file's
    last batch may be in flight (on its own connection's turn), and all of it is found
    stored."""
    path, data = _experiment_file(tmp_path)
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    report = await import_agentfarm(store, [path, copy], experiment_id="E", batch_size=3)
    for table in ("agent_states", "agent_actions", "health_incidents"):
        t = report.tables[table]
        assert t.rows_written == t.rows_already_stored == t.rows_read // 2 > 0, table
        for sim in ("sim_0", "sim_1"):
            want = expected(data, table, sim)
            assert stored(conn, table, sim, list(want[0])) == want, (table, sim)
    configs = report.tables["simulation_config"]
    assert configs.rows_written == configs.rows_already_stored == 2
