"""`import_onesim` and `sim-schema import onesim`: a OneSim database built from seed 000's
description (tests/predecessors/onesim_schema.py) in a scratch database on the test server,
imported, and read back value by value, column by column.

The expected rows are computed here from the OneSim rows with the mapping the docs state
(trail_id -> simulation_id, initial_profile -> profile, times without a zone as UTC, JSON
text -> jsonb), independently of the importer's own tables.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from helpers import SCHEMA
from onesim_db import OneSimData, onesim_database, sample, write

from sim_schema import ConnectionFailed, Store
from sim_schema.cli import EXIT_CONNECTION, EXIT_ERROR, EXIT_OK, main
from sim_schema.errors import SourceError
from sim_schema.importers.onesim import import_onesim

RENAMED = {"trail_id": "simulation_id", "initial_profile": "profile"}
# OneSim columns with no place here (our created_at of these is the time of the import).
LEFT_OUT = {"agents": {"created_at"}, "agent_states": {"created_at"}}
KEYS = {
    "agents": ("simulation_id", "agent_id"),
    "environment_states": ("simulation_id", "step"),
    "agent_states": ("simulation_id", "step", "agent_id"),
    "events": ("simulation_id", "event_id"),
    "agent_decisions": ("simulation_id", "decision_id"),
}
TRAIL_0 = uuid.UUID(int=0x7A11_0000)
TRAIL_1 = uuid.UUID(int=0x7A11_0001)


def _value(table: str, column: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC)
    if column == "trail_id":
        return str(value)
    if column == "initial_profile" and value is None:
        return {}
    if column == "action" and value is not None:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def expected(data: OneSimData, table: str, trail: uuid.UUID) -> list[dict[str, Any]]:
    """Our rows of `table` for one trail, from the OneSim rows."""
    out = []
    for row in data.rows(table, trail):
        out.append({
            RENAMED.get(c, c): _value(table, c, v) for c, v in row.items()
            if c not in LEFT_OUT.get(table, ())
        })  # fmt: skip
    return sorted(out, key=lambda r: tuple(r[k] for k in KEYS[table]))


def stored(conn: psycopg.Connection[Any], table: str, trail: uuid.UUID,
           columns: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    keys = ", ".join(KEYS[table])
    cur = conn.execute(
        f"SELECT {', '.join(columns)} FROM {table} WHERE simulation_id = %s ORDER BY {keys}",
        (str(trail),),
    )
    return [dict(zip(columns, r, strict=True)) for r in cur]


def check_all(conn: psycopg.Connection[Any], data: OneSimData, trail: uuid.UUID) -> None:
    for table in KEYS:
        want = expected(data, table, trail)
        assert want, table
        got = stored(conn, table, trail, list(want[0]))
        for name in want[0]:
            assert [r[name] for r in got] == [r[name] for r in want], (table, name)


@pytest.fixture
def source(server_dsn: str) -> Iterator[tuple[str, OneSimData]]:
    """A OneSim database holding `sample()`: its DSN and its rows."""
    with onesim_database(server_dsn) as dsn:
        data = sample()
        write(dsn, data)
        yield dsn, data


async def test_values_column_by_column(store: Store, conn: psycopg.Connection[Any],
                                       source: tuple[str, OneSimData]) -> None:  # fmt: skip
    dsn, data = source
    report = await import_onesim(store, dsn, batch_size=4)
    assert sorted(report.simulations) == sorted(
        str(t["trail_id"]) for t in data.rows("trails")
    )
    assert report.experiments == ["harbour", "market"]
    for trail in (TRAIL_0, TRAIL_1):
        check_all(conn, data, trail)
    exp = conn.execute(
        "SELECT name, folder_path, description, tags, status, created_at, metadata"
        " FROM experiments WHERE experiment_id = 'harbour'"
    ).fetchone()
    assert exp == ("Harbour Traffic", "./scenarios/harbour", "ships and quays",
                   {"domain": "ports", "version": "2.1"}, "created",
                   datetime(2024, 4, 30, 9, tzinfo=UTC), {"onesim": {}})  # fmt: skip
    sims = conn.execute(
        "SELECT simulation_id, experiment_id, name, description, parameters, status,"
        " step_count, started_at, ended_at, created_at FROM simulations ORDER BY 1"
    ).fetchall()
    want = []
    for t in sorted(data.rows("trails"), key=lambda t: str(t["trail_id"])):
        want.append((
            str(t["trail_id"]), t["scenario_id"], t["name"], t["description"],
            t["config"] or {}, t["status"].lower(), t["step_count"],
            *(None if t[c] is None else t[c].replace(tzinfo=UTC)
              for c in ("start_time", "end_time", "created_at")),
        ))  # fmt: skip
    assert sims == want
    decisions = report.tables["agent_decisions"]
    assert decisions.defaulted == {"action: not JSON text, kept as a string": 4}
    assert report.tables["agents"].defaulted == {"profile: NULL, {}": 2}
    assert report.tables["agent_states"].skipped["state_id"].startswith("replaced by the key")
    assert report.tables["agents"].mapped["profile"] == "initial_profile"
    assert report.tables["events"].mapped["created_at"] == "created_at (read as UTC)"
    events = report.tables["events"]
    assert (events.rows_read, events.rows_written, events.rows_already_stored) == (12, 12, 0)


def _snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    tables = [*KEYS, "simulations", "experiments", "ingest_batches"]
    return {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}


async def test_reimport_changes_nothing(store: Store, conn: psycopg.Connection[Any],
                                        source: tuple[str, OneSimData]) -> None:  # fmt: skip
    dsn, _ = source
    await import_onesim(store, dsn, batch_size=5)
    before = _snapshot(conn)
    again = await import_onesim(store, dsn, batch_size=3)  # other batches
    assert _snapshot(conn) == before
    assert again.rows_written == 0
    assert again.experiments == []
    assert len(again.simulations_existing) == 3
    for t in KEYS:
        report = again.tables[t]
        assert report.rows_already_stored == report.rows_read > 0, t


@pytest.mark.parametrize(
    ("table", "where", "column", "bad", "good"),
    [
        # a value we cannot store, late in a table written through the bulk writer ...
        ("agent_states", "agent_id = 'skipper-1-2' AND step = 2", "profile",
         '{"mood": "a\\u0000b"}', '{"mood": "late"}'),
        # ... and in one written through the staged COPY
        ("events", "event_id = '00000000-0000-0000-0000-000100000202'", "step", "-2", "2"),
    ],
)  # fmt: skip
async def test_interrupted_import_resumes(
    store: Store, conn: psycopg.Connection[Any], source: tuple[str, OneSimData],
    table: str, where: str, column: str, bad: str, good: str,
) -> None:  # fmt: skip
    dsn, data = source
    with psycopg.connect(dsn, autocommit=True) as src:
        if table == "agent_states":  # PostgreSQL refuses \u0000 in jsonb: OneSim kept text
            src.execute("ALTER TABLE agent_states ALTER profile TYPE text")
        src.execute(f"UPDATE {table} SET {column} = %s WHERE {where}", (bad,))
    with pytest.raises(SourceError) as failed:
        await import_onesim(store, dsn, batch_size=4)
    assert f"table {table}" in str(failed.value) and repr(column) in str(failed.value)
    (partial,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    total = len(data.rows(table))
    assert 0 < partial < total  # batches before the bad one are committed
    with psycopg.connect(dsn, autocommit=True) as src:
        src.execute(f"UPDATE {table} SET {column} = %s WHERE {where}", (good,))
    report = await import_onesim(store, dsn, batch_size=4)
    t = report.tables[table]
    assert (t.rows_already_stored, t.rows_written) == (partial, total - partial)
    changed = next(
        r for r in data.rows(table)
        if r["trail_id"] == TRAIL_1 and r["step"] == 2
        and (r.get("agent_id") == "skipper-1-2" if table == "agent_states"
             else r.get("event_type") == "trade")
    )  # fmt: skip
    changed[column] = json.loads(good)
    check_all(conn, data, TRAIL_1)


@pytest.mark.parametrize(
    ("table", "assignment", "column"),
    [("agent_states", "memory = '{\"seen\": []}'", "memory"),
     ("agent_decisions", "rating = 1.0", "rating")],
)  # fmt: skip
async def test_changed_source_is_refused(store: Store, source: tuple[str, OneSimData],
                                         table: str, assignment: str, column: str) -> None:  # fmt: skip
    dsn, _ = source
    await import_onesim(store, dsn)
    with psycopg.connect(dsn, autocommit=True) as src:
        src.execute(f"UPDATE {table} SET {assignment} WHERE step = 0")
    with pytest.raises(SourceError, match=rf"table {table}: imported before with other values:"
                       rf" .*{column}"):  # fmt: skip
        await import_onesim(store, dsn)


async def test_missing_columns_defaulted(store: Store, conn: psycopg.Connection[Any],
                                         server_dsn: str) -> None:  # fmt: skip
    drop = {"agent_states": {"relationships"}, "events": {"processing_result", "created_at"},
            "agents": {"name"}}  # fmt: skip
    with onesim_database(server_dsn, drop=drop) as dsn:
        data = sample(trails=1)
        for table, columns in drop.items():
            for row in data.rows(table):
                for c in columns:
                    del row[c]
        write(dsn, data)
        report = await import_onesim(store, dsn)
    assert report.tables["agent_states"].defaulted == {
        "relationships: the source has no relationships column, None": 9
    }
    assert report.tables["events"].defaulted == {
        "processing_result: the source has no processing_result column, the table's default": 6,
        "created_at: the source has no created_at column, the table's default": 6,
    }
    assert conn.execute("SELECT DISTINCT relationships FROM agent_states").fetchall() == [(None,)]
    assert conn.execute("SELECT count(*) FROM events WHERE processing_result IS NULL"
                        " AND created_at > now() - interval '1 hour'").fetchone() == (6,)
    assert conn.execute("SELECT DISTINCT name FROM agents").fetchall() == [(None,)]


async def test_selected_trails_into_one_experiment(store: Store, conn: psycopg.Connection[Any],
                                                   source: tuple[str, OneSimData]) -> None:  # fmt: skip
    dsn, data = source
    report = await import_onesim(store, dsn, trail_ids=[str(TRAIL_1)], experiment_id="grouped")
    assert report.simulations == [str(TRAIL_1)]
    assert report.experiments == ["grouped"]
    assert conn.execute("SELECT simulation_id, experiment_id FROM simulations").fetchall() == [
        (str(TRAIL_1), "grouped")
    ]
    check_all(conn, data, TRAIL_1)
    assert conn.execute("SELECT count(*) FROM agent_states WHERE simulation_id = %s",
                        (str(TRAIL_0),)).fetchone() == (0,)  # fmt: skip
    with pytest.raises(SourceError, match="table trails: no trail 00000000-0000-0000-0000-000"):
        await import_onesim(store, dsn, trail_ids=[str(uuid.UUID(int=5))])


async def test_errors_name_the_place(store: Store, server_dsn: str) -> None:
    with onesim_database(server_dsn) as dsn:
        data = sample(trails=1)
        write(dsn, data)
        with psycopg.connect(dsn, autocommit=True) as src:  # ids kept as text by an older OneSim
            src.execute("ALTER TABLE agent_decisions ALTER decision_id TYPE text")
            src.execute("UPDATE agent_decisions SET decision_id = 'd-7' WHERE step = 1")
        with pytest.raises(SourceError) as caught:
            await import_onesim(store, dsn)
    assert str(caught.value).endswith(
        f", table agent_decisions, row (trail_id='{TRAIL_0}', step=1, decision_id='d-7'),"
        " field 'decision_id': 'd-7' is not a UUID"
    )
    assert str(caught.value).startswith("OneSim database (")
    with onesim_database(server_dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as src:
            src.execute("DROP TABLE agent_decisions, events, agent_states, agents,"
                        " environment_states, trails, scenarios")  # fmt: skip
        with pytest.raises(SourceError, match="schema 'public' has no trails table: it holds no"):
            await import_onesim(store, dsn)
    secret = server_dsn + " password=s3cr3t-pw user=nobody_here"
    with pytest.raises(ConnectionFailed) as refused:
        await import_onesim(store, secret)
    assert "s3cr3t-pw" not in str(refused.value)


@pytest.mark.parametrize(
    ("table", "where", "column", "row"),
    [("agent_states", "agent_id = 'skipper-0-1' AND step = 1", "profile",
      f"(trail_id='{TRAIL_0}', step=1, agent_id='skipper-0-1')"),  # the bulk writer's COPY
     ("events", "event_type = 'trade' AND step = 2", "payload",
      f"(trail_id='{TRAIL_0}', step=2, event_id='00000000-0000-0000-0000-000000000202')")],
)  # fmt: skip
async def test_json_the_target_refuses_names_the_row(
    store: Store, conn: psycopg.Connection[Any], server_dsn: str,
    table: str, where: str, column: str, row: str,
) -> None:  # fmt: skip
    """A `json` column (not jsonb) may hold a NUL escape, which jsonb refuses: the JSON text
    is handed on as it is, the server refuses it, and the row and column are named."""
    with onesim_database(server_dsn) as dsn:
        write(dsn, sample(trails=1))
        with psycopg.connect(dsn, autocommit=True) as src:
            src.execute(f"ALTER TABLE {table} ALTER {column} TYPE json")
            src.execute(f"UPDATE {table} SET {column} = %s WHERE {where}",
                        ('{"mood": "a\\u0000b"}',))  # fmt: skip
        with pytest.raises(SourceError) as caught:
            await import_onesim(store, dsn, batch_size=4)
    assert str(caught.value).endswith(
        f", table {table}, row {row}, field '{column}': NUL character (\\u0000) in a JSON"
        " string"
    ), str(caught.value)


def test_cli(dsn: str, conn: psycopg.Connection[Any], source: tuple[str, OneSimData],
             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    onesim, _ = source
    argv = ["--dsn", dsn, "--schema", SCHEMA, "import", "onesim", "--from-dsn", onesim]
    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert "imported 3 simulation(s) from 1 source(s) (0 already present)" in out
    assert "profile <- initial_profile" in out
    assert conn.execute("SELECT count(*) FROM agent_states").fetchone() == (18,)
    again = ["--json", "--dsn", dsn, "--schema", SCHEMA, "import", "onesim", "--from", onesim]
    assert main(again) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert sum(t["rows_written"] for t in report["tables"]) == 0
    assert main([*argv[:-1], onesim + " dbname=no_such_db_here"]) == EXIT_CONNECTION
    assert "no_such_db_here" in capsys.readouterr().err
    assert main([*argv, "--source-schema", "elsewhere"]) == EXIT_ERROR
    assert "schema 'elsewhere' has no trails table" in capsys.readouterr().err
