"""The bulk writer: binary COPY of validated rows into the high-volume tables.

A batch is written in ONE transaction together with its row in the `ingest_batches`
ledger: a replayed batch (the commit succeeded but its acknowledgement was lost) finds its
ledger row and is skipped, so it is never written twice. The ledger row's foreign key
locks the simulation row FOR KEY SHARE, so the simulation cannot be deleted while the
batch is written (its delete waits, then removes the batch's rows too).

The per-step tables of agents are stored with integer keys (`catalog.TableSpec.target`):
the writer maps each row's `simulation_id` and `agent_id` to `sim_key` and `agent_key`
(`keys.AgentKeys`); an unregistered agent is refused with a `ValidationError` naming the
row, and nothing of the transaction is written. Agents get their keys here, reserved in
one statement per batch for the agents not stored yet (registering again reserves none).

Rows that may already be stored (a resumed run logs some rows again) are written with
`check_stored=True`: the stored rows of their keys are read in one query, each logged row
is compared with its stored one, identical ones are skipped (`rows_skipped`), a different
one fails the transaction with `ReplayConflict` naming the key and the column, and only
the new rows are copied. Agents are always written this way, so registering an agent
again (a resumed run does) is a no-op.

Rows are tuples in the table spec's column order, `simulation_id` first, checked by
`values.validate`, which also encodes JSONB values into jsonb's binary wire format. Those
payloads are sent with the C dumper of `bytea` (binary COPY carries no type tag per
field, the server reads each field as its column's type).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat

from ..catalog import Row, TableSpec, spec_of, table
from ..errors import NotFound, ReplayConflict, SimSchemaError, ValidationError
from ..values import VALIDATION_STEP, validate
from .keys import AgentKeys, reserve_agent_keys

# The dumper each column kind is sent with; jsonb payloads are already encoded (above).
WIRE_TYPE: dict[str, str] = {
    "text": "text",
    "int2": "int2",
    "int4": "int4",
    "int8": "int8",
    "float8": "float8",
    "bool": "bool",
    "jsonb": "bytea",
    "uuid": "uuid",
    "text[]": "text[]",
    "timestamptz": "timestamptz",
}
_KEY_WIRE_TYPE = "int4"  # sim_key and agent_key

_LEDGER = (
    "INSERT INTO ingest_batches (simulation_id, batch_id, table_name, row_count)"
    " SELECT %s, b.batch_id, %s, b.row_count FROM unnest(%s::uuid[], %s::int[])"
    " AS b(batch_id, row_count)"
    " ON CONFLICT (simulation_id, batch_id) DO NOTHING"
    " RETURNING batch_id,"
    " (SELECT sim_key FROM simulations WHERE simulation_id = %s FOR KEY SHARE)"
)
# The batches not recorded (`ledger=False`), each with the simulation's key (locked as the
# ledger's foreign key would lock it); NULL keys when the simulation does not exist.
_SIMULATION_KEY = (
    "SELECT b.batch_id, (SELECT sim_key FROM simulations WHERE simulation_id = %s FOR KEY SHARE)"
    " FROM unnest(%s::uuid[]) AS b(batch_id)"
)
_WATERMARK = (
    "UPDATE simulations SET stored_through_step = %s WHERE simulation_id = %s"
    " AND (stored_through_step IS NULL OR stored_through_step < %s)"
)


@dataclass(frozen=True)
class CopyBatch:
    """One batch: its ledger id and its rows, tuples in the table's column order."""

    batch_id: uuid.UUID
    rows: Sequence[Sequence[Any]]
    validated: bool = False  # True: `rows` is what `values.validate` returned (the logger's)


@dataclass(frozen=True)
class _Target:
    """What a batch of one table is copied into, and how a stored row is compared."""

    table: str
    names: tuple[str, ...]  # COPY column list (the spec's, keys mapped, + agent_key)
    types: tuple[str, ...]
    key: tuple[str, ...]  # the primary key, in target names
    key_types: tuple[str, ...]  # their PostgreSQL types
    keeps: frozenset[str]  # NULL in a logged row matches any stored value (replay_keeps)

    @property
    def compared(self) -> list[int]:
        """Positions of the columns a re-logged row must match (not the key's)."""
        return [i for i, n in enumerate(self.names) if n not in self.key and n != "agent_key"]

    def copy_sql(self, into: str) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(into), _idents(self.names)
        )


def _idents(names: Iterable[str], prefix: str | None = None) -> sql.Composed:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


