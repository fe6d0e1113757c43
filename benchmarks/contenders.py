"""Ingest contenders: each loads the same agent-state rows into `sim.agent_states`.

Every contender returns the seconds from the first row handed over to the commit of the
last; connection setup is outside the clock. The sim_schema contenders (logger, bulk
writer) live in `ours.py`, everything else here.
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
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from .data import STATE_COLUMNS, STATE_TYPES, StateRow
from .server import SCHEMA, connect

_COLS = ", ".join(STATE_COLUMNS)
_INSERT = f"INSERT INTO agent_states ({_COLS}) VALUES ({', '.join(['%s'] * len(STATE_COLUMNS))})"
_JSON_AT = [i for i, t in enumerate(STATE_TYPES) if t == "jsonb"]


def _jsonb_params(row: StateRow) -> tuple[Any, ...]:
    return tuple(Jsonb(v) if i in _JSON_AT and v is not None else v for i, v in enumerate(row))


# -- the ceiling ------------------------------------------------------------------------


def psycopg_copy(dsn: str, rows: Sequence[StateRow]) -> float:
    """Plain psycopg binary COPY with set_types in one transaction (a reference point)."""
    with connect(dsn) as c:
        t0 = time.perf_counter()
        with (
            c.transaction(),
            c.cursor().copy(f"COPY agent_states ({_COLS}) FROM STDIN (FORMAT BINARY)") as cp,
        ):
            cp.set_types(list(STATE_TYPES))
            for row in rows:
                cp.write_row(row)
        return time.perf_counter() - t0


def dump_binary(dsn: str, path: Path) -> None:
    """Write the loaded rows to `path` in COPY BINARY format, readable by the server process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)  # the embedded server runs as another OS user when we are root
    copy_out = f"COPY agent_states ({_COLS}) TO STDOUT (FORMAT BINARY)"
    with connect(dsn) as c, path.open("wb") as f, c.cursor().copy(copy_out) as cp:
        for chunk in cp:
            f.write(chunk)
    os.chmod(path, 0o644)


def ceiling(dsn: str, path: Path) -> tuple[float, str]:
    """Server-side COPY FROM the binary file; falls back to streaming it when the server
    cannot read local files (a remote server, no superuser). Returns (seconds, mode)."""
    with connect(dsn) as c:
        try:
            t0 = time.perf_counter()
            c.execute(
                psycopg.sql.SQL("COPY agent_states ({}) FROM {} (FORMAT BINARY)").format(
                    psycopg.sql.SQL(_COLS), psycopg.sql.Literal(str(path))
                )
            )
            return time.perf_counter() - t0, "server file"
        except psycopg.Error:
            pass
        t0 = time.perf_counter()
        with (
            c.transaction(),
            c.cursor().copy(f"COPY agent_states ({_COLS}) FROM STDIN (FORMAT BINARY)") as cp,
            path.open("rb") as f,
        ):
            while chunk := f.read(1 << 20):
                cp.write(chunk)
        return time.perf_counter() - t0, "client stream of the file"


# -- Python alternatives ----------------------------------------------------------------


def _asyncpg_kwargs(dsn: str) -> dict[str, Any]:
    p = conninfo_to_dict(dsn)
    return {
        "host": p.get("host"),
        "port": int(p.get("port") or 5432),
        "user": p.get("user"),
        "password": p.get("password"),
        "database": p.get("dbname"),
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
            "agent_states", schema_name=SCHEMA, columns=list(STATE_COLUMNS), records=rows
        )
        return time.perf_counter() - t0
    finally:
        await conn.close()


def asyncpg_copy(dsn: str, rows: Sequence[StateRow]) -> float:
    """asyncpg `copy_records_to_table` (binary COPY), jsonb through a binary json.dumps codec."""
    return asyncio.run(_asyncpg_copy(dsn, rows))


def executemany_pipeline(dsn: str, rows: Sequence[StateRow]) -> float:
    """psycopg `executemany` of one INSERT per row (psycopg pipelines it), one transaction."""
    with connect(dsn) as c:
        t0 = time.perf_counter()
        with c.transaction(), c.cursor() as cur:
            cur.executemany(_INSERT, [_jsonb_params(r) for r in rows])
        return time.perf_counter() - t0


async def _row_at_a_time(dsn: str, rows: Sequence[StateRow]) -> float:
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options=f"-c search_path={SCHEMA}"
    ) as c:
        t0 = time.perf_counter()
        for row in rows:
            await c.execute(_INSERT, _jsonb_params(row))
        return time.perf_counter() - t0


def row_at_a_time(dsn: str, rows: Sequence[StateRow]) -> float:
    """One awaited INSERT per row in autocommit (what the OneSim predecessor does)."""
    return asyncio.run(_row_at_a_time(dsn, rows))


# -- SQLAlchemy ORM ---------------------------------------------------------------------

SQLA_BATCH = 10_000


def _sqlite_model() -> Any:
    """The SQLite predecessor's AgentStates (seed 001, centralized with simulation_id):
    a text id "agent-step" key, indexes on agent_id, step_number and simulation_id.
    `extras` is added so both stores hold the same data."""
    from sqlalchemy import JSON, Boolean, Column, Float, Index, Integer, String
    from sqlalchemy.orm import declarative_base

    base = declarative_base()

    class AgentStateModel(base):  # type: ignore[misc,valid-type]
        __tablename__ = "agent_states"
        id = Column(String(128), primary_key=True)
        simulation_id = Column(String(64), nullable=False)
        step_number = Column(Integer)
        agent_id = Column(String(64))
        position_x = Column(Float)
        position_y = Column(Float)
        position_z = Column(Float)
        resource_level = Column(Float)
        current_health = Column(Float)
        is_defending = Column(Boolean)
        total_reward = Column(Float)
        age = Column(Integer)
        extras = Column(JSON)
        __table_args__ = (
            Index("idx_agent_states_agent_id", "agent_id"),
            Index("idx_agent_states_step_number", "step_number"),
            Index("idx_agent_states_simulation_id", "simulation_id"),
        )

    return base, AgentStateModel


