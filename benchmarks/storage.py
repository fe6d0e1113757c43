"""Storage per (agent state + its action): the predecessor's SQLite tables against this
schema before (version 5) and after (the current schema), on the same rows.

The predecessor (seed 001, AgentFarm): `AgentStates` (text id "agent_id-step_number"
as primary key, indexes on agent_id and step_number) and `AgentActions` (integer
action_id, text state ids, indexes on step_number, agent_id and action_type), built with
exactly those tables and indexes, one SQLite file per simulation as the predecessor
writes them. The "with a small JSON extra per state" variant adds an `extras` JSON text
column to AgentStates (jsonb `extras` here). Ours is loaded by the module's bulk writer
(after) or by COPY (before, the version-5 tables), then VACUUM ANALYZE.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from sim_schema import BulkWriter, CopyBatch

from . import data, server
from .contenders import column_bytes, psycopg_copy
from .server import SCHEMA, connect

_SQLITE_TABLES = """
CREATE TABLE agent_states (
    id VARCHAR(128) PRIMARY KEY, step_number INTEGER, agent_id VARCHAR(64),
    position_x FLOAT, position_y FLOAT, position_z FLOAT, resource_level FLOAT,
    current_health FLOAT, is_defending BOOLEAN, total_reward FLOAT, age INTEGER{extras}
);
CREATE INDEX idx_agent_states_agent_id ON agent_states (agent_id);
CREATE INDEX idx_agent_states_step_number ON agent_states (step_number);
CREATE TABLE agent_actions (
    action_id INTEGER PRIMARY KEY, step_number INTEGER, agent_id VARCHAR(64),
    action_type VARCHAR(20), action_target_id VARCHAR(64), state_before_id VARCHAR(128),
    state_after_id VARCHAR(128), resources_before FLOAT, resources_after FLOAT,
    reward FLOAT, details VARCHAR(1024)
);
CREATE INDEX idx_agent_actions_step_number ON agent_actions (step_number);
CREATE INDEX idx_agent_actions_agent_id ON agent_actions (agent_id);
CREATE INDEX idx_agent_actions_action_type ON agent_actions (action_type);
"""


def _sqlite_bytes(
    path: Path, states: Sequence[Any], actions: Sequence[Any], extras: bool
) -> tuple[int, int]:
    """One simulation's rows in the predecessor's tables; the file's size as written and
    after VACUUM (which rebuilds the indexes filled)."""
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(_SQLITE_TABLES.format(extras=", extras JSON" if extras else ""))
        db.executemany(
            f"INSERT INTO agent_states VALUES ({', '.join('?' * (12 if extras else 11))})",
            (
                (f"{r[2]}-{r[1]}", r[1], r[2], *r[3:11], *([json.dumps(r[14])] if extras else []))
                for r in states
            ),
        )
        db.executemany(
            "INSERT INTO agent_actions (step_number, agent_id, action_type, action_target_id,"
            " state_before_id, state_after_id, resources_before, resources_after, reward,"
            " details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    a[1],
                    a[2],
                    a[4],
                    a[5],
                    f"{a[2]}-{a[6]}",
                    f"{a[2]}-{a[7]}",
                    *a[8:11],
                    json.dumps(a[11]),
                )
                for a in actions
            ),
        )
    size = path.stat().st_size
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
    vacuumed = path.stat().st_size
    path.unlink()
    return size, vacuumed


def _relations(dsn: str, tables: Sequence[str]) -> dict[str, int]:
    """Bytes of each table's heap, each of its indexes and its TOAST table."""
    out: dict[str, int] = {}
    with connect(dsn) as c:
        for t in tables:
            row = c.execute(
                "SELECT pg_relation_size(c.oid),"
                " COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0)"
                " FROM pg_class c WHERE c.oid = to_regclass(%s)",
                (t,),
            ).fetchone()
            assert row is not None
            out[f"{t} heap"], out[f"{t} toast"] = int(row[0]), int(row[1])
            for name, size in c.execute(
                "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index"
                " WHERE indrelid = to_regclass(%s) ORDER BY 1",
                (t,),
            ):
                out[f"{name} (index)"] = int(size)
    return out


