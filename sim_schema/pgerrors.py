"""PostgreSQL errors in the words of this module: the one place that reads SQLSTATEs and
diagnostics and turns them into `sim_schema.errors`.

The bulk writer asks which batch row a key violation is about (`locate_row`); the
repositories, the runner and the CLI ask what an error means (`translate`); the logger asks
whether it is worth retrying (`is_transient`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg

from .errors import (
    AlreadyExists,
    ConnectionFailed,
    DatabaseTimeout,
    NotFound,
    SchemaNotReady,
    SimSchemaError,
    ValidationError,
)
from .migrations.migration import head_version

_KEY_DETAIL = re.compile(
    r"Key \((?P<cols>.+?)\)=\((?P<vals>.*)\) (?:is not present|already exists)"
)
_REFERENCED = re.compile(r'table "(?P<table>[^"]+)"')

# What an entity is called in messages, by the table a foreign key points at.
_ENTITY = {
    "experiments": "experiment",
    "simulations": "simulation",
    "agents": "agent",
    "events": "event",
}


def reason(exc: BaseException) -> str:
    """The first line of an error's message (PostgreSQL's DETAIL/HINT lines are dropped)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_column(table: str, constraint: str) -> str:
    """PostgreSQL names a column CHECK `<table>_<column>_check`; a table CHECK has no column."""
    prefix, suffix = f"{table}_", "_check"
    if constraint.startswith(prefix) and constraint.endswith(suffix):
        return constraint[len(prefix) : -len(suffix)] or constraint
    return constraint or "?"


def translate(exc: psycopg.Error, *, schema: str | None = None) -> SimSchemaError | None:
    """The sim_schema error a database error means, or None when it means nothing specific.

    Violations name the key or the field; a missing relation says the schema is not
    migrated; timeouts say nothing was written; a lost connection is `ConnectionFailed`.
    """
    diag = exc.diag
    if isinstance(exc, pg.ForeignKeyViolation):
        return _not_found(exc)
    if isinstance(exc, pg.CheckViolation):
        table = diag.table_name or "?"
        constraint = diag.constraint_name or "?"
        return ValidationError(
            table, 0, check_column(table, constraint), f"violates check constraint {constraint!r}"
        )
    if isinstance(exc, pg.NotNullViolation):
        return ValidationError(
            diag.table_name or "?", 0, diag.column_name or "?", "must not be null"
        )
    if isinstance(exc, pg.UniqueViolation):
        detail = diag.message_detail or diag.constraint_name or ""
        return AlreadyExists(f"{diag.table_name}: {detail}".rstrip(": "))
    if isinstance(exc, pg.QueryCanceled | pg.LockNotAvailable):
        return DatabaseTimeout(f"nothing written: {diag.message_primary or reason(exc)}")
    if schema_missing(exc):
        where = f"schema {schema!r}" if schema else "the module's schema"
        return SchemaNotReady(
            f"{where} is missing or not fully migrated in this database "
            f"({diag.message_primary or reason(exc)}): this code needs schema version "
            f"{head_version()}; run `sim-schema migrate`"
        )
    if isinstance(exc, psycopg.DataError):
        # Values PostgreSQL cannot store, refused by the server: it names the table and
        # column when it can.
        return ValidationError(
            diag.table_name or "?",
            0,
            diag.column_name or "?",
            (diag.message_primary or reason(exc)).strip(),
        )
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return ConnectionFailed(f"connection lost: {reason(exc)}")
    return None


def schema_missing(exc: BaseException) -> bool:
    """Whether an error says a relation, column or schema of the module is not there: a
    database never migrated, or behind the code."""
    return isinstance(exc, pg.UndefinedTable | pg.InvalidSchemaName | pg.UndefinedColumn)


def _not_found(exc: pg.ForeignKeyViolation) -> NotFound:
    detail = exc.diag.message_detail or ""
    match = _KEY_DETAIL.search(detail)
    found = _REFERENCED.search(detail)
    if match is None or found is None:
        return NotFound(f"referenced row not found ({exc.diag.constraint_name})")
    return missing(found["table"], match["cols"], match["vals"])


def missing(referenced: str, cols: str, vals: str) -> NotFound:
    """`NotFound` for a reference to a row of `referenced` that does not exist, by key."""
    entity = _ENTITY.get(referenced, referenced)
    if "," not in cols:
        return NotFound(f"{entity} {vals!r} not found")
    return NotFound(f"{entity} ({cols})=({vals}) not found")


def locate_row(
    table: str, names: Sequence[str], rows: Sequence[Sequence[Any]], exc: psycopg.Error
) -> ValidationError | None:
    """The batch row a foreign-key, unique or check violation is about, as a ValidationError.

    PostgreSQL names the failing key (`Key (simulation_id, agent_id)=(s1, a9)`); the row is
    found by comparing that text with the batch's values (`names` are the rows' columns).
    """
    diag = exc.diag
    if isinstance(exc, pg.CheckViolation | pg.NotNullViolation):
        column = diag.column_name or check_column(table, diag.constraint_name or "")
        return ValidationError(table, -1, column, f"violates {diag.constraint_name or 'NOT NULL'}")
    match = _KEY_DETAIL.search(diag.message_detail or "")
    if match is None:
        return None
    cols = [n.strip() for n in match["cols"].split(",")]
    if not all(n in names for n in cols):
        return None
    positions = [names.index(n) for n in cols]
    wanted = match["vals"]
    duplicate = isinstance(exc, pg.UniqueViolation)
    # a duplicate within the batch: the later row is the one that conflicts
    order = range(len(rows) - 1, -1, -1) if duplicate else range(len(rows))
    for i in order:
        r = rows[i]
        if ", ".join(str(r[p]) for p in positions) == wanted:
            if isinstance(exc, pg.ForeignKeyViolation):
                found = _REFERENCED.search(diag.message_detail or "")
                where = found["table"] if found else (diag.message_primary or "")
                why = f"({match['cols']})=({wanted}) not found in {where}"
            else:
                why = f"duplicate key ({match['cols']})=({wanted})"
            return ValidationError(table, i, cols[-1], why)
    return None


# SQLSTATEs worth another attempt: the condition passes and the write is idempotent (a
# COPY batch is found in the ingest ledger if it had committed). 53* (insufficient
# resources: disk full, out of memory) and 54* (a program limit, such as an index row too
# large) fail at once: retrying cannot help and would hold the rows of other batches.
_TRANSIENT = frozenset(
    {
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, shutting down)
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout): the batch's transaction rolled back
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether an error of a COPY batch's transaction is worth retrying (by SQLSTATE).

    Connection loss and refusal (no SQLSTATE, or class 08) and the states above are; a
    `ConnectionFailed` from the pool is; everything else (constraint violations, bad
    values, resources exhausted, limits exceeded) is permanent.
    """
    if isinstance(exc, ConnectionFailed):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in _TRANSIENT
