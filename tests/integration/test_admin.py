"""Deleting simulations and experiments, and archiving (export, verify, delete)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from sim_schema import admin, cli
from sim_schema.errors import ArchiveRefused, LifecycleError, NotFound
from sim_schema.catalog import SIMULATION_TABLES
from sim_schema.read.export import export, export_async


def seed(conn: psycopg.Connection[Any], sim: str, experiment: str | None = None) -> None:
    """Rows in every per-simulation table (plain SQL)."""
    if experiment is not None:
        conn.execute(
            "INSERT INTO experiments (experiment_id, name) VALUES (%s, 'e') ON CONFLICT DO NOTHING",
            (experiment,),
        )
    conn.execute(
        "INSERT INTO simulations (simulation_id, experiment_id, parameters) VALUES (%s, %s, %s)",
        (sim, experiment, Jsonb({"name": "ünï 🙂"})),
    )
    conn.execute(
        "INSERT INTO simulation_config (simulation_id, config_id, config) VALUES (%s, 0, '{}')",
        (sim,),
    )
    conn.execute(
        "INSERT INTO agents (simulation_id, agent_id, agent_type) "
        "SELECT %s, 'a' || g, 't' FROM generate_series(1, 4) g",
        (sim,),
    )
    per_step = {
        "agent_states": ("agent_id, memory", "'a' || (s %% 4 + 1), '{\"x\": 1}'"),
        "agent_actions": ("agent_id, action_type", "'a1', 'move'"),
        "resource_states": ("resource_id, amount", "1, 1.0"),
        "simulation_steps": ("total_agents", "4"),
        "learning_experiences": ("agent_id, module_type", "'a2', 'q'"),
        "health_incidents": ("agent_id, cause", "'a3', 'fall'"),
        "interactions": (
            "source_type, source_id, target_type, target_id, interaction_type",
            "'agent', 'a1', 'agent', 'a2', 'x'",
        ),
        "environment_states": ("state", "'{}'"),
        "events": ("event_type", "'tick'"),
    }
    for table, (cols, values) in per_step.items():
        conn.execute(
            f"INSERT INTO {table} (simulation_id, step, {cols}) "
            f"SELECT %s, s, {values} FROM generate_series(0, 9) s",
            (sim,),
        )
    conn.execute(
        "INSERT INTO agent_decisions (simulation_id, event_id, step, agent_id) "
        "SELECT simulation_id, event_id, step, 'a1' FROM events WHERE simulation_id = %s",
        (sim,),
    )
    conn.execute(
        "INSERT INTO ingest_batches (simulation_id, batch_id, table_name, row_count) "
        "VALUES (%s, gen_random_uuid(), 'agent_states', 10)",
        (sim,),
    )


def digest(conn: psycopg.Connection[Any], sim: str) -> dict[str, str]:
    """Per table, an md5 of the simulation's rows (content, not only count)."""
    out = {}
    for table in SIMULATION_TABLES:
        row = conn.execute(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f"FROM {table} t WHERE simulation_id = %s",
            (sim,),
        ).fetchone()
        assert row is not None
        out[table] = row[0]
    return out


def counts(conn: psycopg.Connection[Any], sim: str) -> dict[str, int]:
    return admin.row_counts(conn, [sim])


