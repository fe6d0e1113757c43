"""Rows brought in by the importers, written as the source had them (statuses, times and
feedback included, not through the lifecycle functions), and only once: a row whose key
is stored already is left as it is, so importing again changes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql

from ..catalog import table
from ..errors import SimSchemaError
from ._sql import Conn, idents, translated
from ._sql import checked as _checked


def _insert(table_name: str, names: Sequence[str]) -> sql.Composed:
    t = table(table_name)
    unknown = [n for n in names if n not in t.names]
    if unknown:
        raise SimSchemaError(f"{table_name} has no column {unknown[0]!r}")
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING").format(
        sql.Identifier(table_name),
        idents(names),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
        idents(t.key),
    )


async def insert_if_absent(conn: Conn, table_name: str, values: Mapping[str, Any]) -> bool:
    """Insert one row of `table_name` unless its key is stored; True if it was inserted.
    Every value is checked by the value rules first."""
    params = list(_checked(table_name, **values).values())
    async with translated(conn):
        cur = await conn.execute(_insert(table_name, list(values)), params)
        return cur.rowcount == 1


async def insert_many_if_absent(
    conn: Conn, table_name: str, names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> int:
    """`insert_if_absent` for many rows of the same columns, in one transaction (one
    pipelined round trip); the number inserted."""
    if not rows:
        return 0
    params = [list(_checked(table_name, **dict(zip(names, r, strict=True))).values()) for r in rows]
    query = _insert(table_name, names)
    async with translated(conn), conn.transaction(), conn.cursor() as cur:
        await cur.executemany(query, params)
        return max(cur.rowcount, 0)
