"""Shared plumbing of the repositories: column lists, JSON wrapping, typed fetches, errors.

Identifiers come only from model field names and table names written in this package,
never from callers; values are always bound parameters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.rows import class_row

from ..errors import ValidationError
from ..models import Record
from ..paging import Cursor, check_limit, cursor_values
from ..pgerrors import missing, schema_missing, translate
from ..readiness import diagnosed_async
from ..values import param

R = TypeVar("R", bound=Record)

Conn = psycopg.AsyncConnection[Any]
Query = LiteralString | sql.SQL | sql.Composed

def idents(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def columns(model: type[Record]) -> sql.Composed:
    """The model's fields as a column list (what every SELECT and RETURNING reads)."""
    return idents(model.model_fields)


def checked(table: str, **values: Any) -> dict[str, Any]:
    """Named parameters for columns of `table`, each checked by the value rules (None: NULL)."""
    return {name: param(table, name, value) for name, value in values.items()}


def row_values(record: Record, names: Sequence[str]) -> list[Any]:
    """The record's values for `names`, checked and converted by the value rules
    (`sim_schema.values`, the same as the COPY path's) before anything is sent."""
    table = type(record).table
    return [param(table, n, getattr(record, n)) for n in names]


def insert_sql(
    model: type[Record],
    names: Sequence[str],
    *,
    returning: type[Record] | None = None,
    on_conflict: sql.Composable | None = None,
) -> sql.Composed:
    """INSERT INTO <table> (<names>) VALUES (%s, ...) [ON CONFLICT ...] [RETURNING ...]."""
    parts: list[sql.Composable] = [
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(model.table),
            idents(names),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        )
    ]
    if on_conflict is not None:
        parts.append(on_conflict)
    if returning is not None:
        parts.append(sql.SQL("RETURNING {}").format(columns(returning)))
    return sql.SQL(" ").join(parts)


def excluded_set(names: Iterable[str]) -> sql.Composed:
    """`a = EXCLUDED.a, b = EXCLUDED.b` for an upsert's DO UPDATE SET."""
    return sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names
    )


@asynccontextmanager
async def translated(conn: Conn) -> AsyncIterator[None]:
    """Database errors as sim_schema errors that name the key or the field (`pgerrors`);
    a missing relation or column as `SchemaNotReady` naming the versions missing, read on
    `conn` (`readiness`).

    A `ValidationError` from here says row 0: the statement wrote one row, or a batch whose
    rows were checked one by one (with their indexes) before it was sent.
    """
    try:
        yield
    except psycopg.Error as exc:
        if schema_missing(exc):
            raise await diagnosed_async(conn, exc, None) from None
        error = translate(exc)
        if error is None:
            raise
        raise error from None
    except UnicodeEncodeError as exc:  # a filter argument the value rules did not see
        why = f"a lone surrogate ({exc.object[exc.start : exc.end]!r}) cannot be sent as UTF-8"
        raise ValidationError("?", 0, "?", why) from None


async def fetch_one(conn: Conn, model: type[R], query: Query, params: Params) -> R | None:
    async with translated(conn), conn.cursor(row_factory=class_row(model)) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def fetch_all(conn: Conn, model: type[R], query: Query, params: Params) -> list[R]:
    async with translated(conn), conn.cursor(row_factory=class_row(model)) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def execute(conn: Conn, query: Query, params: Params) -> int:
    """Run a statement; the number of rows it touched."""
    async with translated(conn):
        cur = await conn.execute(query, params)
        return cur.rowcount


def upsert_clause(keys: Sequence[str], names: Sequence[str]) -> sql.Composed:
    """ON CONFLICT (<keys>) DO UPDATE SET every other column of `names` to the new value."""
    return sql.SQL("ON CONFLICT ({}) DO UPDATE SET {}").format(
        idents(keys), excluded_set([n for n in names if n not in keys])
    )


async def insert_record(
    conn: Conn,
    record: Record,
    returning: type[R],
    *,
    generated: str | None = None,
    on_conflict: sql.Composable | None = None,
) -> R | None:
    """Insert one record; `generated` names an identity column left to the server when None."""
    names = [
        n for n in type(record).model_fields if not (n == generated and getattr(record, n) is None)
    ]
    query = insert_sql(type(record), names, returning=returning, on_conflict=on_conflict)
    return await fetch_one(conn, returning, query, row_values(record, names))


