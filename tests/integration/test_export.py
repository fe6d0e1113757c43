"""Streaming exports (CSV, JSONL, Parquet) and the training-data export, on a real server.

Round trips load the exported files back into PostgreSQL (or read them with pyarrow) and
compare with the source rows, so every value, JSONB and unicode included, is checked.
"""

from __future__ import annotations

import csv
import json
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from sim_schema import cli
from sim_schema.catalog import DATA_TABLES
from sim_schema.errors import ConfigurationError, NotFound, OutputError
from sim_schema.read.export import (
    DECISION_COLUMNS,
    Manifest,
    count_file_rows,
    export,
    export_decisions,
    file_sha256,
)
from sim_schema.progress import Progress

TRICKY = 'ünïcödé "quoted", comma; new\nline \\ back\tslash 🙂'


def seed(
    conn: psycopg.Connection[Any],
    sim: str,
    *,
    experiment: str | None = None,
    agents: int = 3,
    steps: int = 5,
) -> None:
    """A small simulation with a row in every per-simulation table (plain SQL)."""
    if experiment is not None:
        conn.execute(
            "INSERT INTO experiments (experiment_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (experiment, f"exp {experiment}"),
        )
    conn.execute(
        "INSERT INTO simulations (simulation_id, experiment_id, name, parameters, started_at)"
        " VALUES (%s, %s, %s, %s, '2024-01-02 03:04:05.123456+02')",
        (sim, experiment, TRICKY, Jsonb({"rate": 0.5, "name": TRICKY, "nested": {"a": [1, None]}})),
    )
    conn.execute(
        "INSERT INTO simulation_config (simulation_id, config_id, config) VALUES (%s, 0, %s)",
        (sim, Jsonb({"grid": [10, 10], "label": TRICKY})),
    )
    conn.execute(
        """INSERT INTO agents (simulation_id, agent_id, agent_type, name, parent_ids, profile)
           SELECT %s, 'a' || g, 'type' || (g %% 2), %s, ARRAY['p' || g, 'q,"x"'],
                  jsonb_build_object('g', g, 'text', %s::text)
           FROM generate_series(1, %s) g""",
        (sim, TRICKY, TRICKY, agents),
    )
    conn.execute(  # a bulk load by raw SQL goes to the stored table, with keys (schema.md)
        """INSERT INTO agent_states_data (sim_key, step, agent_key, position_x, health, age,
                                          memory, extras)
           SELECT k.sim_key, s, k.agent_key, s * 0.1 + k.a,
                  CASE WHEN s = 0 THEN 'NaN'::float8 ELSE 1.0/3 END,
                  s, jsonb_build_object('seen', jsonb_build_array(s, k.a), 'note', %s::text),
                  CASE WHEN k.a = 1 THEN NULL ELSE '{"k": -0.0}'::jsonb END
           FROM generate_series(0, %s - 1) s,
                (SELECT m.sim_key, g.agent_key, substr(g.agent_id, 2)::int AS a
                 FROM simulations m JOIN agents g USING (simulation_id)
                 WHERE m.simulation_id = %s) k""",
        (TRICKY, steps, sim),
    )
    for table, cols, values in [
        ("agent_actions", "agent_id, action_type, reward, details",
         "'a1', 'move', s * 1.5, jsonb_build_object('to', s)"),
        ("resource_states", "resource_id, amount", "1, s * 2.0"),
        ("simulation_steps", "total_agents, metrics", f"{agents}, jsonb_build_object('m', 1)"),
        ("learning_experiences", "agent_id, module_type, reward", "'a2', 'q', 0.25"),
        ("health_incidents", "agent_id, cause, health_before, health_after",
         "'a1', 'fall', 1, 0.5"),
        ("interactions", "source_type, source_id, target_type, target_id, interaction_type",
         "'agent', 'a1', 'agent', 'a2', 'share'"),
        ("environment_states", "state", "jsonb_build_object('step', s, 'txt', 'é')"),
        ("events", "event_type, payload", "'tick', jsonb_build_object('s', s)"),
    ]:  # fmt: skip
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (simulation_id, step, " + cols + ") "
                "SELECT %s, s, " + values + " FROM generate_series(0, %s - 1) s"
            ).format(sql.Identifier(table)),
            (sim, steps),
        )
    conn.execute(
        """INSERT INTO agent_decisions (simulation_id, event_id, step, agent_id, prompt, output,
               context, action, processing_time, feedback, rating, reason)
           SELECT %s, e.event_id, e.step, 'a' || (e.step %% %s + 1), 'prompt ' || %s::text,
                  'out ' || e.step, jsonb_build_object('step', e.step, 'txt', %s::text),
                  jsonb_build_object('move', e.step), 0.01 * e.step, 'fb',
                  CASE WHEN e.step %% 3 = 0 THEN NULL ELSE e.step END, 'why'
           FROM events e WHERE e.simulation_id = %s""",
        (sim, agents, TRICKY, TRICKY, sim),
    )
    conn.execute(
        "INSERT INTO ingest_batches (simulation_id, batch_id, table_name, row_count)"
        " VALUES (%s, gen_random_uuid(), 'agent_states', %s)",
        (sim, agents * steps),
    )