def sqlalchemy_sqlite(path: Path, rows: Sequence[StateRow]) -> float:
    """SQLAlchemy ORM `bulk_insert_mappings` into a SQLite file, committing every 10k rows."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    if path.exists():
        path.unlink()
    base, model = _sqlite_model()
    engine = create_engine(f"sqlite:///{path}")
    base.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            t0 = time.perf_counter()
            for start in range(0, len(rows), SQLA_BATCH):
                session.bulk_insert_mappings(
                    model,
                    [
                        {
                            "id": f"{r[0]}:{r[2]}-{r[1]}",
                            "simulation_id": r[0],
                            "step_number": r[1],
                            "agent_id": r[2],
                            "position_x": r[3],
                            "position_y": r[4],
                            "position_z": r[5],
                            "resource_level": r[6],
                            "current_health": r[7],
                            "is_defending": r[8],
                            "total_reward": r[9],
                            "age": r[10],
                            "extras": r[14],
                        }
                        for r in rows[start : start + SQLA_BATCH]
                    ],
                )
                session.commit()
            return time.perf_counter() - t0
    finally:
        engine.dispose()


def _pg_model() -> Any:
    from sqlalchemy import Boolean, Column, Float, Integer, Text
    from sqlalchemy.dialects.postgresql import JSONB
    from sqlalchemy.orm import declarative_base

    base = declarative_base()

    class AgentStateRow(base):  # type: ignore[misc,valid-type]
        __tablename__ = "agent_states"
        __table_args__ = {"schema": SCHEMA}  # noqa: RUF012
        simulation_id = Column(Text, primary_key=True)
        step = Column(Integer, primary_key=True)
        agent_id = Column(Text, primary_key=True)
        position_x = Column(Float)
        position_y = Column(Float)
        position_z = Column(Float)
        resource_level = Column(Float)
        health = Column(Float)
        is_defending = Column(Boolean)
        total_reward = Column(Float)
        age = Column(Integer)
        profile = Column(JSONB)
        memory = Column(JSONB)
        relationships = Column(JSONB)
        extras = Column(JSONB)

    return AgentStateRow


def sqlalchemy_postgres(dsn: str, rows: Sequence[StateRow]) -> float:
    """The same ORM approach against our PostgreSQL table (psycopg 3 driver)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import URL
    from sqlalchemy.orm import Session

    p = conninfo_to_dict(dsn)
    url = URL.create(
        "postgresql+psycopg",
        username=p.get("user"),
        password=p.get("password"),
        host=p.get("host"),
        port=int(p.get("port") or 5432),
        database=p.get("dbname"),
    )
    model = _pg_model()
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            t0 = time.perf_counter()
            for start in range(0, len(rows), SQLA_BATCH):
                session.bulk_insert_mappings(
                    model,
                    [
                        dict(zip(STATE_COLUMNS, r, strict=True))
                        for r in rows[start : start + SQLA_BATCH]
                    ],
                )
                session.commit()
            return time.perf_counter() - t0
    finally:
        engine.dispose()


def sqlite_count(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT count(*) FROM agent_states").fetchone()[0])


# -- what the ceiling pays for ----------------------------------------------------------

ABLATIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    # name: (indexes/constraints dropped for the run, FK triggers skipped)
    "as is (FK to agents, pkey, by_agent_idx)": ((), False),
    "without FK checks": ((), True),
    "without agent_states_by_agent_idx": (("agent_states_by_agent_idx",), False),
    "without FK checks and by_agent_idx": (("agent_states_by_agent_idx",), True),
    "heap only (no FK checks, no index)": (
        ("agent_states_by_agent_idx", "agent_states_pkey"),
        True,
    ),
}


def ceiling_variant(dsn: str, path: Path, drop: tuple[str, ...], skip_fk: bool) -> float:
    """Server-side COPY of the binary file with some indexes dropped and/or FK triggers
    skipped, inside a transaction that is rolled back (the schema is left unchanged)."""
    from psycopg import sql

    with connect(dsn) as c, c.transaction(force_rollback=True):
        if skip_fk:
            c.execute("SET LOCAL session_replication_role = replica")
        for name in drop:
            if name.endswith(("_pkey", "_fkey")):
                c.execute(
                    sql.SQL("ALTER TABLE agent_states DROP CONSTRAINT {}").format(
                        sql.Identifier(name)
                    )
                )
            else:
                c.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        t0 = time.perf_counter()
        c.execute(
            sql.SQL("COPY agent_states ({}) FROM {} (FORMAT BINARY)").format(
                sql.SQL(_COLS), sql.Literal(str(path))
            )
        )
        return time.perf_counter() - t0


def column_bytes(dsn: str) -> dict[str, float]:
    """Average stored bytes per row of each agent_states column (pg_column_size)."""
    from psycopg import sql

    parts = sql.SQL(", ").join(
        sql.SQL("avg(pg_column_size({}))").format(sql.Identifier(col)) for col in STATE_COLUMNS
    )
    with connect(dsn) as c:
        row = c.execute(
            sql.SQL(
                "SELECT {}, avg(pg_column_size(t.*)), avg(length(extras::text)) FROM agent_states t"
            ).format(parts)
        ).fetchone()
    assert row is not None
    names = [*STATE_COLUMNS, "whole row (incl. 24 B header)", "extras as JSON text"]
    return {n: round(float(v or 0), 1) for n, v in zip(names, row, strict=True)}