Column = Callable[[str], sql.Composable]  # a column's name -> its SQL in a query


def order_by(order: Sequence[str], column: Column = sql.Identifier) -> sql.Composed:
    """`ORDER BY` list of `order`: column names, a leading `-` for descending."""
    return sql.SQL(", ").join(
        sql.SQL("{} DESC").format(column(c[1:])) if c.startswith("-") else column(c)
        for c in order
    )


def after_condition(
    order: Sequence[str], after: Cursor, column: Column = sql.Identifier
) -> tuple[sql.Composed, list[Any]]:
    """The keyset condition "comes after `after` in `order`", and its parameters.

    The order must be total (its last columns a key) over NOT NULL columns, so every row
    has one place and a page never repeats or skips a row, whatever is written meanwhile.
    The first column's bound is repeated on its own (`step >= 5 AND (step, agent_id) >
    (5, 'a9')`): when the columns come from two tables, only that part reaches an index.
    """
    names = [c.lstrip("-") for c in order]
    values = cursor_values(order, after)
    first = column(names[0])
    bound = sql.SQL("{} <= %s" if order[0].startswith("-") else "{} >= %s").format(first)
    if not any(c.startswith("-") for c in order):
        row = sql.SQL("({}) > ({})").format(
            sql.SQL(", ").join(map(column, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        )
        return sql.SQL("{} AND {}").format(bound, row), [values[0], *values]
    # Mixed directions: (a < v0) OR (a = v0 AND b > v1) OR ...
    terms: list[sql.Composable] = []
    params: list[Any] = [values[0]]
    for i, name in enumerate(order):
        parts = [sql.SQL("{} = %s").format(column(n)) for n in names[:i]]
        op = sql.SQL("<" if name.startswith("-") else ">")
        parts.append(sql.SQL("{} {} %s").format(column(names[i]), op))
        terms.append(sql.SQL("({})").format(sql.SQL(" AND ").join(parts)))
        params.extend(values[: i + 1])
    return sql.SQL("{} AND ({})").format(bound, sql.SQL(" OR ").join(terms)), params


async def select_rows(
    conn: Conn,
    model: type[R],
    filters: dict[str, Any],
    *,
    order: Sequence[str],
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
    extra: LiteralString | None = None,
    extra_params: Sequence[Any] = (),
) -> list[R]:
    """Rows whose columns equal the non-None `filters`, steps within [start, end], in
    `order` (see `order_by`); at most `limit`, those after the row `after` (keyset paging).

    `extra` is one more condition, with `extra_params` for its placeholders.
    """
    query, params = select_query(
        model, filters, order=order, start_step=start_step, end_step=end_step, limit=limit,
        after=after, extra=extra, extra_params=extra_params,
    )  # fmt: skip
    return await fetch_all(conn, model, query, params)


def _source(model: type[Record], filters: dict[str, Any]) -> tuple[
    sql.Composable, sql.Composable, list[sql.Composable], list[Any], Column
]:
    """(select list, FROM clause, leading conditions, their parameters, column SQL).

    A stored table (`models.Storage`) is read from its `_data` table, not through its
    view, with the simulation's `sim_key` looked up once (an InitPlan, a constant to the
    planner): the primary-key scan then comes in (step, ...) order and a page with a
    LIMIT stops after its rows. Through the view, the simulation is the outer side of a
    join whose order the planner does not carry, so every page read the whole
    simulation and sorted it (measured on 1M agent states: 460 ms for the first page of
    10,000 instead of 15 ms, docs/performance.md).
    """
    storage = model.stored
    if storage is None:
        return columns(model), sql.Identifier(model.table), [], [], sql.Identifier
    simulation_id = filters.pop("simulation_id")
    by_agent = storage.column("agent_id") != "agent_id"

    def column(name: str) -> sql.Composable:
        if by_agent and name == "agent_id":
            return sql.Identifier("a", "agent_id")
        return sql.Identifier("d", storage.column(name))

    fields = [
        sql.SQL("%s::text AS simulation_id") if n == "simulation_id" else column(n)
        for n in model.model_fields
    ]
    source: sql.Composable = sql.SQL("{} d").format(sql.Identifier(storage.table))
    params = [simulation_id]
    if by_agent:
        source = sql.SQL("{} JOIN agents a ON a.simulation_id = %s AND a.agent_key = d.agent_key"
                         ).format(source)
        params.append(simulation_id)
    key = sql.SQL("d.sim_key = (SELECT sim_key FROM simulations WHERE simulation_id = %s)")
    return sql.SQL(", ").join(fields), source, [key], [*params, simulation_id], column


def select_query(
    model: type[Record],
    filters: dict[str, Any],
    *,
    order: Sequence[str],
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
    extra: LiteralString | None = None,
    extra_params: Sequence[Any] = (),
) -> tuple[sql.Composed, list[Any]]:
    """The statement and parameters of `select_rows`.

    The WHERE clause holds only the filters given, so each shape gets its own plan and the
    indexes stay usable (an ``(%s IS NULL OR col = %s)`` generic plan could not use them).
    """
    check_limit(limit)
    given = {k: v for k, v in filters.items() if v is not None}
    fields, source, conditions, params, column = _source(model, given)
    for name, value in given.items():
        conditions.append(sql.SQL("{} = %s").format(column(name)))
        params.append(value)
    if start_step is not None:
        conditions.append(sql.SQL("{} >= %s").format(column("step")))
        params.append(start_step)
    if end_step is not None:
        conditions.append(sql.SQL("{} <= %s").format(column("step")))
        params.append(end_step)
    if extra is not None:
        if model.stored is not None:
            raise TypeError("extra conditions name plain columns: not for a stored table")
        conditions.append(sql.SQL(extra))
        params.extend(extra_params)
    if after is not None:
        condition, values = after_condition(order, after, column)
        conditions.append(condition)
        params.extend(values)
    query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
        fields,
        source,
        sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"),
        order_by(order, column),
    )
    if limit is not None:
        query += sql.SQL(" LIMIT %s")
        params.append(limit)
    return query, params


def _stored_upsert_sql(model: type[Record]) -> sql.Composed:
    """An upsert into the table behind a stored view, its ids mapped to keys in the same
    statement (the simulation row locked FOR KEY SHARE: it cannot be deleted meanwhile).
    Parameters: the non-id values in field order, then agent_id (if mapped), then
    simulation_id. It returns one row, or none when the simulation or agent is missing."""
    storage = model.stored
    assert storage is not None
    names = list(model.model_fields)
    by_agent = storage.column("agent_id") != "agent_id"
    values = [
        sql.SQL("s.sim_key")
        if n == "simulation_id"
        else sql.SQL("a.agent_key")
        if n == "agent_id" and by_agent
        else sql.Placeholder()
        for n in names
    ]
    join = (
        sql.SQL(" JOIN agents a ON a.simulation_id = s.simulation_id AND a.agent_id = %s")
        if by_agent
        else sql.SQL("")
    )
    keys = [storage.column(k) for k in model.key]
    return sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT {values} FROM simulations s{join}"
        " WHERE s.simulation_id = %s FOR KEY SHARE OF s {upsert} RETURNING 1"
    ).format(
        table=sql.Identifier(storage.table),
        columns=idents(storage.column(n) for n in names),
        values=sql.SQL(", ").join(values),
        join=join,
        upsert=upsert_clause(keys, [storage.column(n) for n in names]),
    )


_STORED_UPSERTS: dict[type[Record], sql.Composed] = {}


async def upsert_stored(conn: Conn, record: Record) -> None:
    """Write a record of a stored table (`models.Storage`), replacing the row of its key;
    `NotFound` naming the simulation or agent when either is missing."""
    model = type(record)
    query = _STORED_UPSERTS.get(model)
    if query is None:
        query = _STORED_UPSERTS[model] = _stored_upsert_sql(model)
    by_agent = "agent_id" in model.model_fields
    ids = ["simulation_id", "agent_id"] if by_agent else ["simulation_id"]
    values = row_values(record, [n for n in model.model_fields if n not in ids])
    key = row_values(record, ids)
    async with translated(conn):
        cur = await conn.execute(query, [*values, *key[::-1]])
        if cur.rowcount:
            return
        found = await conn.execute("SELECT 1 FROM simulations WHERE simulation_id = %s", key[:1])
        if await found.fetchone() is None:
            raise missing("simulations", "simulation_id", key[0])
    raise missing("agents", "simulation_id, agent_id", ", ".join(key))