def db_count(conn: psycopg.Connection[Any], table: str, sims: list[str], where: str = "") -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE simulation_id = ANY(%s) " + where).format(
            sql.Identifier(table)
        ),
        (sims,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def assert_same_rows(conn: psycopg.Connection[Any], table: str, sims: list[str]) -> None:
    """The temp table `back` holds exactly the source rows (as a multiset)."""
    for a, b in [("{src}", "back"), ("back", "{src}")]:
        query = sql.SQL(
            "SELECT count(*) FROM (SELECT * FROM " + a + " EXCEPT ALL SELECT * FROM " + b + ") d"
        ).format(
            src=sql.SQL("(SELECT * FROM {} WHERE simulation_id = ANY(%s)) s").format(
                sql.Identifier(table)
            )
        )
        row = conn.execute(query, (sims,)).fetchone()
        assert row == (0,), f"{table}: {a} has rows that {b} lacks"


def load_back(conn: psycopg.Connection[Any], table: str) -> None:
    conn.execute("DROP TABLE IF EXISTS pg_temp.back")
    conn.execute(sql.SQL("CREATE TEMP TABLE back (LIKE {})").format(sql.Identifier(table)))


@pytest.fixture
def seeded(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    seed(conn, "sim-A", experiment="exp-1")
    seed(conn, "sim-B", experiment="exp-1", agents=2, steps=4)
    seed(conn, "sim-C", agents=4, steps=3)
    return conn


def check_manifest(out: Path, manifest: Manifest, conn: psycopg.Connection[Any], sims: list[str]):
    on_disk = Manifest.read(out)
    assert on_disk == manifest
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [rec.file for rec in manifest.tables.values()] + ["manifest.json"]
    )
    for table, rec in manifest.tables.items():
        path = out / rec.file
        assert rec.rows == db_count(conn, table, sims) > 0, table
        assert rec.sha256 == file_sha256(path)
        assert rec.bytes == path.stat().st_size
        assert count_file_rows(path, manifest.format) == rec.rows


def test_csv_round_trip_every_table(seeded: psycopg.Connection[Any], tmp_path: Path) -> None:
    conn = seeded
    manifest = export(conn, tmp_path, simulations=["sim-A"], fmt="csv")
    assert list(manifest.tables) == list(DATA_TABLES)  # every data table, not the ledger
    assert manifest.empty == []
    check_manifest(tmp_path, manifest, conn, ["sim-A"])
    for table, rec in manifest.tables.items():
        load_back(conn, table)
        with conn.cursor() as cur, cur.copy("COPY back FROM STDIN (FORMAT CSV, HEADER)") as cp:
            cp.write((tmp_path / rec.file).read_bytes())
        assert_same_rows(conn, table, ["sim-A"])


def test_jsonl_round_trip_every_table(seeded: psycopg.Connection[Any], tmp_path: Path) -> None:
    conn = seeded
    manifest = export(conn, tmp_path, simulations=["sim-A", "sim-C"], fmt="jsonl")
    check_manifest(tmp_path, manifest, conn, ["sim-A", "sim-C"])
    lines = (tmp_path / "simulations.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert first["parameters"]["nested"] == {"a": [1, None]}  # JSONB nested, not a string
    assert first["name"] == TRICKY
    assert first["started_at"] == "2024-01-02T01:04:05.123456+00:00"  # ISO 8601
    for table, rec in manifest.tables.items():
        load_back(conn, table)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO back SELECT * FROM json_populate_record(NULL::back, %s::json)",
                [(line,) for line in (tmp_path / rec.file).read_text().splitlines()],
            )
        assert_same_rows(conn, table, ["sim-A", "sim-C"])


def test_parquet_round_trip_every_table(seeded: psycopg.Connection[Any], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    conn = seeded
    manifest = export(conn, tmp_path, experiment="exp-1", fmt="parquet")
    assert manifest.simulations == ["sim-A", "sim-B"]
    check_manifest(tmp_path, manifest, conn, ["sim-A", "sim-B"])
    for table, rec in manifest.tables.items():
        got = pq.read_table(tmp_path / rec.file).to_pylist()
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            want = cur.execute(
                sql.SQL("SELECT * FROM {} WHERE simulation_id = ANY(%s)").format(
                    sql.Identifier(table)
                ),
                (["sim-A", "sim-B"],),
            ).fetchall()
        assert sorted(map(_canonical, got)) == sorted(map(_canonical, want)), table


def _canonical(row: dict[str, Any]) -> str:
    """One comparable string per row: JSON text parsed, uuids as text, NaN spelled out."""
    out = {}
    for key, value in row.items():
        if isinstance(value, str) and key in {
            "parameters",
            "metadata",
            "results_summary",
            "config",
            "profile",
            "memory",
            "relationships",
            "extras",
            "details",
            "metrics",
            "state",
            "payload",
            "processing_result",
            "context",
            "action",
        }:
            value = json.loads(value)
        elif isinstance(value, float) and value != value:
            value = "NaN"
        elif value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
            value = value.isoformat() if hasattr(value, "isoformat") else str(value)
        out[key] = value
    return json.dumps(out, sort_keys=True, default=str)


def test_step_range_and_table_selection(seeded: psycopg.Connection[Any], tmp_path: Path) -> None:
    conn = seeded
    manifest = export(
        conn,
        tmp_path,
        simulations=["sim-A"],
        tables=["agent_states", "agents"],
        fmt="csv",
        from_step=1,
        to_step=3,
    )
    assert list(manifest.tables) == ["agents", "agent_states"]  # dependency order
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "agent_states.csv",
        "agents.csv",
        "manifest.json",
    ]
    assert manifest.tables["agents"].rows == 3  # no step column: all of them
    assert (
        manifest.tables["agent_states"].rows
        == db_count(conn, "agent_states", ["sim-A"], "AND step BETWEEN 1 AND 3")
        == 9
    )
    with (tmp_path / "agent_states.csv").open(newline="") as f:
        steps = {int(r["step"]) for r in csv.DictReader(f)}
    assert steps == {1, 2, 3}

    only_from = export(
        conn, tmp_path / "b", simulations=["sim-A"], tables=["events"], fmt="jsonl", from_step=4
    )
    assert only_from.tables["events"].rows == 1


def test_unknown_table_is_refused_with_valid_names(
    seeded: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigurationError, match="valid tables: simulations, simulation_config"):
        export(seeded, tmp_path, simulations=["sim-A"], tables=["agent_states", "nope"])
    code = cli.main(
        [
            "--dsn",
            dsn,
            "export",
            "--simulation",
            "sim-A",
            "--out",
            str(tmp_path / "x"),
            "--tables",
            "agent_states,agents; DROP TABLE agents",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "'agents; DROP TABLE agents'" in err and "agent_decisions" in err
    assert not (tmp_path / "x").exists()
    assert db_count(seeded, "agents", ["sim-A"]) == 3


def test_empty_tables_and_the_ledger_are_left_out_unless_asked(
    seeded: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn = seeded
    conn.execute("INSERT INTO simulations (simulation_id) VALUES ('bare')")
    conn.execute("INSERT INTO agents (simulation_id, agent_id, agent_type) VALUES ('bare', 'a', 't')")
    manifest = export(conn, tmp_path / "default", simulations=["bare"])
    assert list(manifest.tables) == ["simulations", "agents"]
    assert manifest.empty == [t for t in DATA_TABLES if t not in ("simulations", "agents")]
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == [
        "agents.csv", "manifest.json", "simulations.csv",
    ]  # fmt: skip
    assert Manifest.read(tmp_path / "default") == manifest
    every = export(conn, tmp_path / "every", simulations=["bare"], include_empty=True)
    assert list(every.tables) == list(DATA_TABLES) and every.empty == []
    assert (tmp_path / "every" / "agent_states.csv").read_text().startswith("simulation_id,")
    assert every.tables["agent_states"].rows == 0
    ledger = export(conn, tmp_path / "ledger", simulations=["sim-A"], tables=["ingest_batches"])
    assert list(ledger.tables) == ["ingest_batches"]
    assert ledger.tables["ingest_batches"].rows == db_count(conn, "ingest_batches", ["sim-A"]) > 0


def test_unknown_simulation_or_experiment(seeded: psycopg.Connection[Any], tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        export(seeded, tmp_path, simulations=["sim-A", "nope"])
    with pytest.raises(NotFound, match="experiment 'nope'"):
        export(seeded, tmp_path, experiment="nope")


def test_cli_export_json_manifest(
    seeded: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "--dsn",
            dsn,
            "--json",
            "export",
            "--simulation",
            "sim-A",
            "--simulation",
            "sim-B",
            "--out",
            str(tmp_path),
            "--format",
            "jsonl",
            "--tables",
            "agent_states,simulation_steps",
            "--from-step",
            "2",
            "--to-step",
            "3",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tables"]["agent_states"]["rows"] == 3 * 2 + 2 * 2
    assert printed["tables"]["simulation_steps"]["rows"] == 4
    assert printed == json.loads((tmp_path / "manifest.json").read_text())


def test_parquet_without_pyarrow_says_how_to_install(
    seeded: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    with pytest.raises(ConfigurationError, match=r"pip install 'sim_schema\[parquet\]'"):
        export(seeded, tmp_path, simulations=["sim-A"], fmt="parquet")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_streams_in_constant_memory(
    conn: psycopg.Connection[Any], tmp_path: Path, fmt: str
) -> None:
    """200k rows (~70 MB as JSONL) exported with a Python heap peak of a few MB (the peak
    does not grow with the row count: measured the same for 100k and 200k rows)."""
    seed(conn, "big", agents=1000, steps=200)
    tracemalloc.start()
    try:
        manifest = export(conn, tmp_path, simulations=["big"], tables=["agent_states"], fmt=fmt)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rec = manifest.tables["agent_states"]
    assert rec.rows == 200_000
    assert peak < 12_000_000, f"peak {peak:,} bytes for {rec.bytes:,} bytes written"
    if fmt != "parquet":  # (Parquet compresses; the CSV and JSONL show the data volume)
        assert rec.bytes > 5 * peak


def _decision_ids(conn: psycopg.Connection[Any], where: str, params: tuple[Any, ...]) -> set[str]:
    rows = conn.execute("SELECT decision_id::text FROM agent_decisions WHERE " + where, params)
    return {r[0] for r in rows}


def test_export_decisions_filters(seeded: psycopg.Connection[Any], tmp_path: Path) -> None:
    conn = seeded
    cases: list[tuple[dict[str, Any], str, tuple[Any, ...]]] = [
        ({}, "true", ()),
        ({"simulations": ["sim-A"]}, "simulation_id = 'sim-A'", ()),
        ({"experiment": "exp-1"}, "simulation_id IN ('sim-A', 'sim-B')", ()),
        ({"simulations": ["sim-A", "sim-C"], "agents": ["a1", "a2"]},
         "simulation_id IN ('sim-A', 'sim-C') AND agent_id IN ('a1', 'a2')", ()),
        ({"rated_only": True}, "rating IS NOT NULL", ()),
        ({"min_rating": 2.0, "experiment": "exp-1"},
         "rating >= 2 AND simulation_id IN ('sim-A', 'sim-B')", ()),
    ]  # fmt: skip
    for i, (filters, where, params) in enumerate(cases):
        out = tmp_path / f"d{i}.jsonl"
        rec = export_decisions(conn, out, **filters)
        lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        want = _decision_ids(conn, where, params)
        assert want, filters
        assert {d["decision_id"] for d in lines} == want, filters
        assert rec.rows == len(lines) == len(want)
        assert all(list(d) == list(DECISION_COLUMNS) for d in lines)
    full = json.loads((tmp_path / "d1.jsonl").read_text().splitlines()[0])
    assert full["prompt"] == "prompt " + TRICKY
    assert full["context"]["txt"] == TRICKY  # nested JSON, not a string
    assert full["event_id"] is not None and isinstance(full["processing_time"], (int, float))


def test_cli_export_decisions(
    seeded: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train.jsonl"
    code = cli.main(
        [
            "--dsn",
            dsn,
            "export-decisions",
            "--out",
            str(out),
            "--experiment",
            "exp-1",
            "--agent",
            "a1",
            "--rated-only",
            "--min-rating",
            "1",
        ]
    )
    assert code == 0
    want = _decision_ids(
        seeded, "simulation_id IN ('sim-A','sim-B') AND agent_id = 'a1' AND rating >= 1", ()
    )
    got = {json.loads(line)["decision_id"] for line in out.read_text().splitlines()}
    assert got == want and want
    assert f"{len(want):,} decisions" in capsys.readouterr().out


def test_progress_bar_only_on_a_terminal() -> None:
    import io

    quiet = io.StringIO()
    with Progress("agent_states", 10, stream=quiet) as bar:
        bar.advance(10)
    assert quiet.getvalue() == ""  # StringIO is not a TTY

    shown = io.StringIO()
    with Progress("agent_states", 1000, stream=shown, enabled=True) as bar:
        bar.advance(500)
    assert "agent_states: 500/1,000 rows  50%" in shown.getvalue()
    assert shown.getvalue().endswith("\n")


def test_output_that_exists_is_refused_unless_overwrite(
    seeded: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    first = export(seeded, out, simulations=["sim-A"])
    with pytest.raises(OutputError, match=f"output directory {out} is not empty.*--overwrite"):
        export(seeded, out, simulations=["sim-A"])
    assert Manifest.read(out).exported_at == first.exported_at  # the files were not touched
    again = export(seeded, out, simulations=["sim-A"], overwrite=True)
    assert again.tables.keys() == first.tables.keys()
    assert {t: r.sha256 for t, r in again.tables.items()} == {
        t: r.sha256 for t, r in first.tables.items()
    }
    capsys.readouterr()
    base = ["--dsn", dsn, "export", "--simulation", "sim-A", "--out", str(out)]
    assert cli.main(base) == 9
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and "--overwrite" in err
    assert cli.main([*base, "--overwrite"]) == 0
    decisions = tmp_path / "d.jsonl"
    export_decisions(seeded, decisions)
    with pytest.raises(OutputError, match="d.jsonl exists"):
        export_decisions(seeded, decisions)
    export_decisions(seeded, decisions, overwrite=True)
    assert cli.main(["--dsn", dsn, "export-decisions", "--out", str(decisions)]) == 9


def test_a_file_that_cannot_be_written_is_one_line_naming_it(
    seeded: psycopg.Connection[Any], dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match=f"cannot create output directory {blocker / 'x'}"):
        export(seeded, blocker / "x", simulations=["sim-A"])
    with pytest.raises(OutputError, match=f"cannot create directory {blocker}"):
        export_decisions(seeded, blocker / "d.jsonl")
    capsys.readouterr()
    code = cli.main(["--dsn", dsn, "archive", "--simulation", "sim-A", "--out",
                     str(blocker / "x"), "--yes"])
    err = capsys.readouterr().err
    assert code == 9 and err.count("\n") == 1 and "cannot create output directory" in err
    assert seeded.execute("SELECT count(*) FROM simulations WHERE simulation_id = 'sim-A'"
                          ).fetchone() == (1,)  # nothing deleted
    assert not list(tmp_path.rglob("*.part"))
