"""Is the database's schema the one this code needs? One answer, given the same way by
every API: `SchemaNotReady`, naming the schema, the version it is at (or that it was never
migrated), the version the code needs, and `sim-schema migrate`.

`Store.open()` checks once per store (`check_schema_async`: one query on the connection it
opens anyway). Functions that take a connection find out when a statement fails on a
missing relation or column (`pgerrors.schema_missing`); they then read the tracking table
on the same connection to say which versions are missing (`diagnosed`, `diagnosed_async`;
the generic message of `pgerrors.translate` when that read fails too).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from . import ops
from .errors import SchemaNotReady, SimSchemaError
from .migrations.migration import TRACKING_TABLE, head_version, tracking_table
from .names import DEFAULT_SCHEMA
from .pgerrors import schema_missing, translate


def _applied_version(schema: str | None) -> ops.Work:
    """(the schema, the highest version recorded in it or None: never migrated). `schema`
    None: the first schema of the connection's search path."""
    if schema is None:
        rows = yield ops.Query("SELECT current_setting('search_path')")
        schema = rows[0][0].split(",")[0].strip().strip('"')
    found = yield ops.Query("SELECT to_regclass(%s)", (f'"{schema}".{TRACKING_TABLE}',))
    if found[0][0] is None:
        return schema, None
    rows = yield ops.Query(sql.SQL("SELECT max(version) FROM {}").format(tracking_table(schema)))
    return schema, rows[0][0]


def not_ready(schema: str, applied: int | None) -> SchemaNotReady | None:
    """The error for a schema at version `applied` (None: never migrated), or None when it
    is at (or ahead of) the version this code needs."""
    needed = head_version()
    if applied is None:
        return SchemaNotReady(
            f"schema {schema!r} of this database was never migrated (no {schema}."
            f"{TRACKING_TABLE}): this code needs versions 0-{needed}; run `sim-schema migrate`"
        )
    if applied < needed:
        missing = str(needed) if applied + 1 == needed else f"{applied + 1}-{needed}"
        return SchemaNotReady(
            f"schema {schema!r} is at version {applied}, this code needs version {needed}"
            f" (missing: {missing}): run `sim-schema migrate`"
        )
    return None


def _check(schema: str | None) -> ops.Work:
    name, applied = yield from _applied_version(schema)
    return not_ready(name, applied)


def check_schema(conn: psycopg.Connection[Any], schema: str = DEFAULT_SCHEMA) -> None:
    """`SchemaNotReady` unless `schema` is migrated to the version this code needs."""
    error = ops.run_borrowed(conn, _check(schema), what="the schema check")
    if error is not None:
        raise error


async def check_schema_async(
    conn: psycopg.AsyncConnection[Any], schema: str = DEFAULT_SCHEMA
) -> None:
    """`check_schema` from async code."""
    error = await ops.run_borrowed_async(conn, _check(schema), what="the schema check")
    if error is not None:
        raise error


def _explained(exc: psycopg.Error, schema: str | None, state: tuple[str, int | None]) -> Exception:
    return not_ready(*state) or translate(exc, schema=schema) or exc


def diagnosed(conn: psycopg.Connection[Any], exc: psycopg.Error, schema: str | None) -> Exception:
    """What a schema-missing error `exc` means, read on `conn` (idle again after it)."""
    try:
        state = ops.run_borrowed(conn, _applied_version(schema), what="the schema check")
    except (psycopg.Error, SimSchemaError):  # e.g. a transaction the error aborted
        return translate(exc, schema=schema) or exc
    return _explained(exc, schema, state)


async def diagnosed_async(
    conn: psycopg.AsyncConnection[Any], exc: psycopg.Error, schema: str | None
) -> Exception:
    """`diagnosed` on an async connection."""
    try:
        work = _applied_version(schema)
        state = await ops.run_borrowed_async(conn, work, what="the schema check")
    except (psycopg.Error, SimSchemaError):  # e.g. a transaction the error aborted
        return translate(exc, schema=schema) or exc
    return _explained(exc, schema, state)


def run_borrowed(
    conn: psycopg.Connection[Any], work: ops.Work, *, what: str, schema: str | None
) -> Any:
    """`ops.run_borrowed`, a missing relation or column reported as `SchemaNotReady`."""
    try:
        return ops.run_borrowed(conn, work, what=what)
    except psycopg.Error as exc:
        if not schema_missing(exc):
            raise
        raise diagnosed(conn, exc, schema) from None


async def run_borrowed_async(
    conn: psycopg.AsyncConnection[Any], work: ops.Work, *, what: str, schema: str | None
) -> Any:
    """`ops.run_borrowed_async`, a missing relation or column reported as `SchemaNotReady`."""
    try:
        return await ops.run_borrowed_async(conn, work, what=what)
    except psycopg.Error as exc:
        if not schema_missing(exc):
            raise
        raise await diagnosed_async(conn, exc, schema) from None