def _load_before(dsn: str, states: Sequence[Any], actions: Sequence[Any]) -> None:
    psycopg_copy(dsn, states)
    cols = [c for c in data.ACTION_COLUMNS if c != "ordinal"]  # version 5: an action_id
    with connect(dsn) as c, c.transaction():
        copy = sql.SQL("COPY agent_actions ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, cols))
        )
        with c.cursor().copy(copy) as cp:
            for a in actions:
                cp.write_row((*a[:3], *a[4:11], json.dumps(a[11])))


async def _load_after_async(dsn: str, states: Sequence[Any], actions: Sequence[Any]) -> None:
    writer = BulkWriter()
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options=f"-c search_path={SCHEMA}"
    ) as conn:
        for table, rows in (("agent_states", states), ("agent_actions", actions)):
            for start in range(0, len(rows), 50_000):
                part = rows[start : start + 50_000]
                by_sim: dict[str, list[Any]] = {}
                for r in part:
                    by_sim.setdefault(r[0], []).append(r)
                for sim, sim_rows in by_sim.items():
                    await writer.write_many(conn, table, sim, [CopyBatch(uuid.uuid4(), sim_rows)])


def _variant(
    maint: str,
    shape: data.Shape,
    extras: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    states = [
        r if extras else (*r[:14], None)
        for i in range(shape.sims)
        for r in data.iter_states(shape, i)
    ]
    actions = [a for i in range(shape.sims) for a in data.iter_actions(shape, i)]
    n = len(states)
    tmp = Path(tempfile.mkdtemp(prefix="sim_schema_bench_sqlite_"))
    by_sim = {
        s: ([r for r in states if r[0] == s], [a for a in actions if a[0] == s])
        for s in shape.sim_ids()
    }
    files = [_sqlite_bytes(tmp / f"{s}.db", st, ac, extras) for s, (st, ac) in by_sim.items()]
    sqlite = sum(f[0] for f in files)
    out: dict[str, Any] = {
        "states": n,
        "actions": len(actions),
        "sqlite_bytes": sqlite,
        "sqlite_vacuumed_bytes": sum(f[1] for f in files),
    }
    for label, to, load, tables, rollups in (
        ("before", 5, _load_before, ("agent_states", "agent_actions"), ()),
        (
            "after",
            None,
            lambda d, s, a: asyncio.run(_load_after_async(d, s, a)),
            ("agent_states_data", "agent_actions_data"),
            ("population_rollup", "action_rollup"),
        ),
    ):
        with server.fresh_database(maint, f"sim_bench_storage_{label}", to=to) as dsn:
            server.register(dsn, shape.sim_ids(), data.agent_rows(shape))
            load(dsn, states, actions)
            with connect(dsn) as c:
                c.execute("VACUUM ANALYZE")
            parts = _relations(dsn, tables)
            roll = _relations(dsn, rollups) if rollups else {}
            out[label] = {
                "parts": parts,
                "rollups": roll,
                "bytes": sum(parts.values()),
                "bytes_with_rollups": sum(parts.values()) + sum(roll.values()),
                "column_bytes": {t: column_bytes(dsn, t) for t in tables},
            }
        log(
            f"  storage{' with extras' if extras else ''} {label}: "
            f"{out[label]['bytes'] / n:.1f} B per state+action (SQLite {sqlite / n:.1f})"
        )
    return out


def measure(maint: str, shape: data.Shape, log: Callable[[str], None]) -> dict[str, Any]:
    return {
        "shape": vars(shape) | {"rows": shape.rows},
        "plain": _variant(maint, shape, False, log),
        "with_extras": _variant(maint, shape, True, log),
    }
