"""Ingest contenders that are not sim_schema's own: the server's COPY of a binary file
(the ceiling of a schema) and asyncpg, plus the ablations of the ceiling.

Every contender returns the seconds from the first row handed over to the commit of the
last; connection setup is outside the clock. The sim_schema contenders (logger, bulk
writer) live in `ours.py`.

Two schemas are measured side by side: "before", a database migrated to version 5
(`agent_states` a table keyed by text ids, with its foreign key to `agents`), and
"after", the current schema (`agent_states_data` keyed by integers, rollup triggers).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from sim_schema.catalog import spec_of

from .data import STATE_COLUMNS, STATE_TYPES, StateRow
from .server import SCHEMA, connect

BEFORE_TABLE = "agent_states"  # version 5
AFTER_TABLE = "agent_states_data"  # current schema
AFTER_COLUMNS = spec_of("agent_states").target_names  # sim_key, step, agent_key, ...
AFTER_TYPES = ("int4", *STATE_TYPES[1:2], "int4", *STATE_TYPES[3:])


def columns_of(table: str) -> tuple[str, ...]:
    return AFTER_COLUMNS if table == AFTER_TABLE else STATE_COLUMNS


def _copy_sql(table: str, source: sql.Composable) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM {} (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns_of(table))), source
    )


# -- the ceilings -----------------------------------------------------------------------


def _jsonb_wire(value: Any) -> bytes | None:
    return None if value is None else b"\x01" + json.dumps(value).encode()


def psycopg_copy(dsn: str, rows: Sequence[StateRow], table: str = BEFORE_TABLE) -> float:
    """Plain psycopg binary COPY in one transaction (fills a ceiling's file). jsonb goes as
    its binary wire format through the bytea dumper: importing sim_schema replaces the
    jsonb dumper psycopg picks by type (`set_types(["jsonb"])`), see docs/performance.md."""
    types = [
        ("bytea" if t == "jsonb" else t)
        for t in (AFTER_TYPES if table == AFTER_TABLE else STATE_TYPES)
    ]
    json_at = [i for i, t in enumerate(STATE_TYPES) if t == "jsonb"]
    with connect(dsn) as c:
        t0 = time.perf_counter()
        with c.transaction(), c.cursor().copy(_copy_sql(table, sql.SQL("STDIN"))) as cp:
            cp.set_types(types)
            for row in rows:
                cp.write_row([_jsonb_wire(v) if i in json_at else v for i, v in enumerate(row)])
        return time.perf_counter() - t0


def dump_binary(dsn: str, path: Path, table: str) -> None:
    """Write the table's rows to `path` in COPY BINARY format, readable by the server process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)  # the embedded server runs as another OS user when we are root
    copy_out = sql.SQL("COPY {} ({}) TO STDOUT (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns_of(table)))
    )
    with connect(dsn) as c, path.open("wb") as f, c.cursor().copy(copy_out) as cp:
        for chunk in cp:
            f.write(chunk)
    os.chmod(path, 0o644)


def ceiling(dsn: str, path: Path, table: str) -> tuple[float, str]:
    """Server-side COPY FROM the binary file into `table`, with everything the schema
    attaches to it (keys, indexes, foreign keys or triggers); falls back to streaming the
    file when the server cannot read local files. Returns (seconds, mode)."""
    with connect(dsn) as c:
        try:
            t0 = time.perf_counter()
            c.execute(_copy_sql(table, sql.Literal(str(path))))
            return time.perf_counter() - t0, "server file"
        except psycopg.Error:
            pass
        t0 = time.perf_counter()
        with (
            c.transaction(),
            c.cursor().copy(_copy_sql(table, sql.SQL("STDIN"))) as cp,
            path.open("rb") as f,
        ):
            while chunk := f.read(1 << 20):
                cp.write(chunk)
        return time.perf_counter() - t0, "client stream of the file"


# -- asyncpg ----------------------------------------------------------------------------


def _asyncpg_kwargs(dsn: str) -> dict[str, Any]:
    p = conninfo_to_dict(dsn)
    return {
        "host": p.get("host"),
        "port": int(p.get("port") or 5432),
        "user": p.get("user"),
        "password": p.get("password"),
        "database": p.get("dbname"),
        # the schema's trigger functions name their tables unqualified (docs/performance.md)
        "server_settings": {"search_path": SCHEMA},
    }


async def _asyncpg_copy(dsn: str, rows: Sequence[StateRow]) -> float:
    import asyncpg

    conn = await asyncpg.connect(**_asyncpg_kwargs(dsn))
    try:
        await conn.set_type_codec(
            "jsonb",
            schema="pg_catalog",
            encoder=lambda v: b"\x01" + json.dumps(v).encode(),
            decoder=lambda b: json.loads(b[1:]),
            format="binary",
        )
        t0 = time.perf_counter()
        await conn.copy_records_to_table(
            AFTER_TABLE, schema_name=SCHEMA, columns=list(AFTER_COLUMNS), records=rows
        )
        return time.perf_counter() - t0
    finally:
        await conn.close()


def asyncpg_copy(dsn: str, keyed_rows: Sequence[StateRow]) -> float:
    """asyncpg `copy_records_to_table` into agent_states_data, the rows' keys mapped before
    the clock (no check of them: what a raw client that maps ids itself does), jsonb
    through a binary json.dumps codec."""
    return asyncio.run(_asyncpg_copy(dsn, keyed_rows))


# -- what a ceiling pays for ------------------------------------------------------------

# name: (indexes/constraints dropped for the run, triggers skipped: the foreign-key checks
# before, the rollup triggers after)
Ablation = tuple[tuple[str, ...], bool]
ABLATIONS: dict[str, dict[str, Ablation]] = {
    BEFORE_TABLE: {
        "before: as is (FK to agents, pkey, by_agent_idx)": ((), False),
        "before: without FK checks": ((), True),
        "before: without agent_states_by_agent_idx": (("agent_states_by_agent_idx",), False),
        "before: heap only (no FK checks, no index)": (
            ("agent_states_by_agent_idx", "agent_states_pkey"),
            True,
        ),
    },
    AFTER_TABLE: {
        "after: as is (pkey, by_agent_idx, rollup trigger)": ((), False),
        "after: without the rollup trigger": ((), True),
        "after: without agent_states_data_by_agent_idx": (
            ("agent_states_data_by_agent_idx",),
            False,
        ),
        "after: heap only (no trigger, no index)": (
            ("agent_states_data_by_agent_idx", "agent_states_data_pkey"),
            True,
        ),
    },
}


def ceiling_variant(dsn: str, path: Path, table: str, drop: tuple[str, ...], skip: bool) -> float:
    """Server-side COPY of the binary file with some indexes dropped and/or triggers
    skipped (session_replication_role = replica), inside a transaction that is rolled
    back (the schema is left unchanged)."""
    with connect(dsn) as c, c.transaction(force_rollback=True):
        if skip:
            c.execute("SET LOCAL session_replication_role = replica")
        for name in drop:
            if name.endswith("_pkey"):
                c.execute(
                    sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                        sql.Identifier(table), sql.Identifier(name)
                    )
                )
            else:
                c.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        t0 = time.perf_counter()
        c.execute(_copy_sql(table, sql.Literal(str(path))))
        return time.perf_counter() - t0


def column_bytes(dsn: str, table: str) -> dict[str, float]:
    """Average stored bytes per row of each column of `table` (pg_column_size)."""
    with connect(dsn) as c:
        names = [
            r[0]
            for r in c.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (table,),
            )
        ]
        parts = sql.SQL(", ").join(
            sql.SQL("avg(pg_column_size({}))").format(sql.Identifier(n)) for n in names
        )
        row = c.execute(
            sql.SQL("SELECT {}, avg(pg_column_size(t.*)) FROM {} t").format(
                parts, sql.Identifier(table)
            )
        ).fetchone()
    assert row is not None
    return {
        n: round(float(v or 0), 1)
        for n, v in zip([*names, "whole row (incl. 24 B header)"], row, strict=True)
    }