@cache
def _target(name: str) -> _Target:
    spec = spec_of(name)
    t = table(name)
    names, types = spec.target_names, tuple(WIRE_TYPE[c.kind] for c in spec.columns)
    if spec.storage is not None:
        keyed = {spec.storage.column(n) for n in ("simulation_id", "agent_id")}
        types = tuple(
            _KEY_WIRE_TYPE if n in keyed else w for n, w in zip(names, types, strict=True)
        )
    if name == "agents":
        names, types = (*names, "agent_key"), (*types, _KEY_WIRE_TYPE)
    stored = spec.storage
    key = tuple(stored.column(k) for k in t.key) if stored else t.key
    key_types = tuple(
        "integer" if stored and stored.column(k) != k else t.column(k).type for k in t.key
    )
    return _Target(spec.target, names, types, key, key_types, frozenset(t.model.replay_keeps))


class BulkWriter:
    """Writes batches of rows in one transaction, each batch recorded in the ingest ledger.

    Rows are validated while the COPY streams, `VALIDATION_STEP` rows at a time: the
    server loads one step while the next is checked. A ValidationError aborts the COPY and
    rolls the transaction back: nothing of it, nor any ledger row, is committed. `conn`
    must be in autocommit mode (a pool connection), so the transaction here is a real one.
    """

    def __init__(self) -> None:
        self.keys = AgentKeys()
        self.rows_skipped = 0  # rows found already stored, identical (check_stored=True)

    async def write(
        self,
        conn: psycopg.AsyncConnection[Any],
        table: str,
        simulation_id: str,
        batch_id: uuid.UUID,
        rows: Sequence[Sequence[Any]],
    ) -> bool:
        """One batch: True if written now, False if an earlier attempt had committed it."""
        return (await self.write_many(conn, table, simulation_id, [CopyBatch(batch_id, rows)]))[0]

    async def write_many(
        self,
        conn: psycopg.AsyncConnection[Any],
        table: str,
        simulation_id: str,
        batches: Sequence[CopyBatch],
        *,
        timeout: float | None = None,
        check_stored: bool = False,
        stored_through: int | None = None,
        ledger: bool = True,
        before_end: Callable[[], Awaitable[None]] | None = None,
    ) -> list[bool]:
        """Several batches of one table in one transaction (one COPY, one commit).

        Per batch, in order: True if written now, False if an earlier attempt had
        committed it (its rows are skipped). A ValidationError's row index counts from
        the start of its batch. `timeout`: seconds the transaction's statements may take
        (its `statement_timeout`), so that a stalled server cannot hold the caller forever.
        `check_stored`: rows may already be stored (see the module doc; agents always are
        checked). `stored_through`: the simulation's resume watermark to record with the
        batches (`simulations.stored_through_step`, never lowered). `ledger=False`: the
        batches are not recorded in the ingest ledger, for a writer that recognises rows
        written before by their content instead (an importer: `check_stored` on a re-run),
        so that writing them again leaves no trace. `before_end`: awaited once the rows
        are streamed, before the COPY ends (its triggers run) and commits; an error it
        raises rolls the transaction back (a caller writing batches on two connections in
        turn makes each end after the one before has committed). Not with `check_stored`.
        """
        spec = spec_of(table)
        if before_end is not None and (check_stored or table == "agents"):
            raise SimSchemaError("before_end is for batches written without check_stored")
        if len({b.batch_id for b in batches}) != len(batches):
            raise SimSchemaError("two batches of one write_many call share a batch_id")
        target = _target(table)
        learnt: dict[str, int] = {}
        skipped = 0
        async with conn.transaction():
            if timeout is not None:
                await conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)", (f"{timeout * 1000:.0f}",)
                )
            if ledger:
                cur = await conn.execute(
                    _LEDGER,
                    (
                        simulation_id,
                        table,
                        [b.batch_id for b in batches],
                        [len(b.rows) for b in batches],
                        simulation_id,
                    ),
                )
            else:
                unrecorded = [b.batch_id for b in batches]
                cur = await conn.execute(_SIMULATION_KEY, (simulation_id, unrecorded))
            recorded = await cur.fetchall()
            new = {r[0] for r in recorded}
            if new:
                sim_key = recorded[0][1]
                if sim_key is None:  # deleted between the ledger's check and its lock
                    raise NotFound(f"simulation {simulation_id!r} does not exist")
                todo = [b for b in batches if b.batch_id in new]
                rows = _Rows(spec, simulation_id, sim_key, todo)
                if spec.agent_position is not None:
                    p = spec.agent_position
                    ids = {r[p] for b in todo for r in b.rows if len(r) > p}
                    rows.agent_keys = await self.keys.resolve(conn, simulation_id, sim_key, ids)
                if check_stored or table == "agents":
                    skipped, learnt = await _write_checked(conn, target, rows)
                else:
                    await _copy(conn, target, target.table, rows, before_end)
            if stored_through is not None:
                await record_watermark(conn, simulation_id, stored_through)
        if learnt:  # committed: the keys are real now
            self.keys.of(simulation_id, recorded[0][1]).update(learnt)
        self.rows_skipped += skipped
        return [b.batch_id in new for b in batches]


