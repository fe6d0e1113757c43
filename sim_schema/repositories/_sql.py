"""Shared plumbing of the repositories: column lists, JSON wrapping, typed fetches, errors.

Identifiers come only from model field names and table names written in this package,
never from callers; values are always bound parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.abc import Params
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from ..errors import AlreadyExists, DatabaseTimeout, NotFound, ValidationError
from ..models import Record
from ..values import nul_in_json

R = TypeVar("R", bound=Record)

Conn = psycopg.AsyncConnection[Any]
Query = LiteralString | sql.SQL | sql.Composed

# What an entity is called in messages, by the table a foreign key points at.
_ENTITY = {
    "experiments": "experiment",
    "simulations": "simulation",
    "agents": "agent",
    "events": "event",
}
_FK_DETAIL = re.compile(
    r'Key \((?P<cols>.+?)\)=\((?P<vals>.*)\) is not present in table "(?P<table>[^"]+)"'
)


def idents(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def columns(model: type[Record]) -> sql.Composed:
    """The model's fields as a column list (what every SELECT and RETURNING reads)."""
    return idents(model.model_fields)


def json_value(value: Any) -> Any:
    """A JSONB parameter: SQL NULL for None, else the value as JSON."""
    return None if value is None else Jsonb(value)


# Identity columns are bigint; every other integer column of the schema is integer.
_BIGINT_FIELDS = frozenset({"action_id", "experience_id", "incident_id", "interaction_id"})
_INT4, _INT8 = 2**31, 2**63


def row_values(record: Record, names: Sequence[str]) -> list[Any]:
    """The record's values for `names`, JSONB columns wrapped for psycopg.

    Values PostgreSQL cannot store are refused here, naming the field, before anything
    is sent (the COPY writer applies the same rules to its batches).
    """
    json_fields = type(record).json_fields
    values = []
    for n in names:
        value = getattr(record, n)
        problem = _unstorable(n, value, n in json_fields)
        if problem:
            raise ValidationError(type(record).table, 0, n, problem)
        values.append(json_value(value) if n in json_fields else value)
    return values


def _unstorable(name: str, value: Any, is_json: bool) -> str | None:
    if is_json:
        if value is None:
            return None
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            return "NaN and Infinity are not valid JSON"
        except TypeError as exc:
            return f"not JSON-serializable: {exc}"
        return "JSON cannot contain NUL (\\u0000) characters" if nul_in_json(value) else None
    if isinstance(value, str) and "\x00" in value:
        return "text cannot contain NUL (0x00) characters"
    if isinstance(value, int) and not isinstance(value, bool):
        limit = _INT8 if name in _BIGINT_FIELDS else _INT4
        if not -limit <= value < limit:
            return f"{value} is out of range for {'bigint' if limit == _INT8 else 'integer'}"
    return None


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


@contextmanager
def translated() -> Iterator[None]:
    """Turn constraint violations into sim_schema errors that name the key or the field.

    A `ValidationError` from here says row 0: the statement wrote one row, or a batch whose
    rows were checked one by one (with their indexes) before it was sent.
    """
    row = 0
    try:
        yield
    except pg_errors.ForeignKeyViolation as exc:
        raise _not_found(exc) from None
    except pg_errors.CheckViolation as exc:
        diag = exc.diag
        table = diag.table_name or "?"
        constraint = diag.constraint_name or "?"
        field = _check_field(table, constraint)
        raise ValidationError(
            table, row, field, f"violates check constraint {constraint!r}"
        ) from None
    except pg_errors.NotNullViolation as exc:
        diag = exc.diag
        raise ValidationError(
            diag.table_name or "?", row, diag.column_name or "?", "must not be null"
        ) from None
    except pg_errors.UniqueViolation as exc:
        detail = exc.diag.message_detail or exc.diag.constraint_name or ""
        raise AlreadyExists(f"{exc.diag.table_name}: {detail}".rstrip(": ")) from None
    except (pg_errors.QueryCanceled, pg_errors.LockNotAvailable) as exc:
        raise DatabaseTimeout(f"nothing written: {exc.diag.message_primary or exc}") from None
    except psycopg.DataError as exc:
        # Values PostgreSQL cannot store (NUL characters, NaN in JSON, out-of-range
        # numbers), refused by psycopg before sending or by the server. Server errors name
        # the table and column when they can; client-side ones cannot.
        diag = exc.diag
        raise ValidationError(
            diag.table_name or "?",
            row,
            diag.column_name or "?",
            (diag.message_primary or str(exc)).strip(),
        ) from None


def _not_found(exc: pg_errors.ForeignKeyViolation) -> NotFound:
    match = _FK_DETAIL.search(exc.diag.message_detail or "")
    if match is None:
        return NotFound(f"referenced row not found ({exc.diag.constraint_name})")
    entity = _ENTITY.get(match["table"], match["table"])
    cols, vals = match["cols"], match["vals"]
    if "," not in cols:
        return NotFound(f"{entity} {vals!r} not found")
    return NotFound(f"{entity} ({cols})=({vals}) not found")


def _check_field(table: str, constraint: str) -> str:
    """PostgreSQL names a column CHECK `<table>_<column>_check`; a table CHECK has no column."""
    prefix, suffix = f"{table}_", "_check"
    if constraint.startswith(prefix) and constraint.endswith(suffix):
        field = constraint[len(prefix) : -len(suffix)]
        if field:
            return field
    return constraint


async def fetch_one(conn: Conn, model: type[R], query: Query, params: Params) -> R | None:
    with translated():
        async with conn.cursor(row_factory=class_row(model)) as cur:
            await cur.execute(query, params)
            return await cur.fetchone()


async def fetch_all(conn: Conn, model: type[R], query: Query, params: Params) -> list[R]:
    with translated():
        async with conn.cursor(row_factory=class_row(model)) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()


async def execute(conn: Conn, query: Query, params: Params) -> int:
    """Run a statement; the number of rows it touched."""
    with translated():
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


async def select_rows(
    conn: Conn,
    model: type[R],
    filters: dict[str, Any],
    *,
    order: LiteralString,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    extra: LiteralString | None = None,
    extra_params: Sequence[Any] = (),
) -> list[R]:
    """Rows whose columns equal the non-None `filters`, steps within [start, end], in order.

    `extra` is one more literal condition, with `extra_params` for its placeholders.

    The WHERE clause holds only the filters given, so each shape gets its own plan and the
    indexes stay usable (an ``(%s IS NULL OR col = %s)`` generic plan could not use them).
    """
    conditions: list[sql.Composable] = [
        sql.SQL("{} = %s").format(sql.Identifier(k)) for k, v in filters.items() if v is not None
    ]
    params: list[Any] = [v for v in filters.values() if v is not None]
    if start_step is not None:
        conditions.append(sql.SQL("step >= %s"))
        params.append(start_step)
    if end_step is not None:
        conditions.append(sql.SQL("step <= %s"))
        params.append(end_step)
    if extra is not None:
        conditions.append(sql.SQL(extra))
        params.extend(extra_params)
    query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
        columns(model),
        sql.Identifier(model.table),
        sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true"),
        sql.SQL(order),
    )
    if limit is not None:
        query += sql.SQL(" LIMIT %s")
        params.append(limit)
    return await fetch_all(conn, model, query, params)
