"""A database never migrated, or behind the code: every API raises one `SchemaNotReady`
naming the schema, the versions missing and `sim-schema migrate`, never a raw
`UndefinedTable`."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sim_schema import (
    ExperimentManager,
    IngestError,
    SchemaNotReady,
    Settings,
    SimulationLogger,
    Store,
    admin,
    check_schema,
    check_schema_async,
    export,
    export_async,
    export_decisions,
    export_decisions_async,
    queries,
    sqllib,
)
from sim_schema import repositories as repo
from sim_schema.migrations.migration import head_version, load_migrations
from sim_schema.migrations.runner import MigrationRunner

HEAD = head_version()
NEVER = (rf"schema 'sim' of this database was never migrated .*versions 0-{HEAD};"
         r" run `sim-schema migrate`")
BEHIND = (rf"schema 'sim' is at version {HEAD - 1}, this code needs version {HEAD}"
          rf" \(missing: {HEAD}\): run `sim-schema migrate`")

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture(params=["never migrated", "one version behind"])
def unready(request: pytest.FixtureRequest, blank_dsn: str) -> tuple[str, str]:
    """(the database, the message its errors must match)."""
    if request.param == "never migrated":
        return blank_dsn, NEVER
    with psycopg.connect(blank_dsn) as conn:
        MigrationRunner(load_migrations(None)).migrate(conn, HEAD - 1)
        conn.execute("INSERT INTO sim.simulations (simulation_id) VALUES ('s')")
        conn.commit()
    return blank_dsn, BEHIND


async def _all(stream: AsyncIterator[Any]) -> list[Any]:
    return [row async for row in stream]


async def test_opening_a_store_says_what_is_missing(unready: tuple[str, str]) -> None:
    dsn, message = unready
    with pytest.raises(SchemaNotReady, match=message):
        await Store(Settings(dsn=dsn)).open()
    if message is NEVER:  # (one version behind, nothing it uses is missing)
        async with Store(Settings(dsn=dsn), check_schema=False) as unchecked:
            with pytest.raises(SchemaNotReady, match=message):
                async with ExperimentManager(unchecked, "e", name="n"):
                    pass
    with pytest.raises(SchemaNotReady, match=message):
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await check_schema_async(conn)
    with psycopg.connect(dsn) as sync, pytest.raises(SchemaNotReady, match=message):
        check_schema(sync)


async def test_every_async_api_says_what_is_missing(unready: tuple[str, str],
                                                    tmp_path: Path) -> None:
    dsn, message = unready
    # What needs the newest version fails on both; the rest only where nothing is there.
    calls: dict[str, Callable[[Conn], Awaitable[Any]]] = {
        "claim_events": lambda c: repo.claim_events(c, "s", worker="w"),
        "list_events": lambda c: repo.list_events(c, "s"),
        "mark_event_processed": lambda c: repo.mark_event_processed(
            c, "s", uuid.uuid4(), worker="w"),
    }
    if message is NEVER:
        calls |= {
            "list_simulations": lambda c: repo.list_simulations(c),
            "create_simulation": lambda c: repo.create_simulation(c, "t"),
            "agent_history": lambda c: _all(queries.agent_history(c, "s", "a")),
            "decision_statistics": lambda c: queries.decision_statistics(c, "s"),
            "latest_agent_state": lambda c: repo.latest_agent_state(c, "s", "a"),
            "export_async": lambda c: export_async(c, tmp_path / "x", simulations=["s"]),
            "export_decisions_async": lambda c: export_decisions_async(c, tmp_path / "d.json"),
            "delete_experiment": lambda c: repo.delete_experiment(c, "e"),
            "archive_simulation_async": lambda c: admin.archive_simulation_async(
                c, "s", tmp_path / "a"),
        }
    async with Store(Settings(dsn=dsn), check_schema=False) as store:
        for name, call in calls.items():
            async with store.connection() as conn:
                with pytest.raises(SchemaNotReady, match=message):
                    await call(conn)
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE, name


async def test_the_logger_reports_it_with_the_rows(blank_dsn: str) -> None:
    async with Store(Settings(dsn=blank_dsn), check_schema=False) as store:
        logger = SimulationLogger(store, "s")
        await logger.log_agent("a", "t")
        with pytest.raises(IngestError) as info:
            await logger.close()
    assert isinstance(info.value.cause, SchemaNotReady)
    assert f"this code needs schema version {HEAD}; run `sim-schema migrate`" in str(info.value)
    assert [r["agent_id"] for r in info.value.rows] == ["a"]  # type: ignore[index]


def test_every_sync_api_says_what_is_missing(blank_dsn: str, tmp_path: Path) -> None:
    """(At the version before, the export and admin functions find what they read.)"""
    dsn, message = blank_dsn, NEVER
    calls: dict[str, Callable[[psycopg.Connection[Any]], Any]] = {
        "export": lambda c: export(c, tmp_path / "x", simulations=["s"]),
        "export_decisions": lambda c: export_decisions(c, tmp_path / "d.csv", fmt="csv"),
        "delete_simulation": lambda c: admin.delete_simulation(c, "s"),
        "row_counts": lambda c: admin.row_counts(c, ["s"]),
        "query": lambda c: sqllib.run_query(c, "agent_latest",
                                            {"simulation_id": "s", "agent_id": "a"}),
    }
    with psycopg.connect(dsn, autocommit=True, options="-c search_path=sim") as conn:
        for name, call in calls.items():
            with pytest.raises(SchemaNotReady, match=message):
                call(conn)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE, name


@pytest.mark.parametrize("argv", [["list"], ["export-decisions", "--out", "d.jsonl"],
                                  ["query", "agent_latest", "--param", "simulation_id=s",
                                   "--param", "agent_id=a"]])
def test_the_cli_says_it_in_one_line(blank_dsn: str, argv: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sim_schema", "--dsn", blank_dsn, *argv],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 7, done.stderr
    [line] = done.stderr.splitlines()
    assert "never migrated" in line and "run `sim-schema migrate`" in line