@pytest.fixture
def three(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed(conn, "A", "exp")
    seed(conn, "B", "exp")
    seed(conn, "C", "other")
    return conn


def test_delete_simulation_cascades_and_spares_others(three: psycopg.Connection[Any]) -> None:
    conn = three
    before = {s: digest(conn, s) for s in ("B", "C")}
    expected = counts(conn, "A")
    assert all(n > 0 for n in expected.values())
    assert admin.delete_simulation(conn, "A") == expected
    assert all(n == 0 for n in counts(conn, "A").values())
    assert {s: digest(conn, s) for s in ("B", "C")} == before
    with pytest.raises(NotFound, match="simulation 'A'"):
        admin.delete_simulation(conn, "A")


def test_delete_experiment_removes_all_its_simulations(three: psycopg.Connection[Any]) -> None:
    conn = three
    before = digest(conn, "C")
    kept = {s: digest(conn, s) for s in ("A", "B")}
    with pytest.raises(LifecycleError, match=r"'exp' still holds 2 simulation\(s\) \('A', 'B'\)"):
        admin.delete_experiment(conn, "exp")
    assert {s: digest(conn, s) for s in ("A", "B")} == kept  # refused: nothing deleted
    deleted = admin.delete_experiment(conn, "exp", cascade=True)
    assert deleted["experiments"] == 1 and deleted["simulations"] == 2
    assert deleted["agent_states"] == 20
    left = conn.execute("SELECT count(*) FROM experiments WHERE experiment_id = 'exp'")
    assert left.fetchone() == (0,)
    for sim in ("A", "B"):
        assert all(n == 0 for n in counts(conn, sim).values())
    assert digest(conn, "C") == before
    with pytest.raises(NotFound, match="experiment 'exp'"):
        admin.delete_experiment(conn, "exp", cascade=True)


def test_delete_an_empty_experiment_needs_no_cascade(three: psycopg.Connection[Any]) -> None:
    three.execute("INSERT INTO experiments (experiment_id, name) VALUES ('empty', 'e')")
    assert admin.delete_experiment(three, "empty") == {"experiments": 1, **counts(three, "none")}


def test_cli_delete_needs_yes(
    three: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = three
    before = counts(conn, "A")
    assert cli.main(["--dsn", dsn, "delete-simulation", "A"]) == 2
    out, err = capsys.readouterr()
    assert "would delete simulation 'A'" in out and "agent_states" in out and "--yes" in err
    assert counts(conn, "A") == before
    assert cli.main(["--dsn", dsn, "delete-experiment", "exp"]) == 2
    assert counts(conn, "B")["simulations"] == 1
    capsys.readouterr()

    assert cli.main(["--dsn", dsn, "--json", "delete-simulation", "A", "--yes"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": True, "rows": before}
    assert cli.main(["--dsn", dsn, "delete-experiment", "exp", "--yes"]) == 1
    assert "still holds 1 simulation(s) ('B')" in capsys.readouterr().err
    assert counts(conn, "B")["simulations"] == 1
    assert cli.main(["--dsn", dsn, "delete-experiment", "exp", "--yes", "--cascade"]) == 0
    assert counts(conn, "B")["simulations"] == 0 and counts(conn, "C")["simulations"] == 1
    assert cli.main(["--dsn", dsn, "delete-simulation", "nope", "--yes"]) == 7
    assert "simulation 'nope' does not exist" in capsys.readouterr().err


def test_delete_does_not_block_other_simulations_ingest(three: psycopg.Connection[Any], dsn: str):
    """While a delete of A is uncommitted, B's ingest goes through and A's waits."""
    with (
        psycopg.connect(dsn, options="-c search_path=sim") as deleter,
        psycopg.connect(
            dsn, autocommit=True, options="-c search_path=sim -c lock_timeout=2s"
        ) as writer,
    ):
        deleter.execute("DELETE FROM simulations WHERE simulation_id = 'A'")  # open transaction
        with writer.transaction():
            writer.execute(
                "INSERT INTO agents (simulation_id, agent_id, agent_type) VALUES ('B', 'new', 't')"
            )
            writer.execute(
                "INSERT INTO agent_states (simulation_id, step, agent_id) VALUES ('B', 99, 'new')"
            )
            writer.execute(
                "INSERT INTO events (simulation_id, step, event_type) VALUES ('B', 99, 'late')"
            )
        writer.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            writer.execute(
                "INSERT INTO agent_states (simulation_id, step, agent_id) VALUES ('A', 99, 'a1')"
            )
        deleter.commit()
    assert three.execute(
        "SELECT count(*) FROM agent_states WHERE simulation_id = 'B' AND step = 99"
    ).fetchone() == (1,)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_archive_exports_verifies_then_deletes(
    three: psycopg.Connection[Any], tmp_path: Path, fmt: str
) -> None:
    conn = three
    before, others = counts(conn, "A"), digest(conn, "B")
    result = admin.archive_simulation(conn, "A", tmp_path, fmt=fmt)
    assert result.deleted == before
    archived = {t: n for t, n in before.items() if t != "ingest_batches"}  # bookkeeping
    assert {t: r.rows for t, r in result.manifest.tables.items()} == archived
    assert all(n == 0 for n in counts(conn, "A").values())
    assert digest(conn, "B") == others


def test_archive_refuses_an_incomplete_export(three: psycopg.Connection[Any], tmp_path: Path):
    conn = three
    before = digest(conn, "A")
    export(conn, tmp_path, simulations=["A"], tables=["simulations", "agents", "agent_states"])
    with pytest.raises(
        ArchiveRefused,
        match=r"agent_actions has 10 rows in the database but 0 in "
        r"the export \(table not exported\)",
    ):
        admin.delete_archived(conn, "A", tmp_path)
    export(conn, tmp_path / "steps", simulations=["A"], from_step=5)
    with pytest.raises(ArchiveRefused, match="agent_states has 10 rows in the database but 5"):
        admin.delete_archived(conn, "A", tmp_path / "steps")
    assert digest(conn, "A") == before


def test_archive_refuses_a_damaged_file(three: psycopg.Connection[Any], tmp_path: Path) -> None:
    conn = three
    before = digest(conn, "A")
    export(conn, tmp_path, simulations=["A"], fmt="jsonl")
    path = tmp_path / "agent_states.jsonl"
    path.write_bytes(path.read_bytes().rsplit(b"\n", 2)[0] + b"\n")  # lose the last row
    with pytest.raises(ArchiveRefused, match=r"agent_states\.jsonl changed since it was written"):
        admin.delete_archived(conn, "A", tmp_path)
    export(conn, tmp_path / "again", simulations=["A"], fmt="jsonl")
    (tmp_path / "again" / "events.jsonl").unlink()
    with pytest.raises(ArchiveRefused, match=r"events\.jsonl is missing"):
        admin.delete_archived(conn, "A", tmp_path / "again")
    assert digest(conn, "A") == before


def test_archive_refuses_when_rows_arrived_after_the_export(
    three: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn = three
    export(conn, tmp_path, simulations=["A"])
    conn.execute("INSERT INTO agent_states (simulation_id, step, agent_id) VALUES ('A', 50, 'a1')")
    with pytest.raises(ArchiveRefused, match="agent_states has 11 rows in the database but 10"):
        admin.delete_archived(conn, "A", tmp_path)
    assert counts(conn, "A")["agent_states"] == 11
    with pytest.raises(ArchiveRefused, match="holds an export of"):
        admin.delete_archived(conn, "B", tmp_path)


def test_cli_archive(
    three: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = three
    out = tmp_path / "arch"
    assert cli.main(["--dsn", dsn, "archive", "--simulation", "A", "--out", str(out)]) == 2
    assert not out.exists() and counts(conn, "A")["simulations"] == 1
    assert (
        cli.main(
            [
                "--dsn",
                dsn,
                "archive",
                "--simulation",
                "A",
                "--out",
                str(out),
                "--format",
                "parquet",
                "--yes",
            ]
        )
        == 0
    )
    assert "archived simulation 'A'" in capsys.readouterr().out
    assert (out / "agent_states.parquet").is_file() and (out / "manifest.json").is_file()
    assert counts(conn, "A")["simulations"] == 0
    assert cli.main(["--dsn", dsn, "archive", "--simulation", "A", "--out", str(out), "--yes"]) == 7


def test_archive_refuses_when_a_table_is_unknown_to_the_export(
    three: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A table added by a later migration would be cascaded away without an archive."""
    conn = three
    conn.execute(
        "CREATE TABLE extra_rows (simulation_id text REFERENCES simulations "
        "ON DELETE CASCADE, x int)"
    )
    conn.execute("INSERT INTO extra_rows VALUES ('A', 1)")
    with pytest.raises(ArchiveRefused, match="extra_rows hold simulation rows"):
        admin.archive_simulation(conn, "A", tmp_path)
    assert conn.execute("SELECT count(*) FROM extra_rows").fetchone() == (1,)
    assert counts(conn, "A")["simulations"] == 1


async def test_export_and_archive_from_async_code_write_the_same_files(
    three: psycopg.Connection[Any], dsn: str, tmp_path: Path
) -> None:
    """The async forms run the same work: the same files, byte for byte, and the same
    verified delete (on a connection left as it was found)."""
    conn = three
    sync = export(conn, tmp_path / "sync", simulations=["A"], fmt="jsonl")
    before = counts(conn, "A")
    async with await psycopg.AsyncConnection.connect(dsn) as aconn:
        done = await export_async(aconn, tmp_path / "async", simulations=["A"], fmt="jsonl")
        assert {t: (r.rows, r.sha256) for t, r in done.tables.items()} == {
            t: (r.rows, r.sha256) for t, r in sync.tables.items()
        }
        result = await admin.archive_simulation_async(
            aconn, "A", tmp_path / "archive", fmt="jsonl")
        assert (aconn.autocommit, aconn.info.transaction_status) == (
            False, psycopg.pq.TransactionStatus.IDLE)
    assert result.deleted == before
    assert all(n == 0 for n in counts(conn, "A").values())
    assert {t: r.sha256 for t, r in result.manifest.tables.items()} == {
        t: r.sha256 for t, r in sync.tables.items()
    }
