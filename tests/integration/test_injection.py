"""SQL injection: metacharacters and quoting tricks are stored as data or refused, never run.

Proof: a canary table and every module table still exist afterwards, and the catalog
(relations, functions, roles) has no object it did not have before.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sim_schema.read import queries
from sim_schema import repositories as repo
from sim_schema.ingest.writer import copy_rows
from sim_schema.errors import ConfigurationError, NotFound, SimSchemaError
from sim_schema.read.export import export, validate_tables
from sim_schema.settings import Settings
from sim_schema.catalog import SPECS
from sim_schema.store import Store

PAYLOADS = [
    "'; DROP TABLE sim.agents; --",
    "x'); DROP TABLE canary; --",
    '"; DROP TABLE canary; --',
    '" OR "1"="1',
    "\\'; DROP TABLE canary; --\\",
    "$$; DROP TABLE canary; $$",
    "$tag$ DROP TABLE canary $tag$",
    "%s",
    "%(x)s",
    "%%s %b %t",
    "{}",
    "\u2019; DROP TABLE canary; --\u2018",  # unicode quotes
    "\u02bc OR 1=1 --",
    "1; SELECT pg_sleep(10)",
    'canary"; CREATE TABLE pwned (x int); --',
]


def _catalog(conn: psycopg.Connection[Any]) -> set[tuple[str, ...]]:
    rels = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    ).fetchall()
    funcs = conn.execute(
        "SELECT n.nspname, p.proname, 'f' FROM pg_proc p JOIN pg_namespace n"
        " ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall()
    roles = conn.execute("SELECT 'role', rolname, '' FROM pg_roles").fetchall()
    schemas = conn.execute("SELECT 'schema', nspname, '' FROM pg_namespace").fetchall()
    return {tuple(r) for r in [*rels, *funcs, *roles, *schemas]}


@pytest.fixture
def guarded(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to a database with a canary; afterwards, nothing may have changed."""
    with psycopg.connect(dsn, autocommit=True, options="-c search_path=sim") as conn:
        conn.execute("CREATE TABLE public.canary (x integer)")
        conn.execute("INSERT INTO public.canary VALUES (42)")
        before = _catalog(conn)
        yield conn
        assert conn.execute("SELECT x FROM public.canary").fetchall() == [(42,)]
        after = _catalog(conn)
        assert after == before, f"new objects: {after - before}, gone: {before - after}"


def _rows_with(table: str, sim: str, text: str) -> list[tuple[Any, ...]]:
    """One row per payload position: every text column (and JSON keys/values) set to it."""
    spec = SPECS[table]
    values: list[Any] = []
    for col in spec.columns:
        if col.name == "simulation_id":
            values.append(sim)
        elif col.name == "agent_id" and table != "agents":
            values.append("a1")
        elif col.name == "event_id" and table != "events":
            values.append(None)  # a decision need not answer an event
        elif col.kind == "text":
            values.append(text)
        elif col.kind == "text[]":
            values.append([text, text])
        elif col.kind == "jsonb":
            values.append({text: text, "k": [text]})
        elif col.kind == "uuid":
            values.append(uuid.uuid4())
        elif col.kind == "bool":
            values.append(False)
        elif col.kind == "float8":
            values.append(1.0)
        else:
            values.append(0)
    return [tuple(values)]


async def test_every_text_field_of_every_bulk_kind_stored_as_data(
    guarded: psycopg.Connection[Any], dsn: str
) -> None:
    async with Store(Settings(dsn=dsn)) as store, store.connection() as conn:
        for n, payload in enumerate(PAYLOADS):
            sim = f"inj-{n}"
            await repo.create_simulation(conn, sim)
            agent = SPECS["agents"].row(sim, {"agent_id": "a1", "agent_type": "t"})
            await copy_rows(conn, "agents", sim, [agent])
            for table in SPECS:
                rows = _rows_with(table, sim, payload)
                assert await copy_rows(conn, table, sim, rows) == 1
                names = SPECS[table].names
                query = sql.SQL("SELECT {} FROM {} WHERE simulation_id = %s").format(
                    sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(table)
                )
                cur = await conn.execute(query, (sim,))
                got = [r for r in await cur.fetchall() if not (table == "agents" and r[1] == "a1")]
                want = [tuple(list(v) if isinstance(v, list) else v for v in r) for r in rows]
                assert [tuple(r) for r in got] == want, (table, payload)