class _Rows:
    """The rows of a transaction's new batches, as the target table takes them."""

    def __init__(
        self, spec: TableSpec, simulation_id: str, sim_key: int, batches: Sequence[CopyBatch]
    ) -> None:
        self.spec = spec
        self.simulation_id = simulation_id
        self.sim_key = sim_key
        self.batches = batches
        self.agent_keys: Mapping[str, int] = {}

    def __iter__(self) -> Iterator[Row]:
        spec, simulation_id = self.spec, self.simulation_id
        for b in self.batches:
            steps: Iterable[Sequence[Any]] = (
                [b.rows] if b.validated else _validated_steps(spec.name, simulation_id, b.rows)
            )
            start = 0
            for ready in steps:
                yield from self._stored(ready, start)
                start += len(ready)

    def _stored(self, rows: Sequence[Any], start: int) -> Iterator[Row]:
        spec = self.spec
        if spec.name == "agents":  # a placeholder key: `_write_checked` reserves the real ones
            for r in rows:
                yield (*r, None)
            return
        if spec.storage is None:
            yield from rows
            return
        sim_key, p = self.sim_key, spec.agent_position
        if p is None:
            for r in rows:
                yield (sim_key, *r[1:])
            return
        keys = self.agent_keys
        for i, r in enumerate(rows):
            agent_key = keys.get(r[p])
            if agent_key is None:
                raise ValidationError(
                    spec.name,
                    start + i,
                    "agent_id",
                    f"agent {r[p]!r} is not registered in simulation {self.simulation_id!r}"
                    " (log_agent or register_agent first)",
                )
            yield (sim_key, *r[1:p], agent_key, *r[p + 1 :])


# The dumper `bytes` values get: psycopg's C one. The one registered for the bytea oid, which
# `set_types` picks, is the DB-API `Binary` dumper, a Python call per value (0.7 us a jsonb
# payload); it is replaced on the COPY's own cursor only, not on the caller's connection.
_BYTES_DUMPER = psycopg.adapters.get_dumper(bytes, PyFormat.BINARY)


def set_wire_types(
    cur: psycopg.AsyncCursor[Any], copy: psycopg.AsyncCopy, types: Sequence[str]
) -> None:
    """The binary COPY's column types (`WIRE_TYPE` values), bytea sent by the C dumper."""
    cur.adapters.register_dumper(None, _BYTES_DUMPER)
    copy.set_types(list(types))


async def _copy(
    conn: psycopg.AsyncConnection[Any],
    target: _Target,
    into: str,
    rows: Iterable[Row],
    before_end: Callable[[], Awaitable[None]] | None = None,
) -> None:
    async with conn.cursor() as cur, cur.copy(target.copy_sql(into)) as copy:
        set_wire_types(cur, copy, target.types)
        await write_rows(copy, rows)
        if before_end is not None:
            await before_end()


async def write_rows(copy: psycopg.AsyncCopy, rows: Iterable[Sequence[Any]]) -> None:
    """`rows` formatted into the COPY's buffer, which is sent when full: one await a
    buffer, not one a row (`copy.write_row` awaits each row)."""
    format_row = copy.formatter.write_row
    for r in rows:
        if data := format_row(r):
            await copy.write(data)


