"""Database work written once, performed on a sync or an async connection.

A piece of work is a generator that yields operations (`Query`, `Sleep`, `CopyOut`,
`Stream`) and receives their results; `run` performs them on a `psycopg.Connection`,
`run_async` on a `psycopg.AsyncConnection`. This is how psycopg keeps one protocol
implementation for both worlds, and how every public function that has a sync and an
async form (the migration runner, a migration's `up()`, export, archive, delete) is one
implementation with two thin drivers, never two copies that drift apart.

`borrowed` / `borrowed_async` take a connection someone else owns (the host's, a pool's)
for the duration of such work and hand it back exactly as it was: autocommit flag,
search_path, no transaction open. A connection whose state cannot be restored (a clean-up
statement failed, e.g. after a second cancellation) is closed rather than handed back
half-changed: the server then also releases any session lock it held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from .errors import ConfigurationError, ConnectionFailed

Params = Sequence[Any] | Mapping[str, Any] | None
Statement = LiteralString | sql.SQL | sql.Composed


@dataclass(frozen=True)
class Query:
    """Run a statement; the result is its rows (a list of tuples), or None if it has none.

    `best_effort`: a clean-up step (ROLLBACK, unlock, restore a setting) whose failure is
    ignored so that it never masks the error that made it necessary.
    """

    query: Statement
    params: Params = None
    best_effort: bool = False


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class CopyOut:
    """`COPY (...) TO STDOUT`: each chunk is given to `sink`; the result is the row count."""

    query: Statement
    params: Params
    sink: Callable[[bytes], None]


@dataclass(frozen=True)
class Stream:
    """A server-side cursor read `size` rows at a time: `sink(description, rows)` per batch
    (also once with no rows when the result is empty); the result is the row count.
    Types named in `as_text` are read as their text form (json, jsonb, uuid for Parquet)."""

    query: Statement
    params: Params
    size: int
    sink: Callable[[Sequence[psycopg.Column], list[tuple[Any, ...]]], None]
    as_text: tuple[str, ...] = ()


Op = Query | Sleep | CopyOut | Stream
Work = Generator[Op, Any, Any]


@dataclass
class Session:
    """What a driver learned while performing work: the error of a clean-up step that
    failed (the work went on: its result stands, the connection is not handed back)."""

    cleanup_error: psycopg.Error | None = None


def _params(params: Params) -> Any:
    return params if params else None


def _advance(work: Work, reply: Any, error: BaseException | None) -> tuple[bool, Any]:
    """(True, the next operation) or (False, the work's return value)."""
    try:
        return True, (work.throw(error) if error is not None else work.send(reply))
    except StopIteration as stop:
        return False, stop.value


def run(conn: psycopg.Connection[Any], work: Work, session: Session | None = None) -> Any:
    """Perform `work` on a sync connection; its return value."""
    state = session or Session()
    reply: Any = None
    error: BaseException | None = None
    while True:
        running, op = _advance(work, reply, error)
        if not running:
            return op
        reply, error = None, None
        try:
            reply = _perform(conn, op)
        except BaseException as exc:  # KeyboardInterrupt too: the work's clean-up must run
            if isinstance(op, Query) and op.best_effort and isinstance(exc, psycopg.Error):
                state.cleanup_error = exc
                continue
            error = exc


async def run_async(
    conn: psycopg.AsyncConnection[Any], work: Work, session: Session | None = None
) -> Any:
    """Perform `work` on an async connection; its return value.

    A cancellation is thrown into the work like any error, so its clean-up steps run
    (psycopg has already cancelled the statement on the server and drained its result).
    """
    state = session or Session()
    reply: Any = None
    error: BaseException | None = None
    while True:
        running, op = _advance(work, reply, error)
        if not running:
            return op
        reply, error = None, None
        try:
            reply = await _perform_async(conn, op)
        except BaseException as exc:  # asyncio.CancelledError too
            if isinstance(op, Query) and op.best_effort and isinstance(exc, psycopg.Error):
                state.cleanup_error = exc
                continue
            error = exc


def _perform(conn: psycopg.Connection[Any], op: Op) -> Any:
    if isinstance(op, Query):
        cur = conn.execute(op.query, _params(op.params))
        return cur.fetchall() if cur.description else None
    if isinstance(op, Sleep):
        time.sleep(op.seconds)
        return None
    if isinstance(op, CopyOut):
        with conn.cursor() as cur:
            with cur.copy(op.query, _params(op.params)) as copy:
                for chunk in copy:
                    op.sink(bytes(chunk))
            return cur.rowcount
    with conn.cursor(name="sim_schema_stream") as cur:
        for name in op.as_text:
            cur.adapters.register_loader(name, TextLoader)
        cur.execute(op.query, _params(op.params))
        rows = 0
        description = cur.description or []
        while batch := cur.fetchmany(op.size):
            op.sink(description, batch)
            rows += len(batch)
        if rows == 0:
            op.sink(description, [])
        return rows


async def _perform_async(conn: psycopg.AsyncConnection[Any], op: Op) -> Any:
    if isinstance(op, Query):
        cur = await conn.execute(op.query, _params(op.params))
        return await cur.fetchall() if cur.description else None
    if isinstance(op, Sleep):
        await asyncio.sleep(op.seconds)
        return None
    if isinstance(op, CopyOut):
        async with conn.cursor() as cur:
            async with cur.copy(op.query, _params(op.params)) as copy:
                async for chunk in copy:
                    op.sink(bytes(chunk))
            return cur.rowcount
    async with conn.cursor(name="sim_schema_stream") as cur:
        for name in op.as_text:
            cur.adapters.register_loader(name, TextLoader)
        await cur.execute(op.query, _params(op.params))
        rows = 0
        description = cur.description or []
        while batch := await cur.fetchmany(op.size):
            op.sink(description, batch)
            rows += len(batch)
        if rows == 0:
            op.sink(description, [])
        return rows


def transaction(
    body: Work,
    *,
    begin: LiteralString = "BEGIN",
    schema: str | None = None,
    keep: bool = True,
) -> Work:
    """`body` in one transaction opened by `begin`, with `schema` as its only search path
    when given (until the transaction ends); committed when `body` returns (`keep=False`:
    rolled back, for work that must leave nothing behind), rolled back when it raises,
    cancellation included. The connection must be in autocommit mode (`borrowed` is)."""
    yield Query(begin)
    try:
        if schema is not None:
            yield Query(SET_PATH_SCOPED, (quoted_path(schema), True))
        result = yield from body
        yield Query("COMMIT" if keep else "ROLLBACK")
    except BaseException:
        yield Query("ROLLBACK", best_effort=True)
        raise
    return result


# --- borrowing a connection -----------------------------------------------------------

_IDLE = psycopg.pq.TransactionStatus.IDLE
SHOW_PATH = "SELECT current_setting('search_path')"
SET_PATH = "SELECT set_config('search_path', %s, false)"
SET_PATH_SCOPED = "SELECT set_config('search_path', %s, %s)"  # True: until the transaction ends


def quoted_path(schema: str) -> str:
    """The search_path value that makes `schema` the only schema (pg_catalog is implicit)."""
    return sql.Identifier(schema).as_string()


def _refuse_busy(status: psycopg.pq.TransactionStatus, what: str) -> None:
    if status != _IDLE:
        raise ConfigurationError(
            f"{what} needs an idle connection (no transaction in progress): commit or roll "
            "back first; it opens the transactions it needs itself"
        )


_RESTORE_FAILED = (
    "the work was done, but the connection's settings could not be restored after it; the "
    "connection was closed so that it is not handed back half-changed"
)


@contextmanager
def borrowed(
    conn: psycopg.Connection[Any],
    *,
    what: str,
    search_path: str | None = None,
    session: Session | None = None,
) -> Iterator[psycopg.Connection[Any]]:
    """`conn` in autocommit mode (with `search_path` if given) for the block; then as it was."""
    _refuse_busy(conn.info.transaction_status, what)
    state = session or Session()
    autocommit = conn.autocommit
    previous: tuple[Any, ...] | None = None
    failed = False
    try:
        conn.autocommit = True
        previous = conn.execute(SHOW_PATH).fetchone()
        if search_path is not None:
            conn.execute(SET_PATH, (search_path,))
        yield conn
    except BaseException:
        failed = True
        raise
    finally:
        if not conn.closed:
            cause: BaseException | None = state.cleanup_error
            if cause is None:
                try:
                    if conn.info.transaction_status != _IDLE:
                        conn.rollback()
                    if previous is not None:
                        conn.execute(SET_PATH, (previous[0],))
                    conn.autocommit = autocommit
                except BaseException as exc:
                    cause = exc
            if cause is not None:
                conn.close()
                if not failed:
                    raise ConnectionFailed(_RESTORE_FAILED) from cause


@asynccontextmanager
async def borrowed_async(
    conn: psycopg.AsyncConnection[Any],
    *,
    what: str,
    search_path: str | None = None,
    session: Session | None = None,
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The async form of `borrowed`."""
    _refuse_busy(conn.info.transaction_status, what)
    state = session or Session()
    autocommit = conn.autocommit
    previous: tuple[Any, ...] | None = None
    failed = False
    try:
        await conn.set_autocommit(True)
        previous = await (await conn.execute(SHOW_PATH)).fetchone()
        if search_path is not None:
            await conn.execute(SET_PATH, (search_path,))
        yield conn
    except BaseException:
        failed = True
        raise
    finally:
        if not conn.closed:
            cause: BaseException | None = state.cleanup_error
            if cause is None:
                try:
                    if conn.info.transaction_status != _IDLE:
                        await conn.rollback()
                    if previous is not None:
                        await conn.execute(SET_PATH, (previous[0],))
                    await conn.set_autocommit(autocommit)
                except BaseException as exc:
                    cause = exc
            if cause is not None:
                await conn.close()
                if not failed:
                    raise ConnectionFailed(_RESTORE_FAILED) from cause


def run_borrowed(conn: psycopg.Connection[Any], work: Work, *, what: str) -> Any:
    """`work` performed on a connection borrowed for it (see `borrowed`)."""
    session = Session()
    with borrowed(conn, what=what, session=session):
        return run(conn, work, session)


async def run_borrowed_async(conn: psycopg.AsyncConnection[Any], work: Work, *, what: str) -> Any:
    """`work` performed on an async connection borrowed for it (see `borrowed_async`)."""
    session = Session()
    async with borrowed_async(conn, what=what, session=session):
        return await run_async(conn, work, session)