async def test_repository_text_and_filter_arguments_stored_as_data(
    guarded: psycopg.Connection[Any], dsn: str
) -> None:
    async with Store(Settings(dsn=dsn)) as store, store.connection() as conn:
        for n, payload in enumerate(PAYLOADS):
            exp_id, sim_id = f"e{n}{payload}", f"s{n}{payload}"
            exp = await repo.create_experiment(
                conn, exp_id, payload, description=payload, hypothesis=payload,
                tags={payload: payload}, folder_path=payload,
            )  # fmt: skip
            assert (exp.name, exp.description, exp.tags) == (payload, payload, {payload: payload})
            await repo.create_simulation(
                conn, sim_id, experiment_id=exp_id, name=payload, parameters={payload: 1}
            )
            got = await repo.get_simulation(conn, sim_id)
            assert (got.name, got.experiment_id, got.parameters) == (payload, exp_id, {payload: 1})
            # filters: a payload as an id matches nothing and runs nothing
            assert await repo.list_agents(conn, payload) == []
            assert await repo.find_simulation(conn, payload) is None
            assert await repo.list_agents(conn, sim_id, agent_type=payload) == []
            summaries = await queries.simulation_summaries(conn, simulation_ids=[payload, sim_id])
            assert [s.simulation_id for s in summaries] == [sim_id]
            with pytest.raises(NotFound):
                await repo.get_experiment(conn, payload)


async def test_metric_names_in_query_api_refused_not_executed(
    guarded: psycopg.Connection[Any], dsn: str
) -> None:
    async with Store(Settings(dsn=dsn)) as store, store.connection() as conn:
        await repo.create_simulation(conn, "m1")
        for payload in [*PAYLOADS, "total_agents; DROP TABLE canary", 'total_agents"']:
            with pytest.raises(ConfigurationError, match="unknown step metric"):
                async for _ in queries.compare_metric(conn, payload, simulation_ids=["m1"]):
                    pass


def test_schema_name_and_export_tables_refused(
    guarded: psycopg.Connection[Any], tmp_path: Any
) -> None:
    for payload in PAYLOADS:
        with pytest.raises((ConfigurationError, ValueError)):
            Settings(schema_name=payload)
        with pytest.raises(ConfigurationError, match="unknown table"):
            validate_tables([payload])
        with pytest.raises(ConfigurationError):
            export(guarded, tmp_path / "x", tables=["agents", payload])


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIM_SCHEMA_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-m", "sim_schema", *args], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip


CLI_PAYLOADS = [
    "'; DROP TABLE sim.agents; --",
    '"; DROP TABLE public.canary; --',
    "$$; DROP TABLE public.canary; $$",
    "%(x)s",
]


@pytest.mark.slow
@pytest.mark.parametrize("payload", CLI_PAYLOADS)
def test_cli_identifiers_and_filters_refused_or_data(
    payload: str, guarded: psycopg.Connection[Any], dsn: str, tmp_path: Any
) -> None:
    guarded.execute("INSERT INTO simulations (simulation_id) VALUES ('c1')")
    cases = [
        (["--schema", payload, "status"], {2}),
        (["compare", "--simulation", "c1", "--metric", payload], {2}),
        (["final", "--simulation", "c1", "--by-parameter", payload], {0, 2}),
        (["summary", "--simulation", payload], {7}),
        (["agents-over-time", "--simulation", payload], {0, 7}),
        (["query", "agent_lifespans", "--param", f"simulation_id={payload}"], {2, 7}),
        (["export", "--simulation", "c1", "--out", str(tmp_path / "o"), "--tables", payload], {2}),
        (["export", "--simulation", payload, "--out", str(tmp_path / "p")], {7}),
        (["grant-read-only", payload], {2, 7}),
        (["delete-simulation", "--simulation", payload, "--yes"], {7}),
    ]
    for args, codes in cases:
        proc = _cli(dsn, *args)
        assert proc.returncode in codes, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr, args
        if proc.returncode:
            assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
    assert guarded.execute("SELECT count(*) FROM simulations").fetchone() == (1,)


def test_sync_filters_through_sql_library(guarded: psycopg.Connection[Any]) -> None:
    from sim_schema.read.sqllib import load_library, run_query

    guarded.execute("INSERT INTO simulations (simulation_id) VALUES ('q1')")
    for name, query in load_library().items():
        params: dict[str, Any] = {}
        for p in query.parameters:
            if p.endswith("_ids"):
                params[p] = [PAYLOADS[0], "q1"]
            elif p.endswith("step") or p.startswith("step") or p in ("limit", "window"):
                params[p] = 0
            else:
                params[p] = PAYLOADS[0]
        # Runs as data (no rows) or is refused as a bad value; the fixture proves nothing ran.
        with contextlib.suppress(psycopg.DataError, SimSchemaError):
            run_query(guarded, name, params)