async def _write_checked(
    conn: psycopg.AsyncConnection[Any], target: _Target, rows: _Rows
) -> tuple[int, dict[str, int]]:
    """Rows that may be stored already: each is compared with the row stored under its key
    (read in one query), identical ones are skipped, the new ones copied. (The number
    skipped, and for agents the key of each agent id.)"""
    ready = list(rows)
    key_at = [target.names.index(k) for k in target.key]
    keys = [tuple(r[p] for p in key_at) for r in ready]
    stored = await _stored_rows(conn, target, keys)
    fresh: list[Row] = []
    agents = rows.spec.name == "agents"
    if agents:  # keys only for the agents not stored (a replay reserves none)
        count = sum(key not in stored for key in keys)
        next_key = await reserve_agent_keys(conn, rows.simulation_id, count) if count else 0
    for i, (key, row) in enumerate(zip(keys, ready, strict=True)):
        old = stored.get(key)
        if old is None:
            if agents:
                row = ready[i] = (*row[:-1], next_key)
                next_key += 1
            fresh.append(row)
            continue
        for p in target.compared:
            logged = _decoded(target, p, row[p])
            if not (logged is None and target.names[p] in target.keeps) and not _same(
                logged, old[p]
            ):
                raise _conflict(target, rows, key, target.names[p], old[p], logged)
    if fresh:
        await _copy(conn, target, target.table, fresh)
    learnt: dict[str, int] = {}
    if agents:
        at, agent_key = target.names.index("agent_id"), target.names.index("agent_key")
        for key, row in zip(keys, ready, strict=True):
            learnt[row[at]] = (stored.get(key) or row)[agent_key]
    return len(ready) - len(fresh), learnt


async def _stored_rows(
    conn: psycopg.AsyncConnection[Any], target: _Target, keys: list[tuple[Any, ...]]
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The stored rows (in target column order) of these keys, by key."""
    columns = list(zip(*keys, strict=True))
    query = sql.SQL(
        "SELECT {names} FROM {stored} d JOIN unnest({arrays}) AS k({key}) ON {same_key}"
    ).format(
        names=_idents(target.names, "d"),
        stored=sql.Identifier(target.table),
        arrays=sql.SQL(", ").join(
            sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in target.key_types
        ),
        key=_idents(target.key),
        same_key=sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("d", k), sql.Identifier("k", k))
            for k in target.key
        ),
    )
    cur = await conn.execute(query, [list(c) for c in columns])
    key_at = [target.names.index(k) for k in target.key]
    return {tuple(r[p] for p in key_at): r for r in await cur.fetchall()}


def _decoded(target: _Target, position: int, value: Any) -> Any:
    """A logged value as the server returns it (jsonb payloads are sent encoded)."""
    if value is not None and target.types[position] == "bytea":
        return json.loads(bytes(value)[1:])
    return value


def _same(logged: Any, stored: Any) -> bool:
    if logged == stored:
        return True
    if isinstance(logged, float) and isinstance(stored, float):
        return math.isnan(logged) and math.isnan(stored)  # PostgreSQL: NaN = NaN
    if isinstance(logged, list | tuple) and isinstance(stored, list | tuple):
        return list(logged) == list(stored)
    return False


def _conflict(
    target: _Target, rows: _Rows, key: tuple[Any, ...], column: str, stored: Any, logged: Any
) -> ReplayConflict:
    """The conflict found, its key in readable ids."""
    agent_ids = {k: a for a, k in rows.agent_keys.items()}
    readable: dict[str, object] = {}
    for name, value in zip(target.key, key, strict=True):
        if name == "sim_key":
            readable["simulation_id"] = rows.simulation_id
        elif name == "agent_key":
            readable["agent_id"] = agent_ids.get(value, value)
        else:
            readable[name] = value
    return ReplayConflict(rows.spec.name, readable, column, _shown(stored), _shown(logged))


def _shown(value: Any) -> str:
    return "NULL" if value is None else repr(value)


async def record_watermark(
    conn: psycopg.AsyncConnection[Any], simulation_id: str, step: int
) -> None:
    """Record that every row of the simulation's steps up to `step` is stored (never lowers
    the recorded step; `ingest.resume`)."""
    await conn.execute(_WATERMARK, (step, simulation_id, step))


def _validated_steps(
    table: str, simulation_id: str, rows: Sequence[Sequence[Any]]
) -> Iterator[list[Row]]:
    """`rows` validated `VALIDATION_STEP` rows at a time: the server loads one step while
    the next is checked (4000-row steps measured 0.81x the rows/s of 500-row steps: the
    socket buffer ran dry while a long step was checked)."""
    for start in range(0, len(rows), VALIDATION_STEP):
        step = rows[start : start + VALIDATION_STEP]
        yield validate(table, simulation_id, step, start=start)


async def copy_rows(
    conn: psycopg.AsyncConnection[Any],
    table: str,
    simulation_id: str,
    rows: Iterable[Sequence[Any]],
    *,
    batch_id: uuid.UUID | None = None,
) -> int:
    """Validate and COPY one batch in one transaction; the number of rows written now.

    0 if the batch id was already in the ledger. A ValidationError leaves nothing written.
    """
    batch = rows if isinstance(rows, list) else list(rows)
    written = await BulkWriter().write(conn, table, simulation_id, batch_id or uuid.uuid4(), batch)
    return len(batch) if written else 0
