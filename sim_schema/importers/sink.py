"""The write side the importers share: source rows, already in a table's COPY column order,
go through the bulk writer (binary COPY, one transaction per batch, values checked while
the COPY streams), and the simulation and experiment rows through `insert_if_absent`.
Tables the bulk writer does not write (environment states, events with their processing
results, agent decisions) take `copy_plain`: the batch is checked by the same value rules
and, in one transaction, copied into the table itself if the simulation held none of its
rows (a table with steps), else into a temporary table and inserted from there unless its
key is stored.

Importing again changes nothing (the importers' batches are not recorded in the ingest
ledger), and an interrupted import resumes: before the first
batch of a (simulation, table) the sink asks whether that simulation holds rows of the
table already (`ingest.resume.stored_steps`). If it does, its batches are written with
the writer's replay check (`check_stored=True`): rows stored identically are skipped,
only the missing ones are copied, and a row stored with other values is refused naming
its key and column. If it does not, the batches are plain COPYs, at the writer's full
speed. Agents are always checked by the writer. Plain COPY batches go on two connections
in turn when the importer has a spare one (`Sink`, `opened_sink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from ..catalog import SPECS, Column, spec_of, table
from ..errors import ConnectionFailed, ReplayConflict, SimSchemaError, SourceError, ValidationError
from ..ingest.resume import stored_steps
from ..ingest.writer import WIRE_TYPE, BulkWriter, CopyBatch, set_wire_types, write_rows
from ..pgerrors import translate
from ..repositories.imported import insert_if_absent, insert_many_if_absent
from ..store import Store
from ..values import JsonbWire, param, validate_columns
from .report import ImportReport, TableReport

T = TypeVar("T")
DEFAULT_BATCH_SIZE = 20_000  # rows per COPY transaction
SPARE_WAIT = 1.0  # seconds an import waits for a second connection, else it writes on one

Conn = psycopg.AsyncConnection[Any]


@contextlib.asynccontextmanager
async def opened_sink(store: Store, report: ImportReport) -> AsyncIterator[Sink]:
    """A `Sink` on a connection of the store's pool, with a spare one if the pool has room
    for a second within `SPARE_WAIT` seconds (else it writes on one). When the block ends,
    however it ends, the batches in flight have ended (committed, or rolled back after a
    failure before them, which is raised)."""
    async with contextlib.AsyncExitStack() as stack:
        conn = await stack.enter_async_context(store.connection())
        spare = None
        if store.pool.max_size >= 2:
            with contextlib.suppress(ConnectionFailed):
                spare = await stack.enter_async_context(store.connection(timeout=SPARE_WAIT))
        sink = Sink(conn, report, spare)
        try:
            yield sink
        except Exception:
            await sink.drain()  # a failure of a batch in flight came first: it is raised
            raise
        except BaseException:  # cancelled: the batches in flight end, the cancellation stays
            with contextlib.suppress(Exception):
                await sink.drain()
            raise
        await sink.drain()


class _Abandoned(Exception):
    """A batch rolled back because the batch before it failed (that failure is raised)."""


@dataclass(frozen=True)
class _InFlight:
    task: asyncio.Task[None]
    conn: Conn
    table: str


class Sink:
    """Writes one import's rows into the database of `conn` (an autocommit connection).

    With a `spare` connection, plain batches (not replay-checked) are written on the two in
    turn: while one batch's COPY ends on the server (its backlog loaded, its rollup triggers
    run) and commits, the next is streamed on the other connection. Each batch ends its
    COPY only after the one before has committed, so the batches committed are always the
    first ones, as with one connection, and no two transactions wait on each other's
    rollup rows. `drain` waits for them (`opened_sink` does at its end).
    """

    def __init__(self, conn: Conn, report: ImportReport, spare: Conn | None = None) -> None:
        self.conn = conn
        self.spare = spare
        self.report = report
        self.writer = BulkWriter()
        self._simulations: set[str] = set()
        self._checked: dict[tuple[str, str], bool] = {}  # (simulation, table) -> replay check
        self._in_flight: list[_InFlight] = []  # oldest first, at most two

    async def drain(self) -> None:
        """Wait for the batches in flight; the first failure among them is raised (the
        batches after it were rolled back)."""
        await self._settle(0)

    async def _settle(self, most: int) -> None:
        """Wait until at most `most` batches are in flight."""
        while len(self._in_flight) > most:
            oldest = self._in_flight.pop(0)
            try:
                await oldest.task
            except BaseException:
                rest, self._in_flight = self._in_flight, []
                # the ones after it end rolled back (or failed on their own, later in order)
                await asyncio.gather(*(f.task for f in rest), return_exceptions=True)
                raise

    async def experiment(self, values: Mapping[str, Any]) -> None:
        """The experiment row, inserted unless its id is stored."""
        await self.drain()
        if await insert_if_absent(self.conn, "experiments", values):
            self.report.experiments.append(values["experiment_id"])

    def begin_source(self, label: str) -> None:
        """The next source (a file) begins: its simulations may hold rows written from the
        source before (the same simulation in two files), so each table is checked again
        before its first batch."""
        self.report.sources.append(label)
        self._checked.clear()

    async def insert_many(
        self, table_name: str, names: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> int:
        """Rows of `names` inserted unless their key is stored (`insert_many_if_absent`);
        the number inserted."""
        await self.drain()
        return await insert_many_if_absent(self.conn, table_name, names, rows)

    async def simulation(self, values: Mapping[str, Any]) -> None:
        """The simulation row, inserted unless its id is stored (once per import)."""
        simulation_id = values["simulation_id"]
        if simulation_id in self._simulations:
            return
        await self.drain()
        self._simulations.add(simulation_id)
        self.report.simulations.append(simulation_id)
        if not await insert_if_absent(self.conn, "simulations", values):
            self.report.simulations_existing.append(simulation_id)

    async def simulation_counted(self, values: Mapping[str, Any], report: TableReport) -> None:
        """`simulation`, counted in `report` as written or as already stored."""
        existing = len(self.report.simulations_existing)
        await self.simulation(values)
        if len(self.report.simulations_existing) > existing:
            report.rows_already_stored += 1
        else:
            report.rows_written += 1

    def has_simulation(self, simulation_id: str) -> bool:
        return simulation_id in self._simulations

    async def _replay_checked(self, simulation_id: str, name: str) -> bool:
        key = (simulation_id, name)
        found = self._checked.get(key)
        if found is None:
            await self.drain()
            _, last_steps = await stored_steps(self.conn, simulation_id)
            found = name == "agents" or last_steps.get(name) is not None
            self._checked[key] = found
        return found

    async def write(
        self,
        report: TableReport,
        simulation_id: str,
        rows: Sequence[Sequence[Any]],
        describe: Callable[[Sequence[Any]], str],
        source_column: Callable[[str], str],
    ) -> None:
        """One batch of `report.table` rows of one simulation, in one transaction.

        A value that cannot be stored, or a row stored before with other values, is a
        `SourceError` naming the source table, the row (`describe`) and the source column.
        With a spare connection the batch may still be in flight when this returns: its
        error is raised by a later call, or by `drain`.
        """
        check = await self._replay_checked(simulation_id, report.table)
        # the source named in errors: the current one now (the task may run after the next
        # source is started)
        batch = (self.report.sources[-1], report, simulation_id, rows, describe, source_column)
        if self.spare is None or check or report.table == "agents":
            await self.drain()
            await self._write(self.conn, *batch, check=check)
            return
        if self._in_flight and self._in_flight[-1].table != report.table:
            await self.drain()  # a table's rows may name agents of the batch before
        await self._settle(1)
        previous = self._in_flight[-1] if self._in_flight else None
        conn = self.spare if previous is not None and previous.conn is self.conn else self.conn

        async def after_previous() -> None:
            if previous is not None:
                try:
                    await previous.task
                except BaseException:
                    raise _Abandoned from None

        task = asyncio.create_task(self._write(conn, *batch, check=False, before=after_previous))
        self._in_flight.append(_InFlight(task, conn, report.table))

    async def _write(
        self,
        conn: Conn,
        source: str,
        report: TableReport,
        simulation_id: str,
        rows: Sequence[Sequence[Any]],
        describe: Callable[[Sequence[Any]], str],
        source_column: Callable[[str], str],
        *,
        check: bool,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        before_skipped = self.writer.rows_skipped  # no other batch in flight when checked
        with self._located(source, report, rows, describe, source_column):
            try:
                await self.writer.write_many(
                    conn,
                    report.table,
                    simulation_id,
                    [CopyBatch(uuid.uuid4(), rows)],
                    check_stored=check,
                    ledger=False,  # a re-run recognises the rows by content: it leaves no trace
                    before_end=before,
                )
            except psycopg.DataError as exc:
                raise _refused_payload(report.table, rows) or translate(exc) or exc from None
        skipped = self.writer.rows_skipped - before_skipped if check else 0
        report.rows_written += len(rows) - skipped
        report.rows_already_stored += skipped

    async def copy_plain(
        self,
        report: TableReport,
        simulation_id: str,
        columns: Sequence[Column],
        rows: Sequence[Sequence[Any]],
        describe: Callable[[Sequence[Any]], str],
        source_column: Callable[[str], str],
    ) -> None:
        """One batch of `report.table`, a table the bulk writer does not write; `columns`
        are the catalog columns the rows hold (`simulation_id` first, the key among them).

        In one transaction: the rows checked by the value rules, copied into a temporary
        table, inserted from there unless their key is stored. When some keys were stored
        already, the stored rows are compared with the batch: a different one is refused
        (`SourceError` naming its key and column), identical ones count as already stored.
        If the simulation held no row of the table (one with steps) when the import came to
        it, the rows are copied into the table itself (as `write` does). Errors name the
        source table, row and column like `write`.
        """
        await self.drain()
        # a simulation with no row of the table yet (one with steps): a plain COPY into it
        fresh = report.table in SPECS and not await self._replay_checked(
            simulation_id, report.table
        )
        with self._located(self.report.sources[-1], report, rows, describe, source_column):
            ready = validate_columns(report.table, columns, simulation_id, rows)
            try:
                if fresh:
                    async with self.conn.transaction(), self.conn.cursor() as cur:
                        await _copy_rows(cur, sql.Identifier(report.table), columns, ready)
                    inserted = len(ready)
                else:
                    inserted = await _stage_and_insert(self.conn, report.table, columns, ready)
            except psycopg.Error as exc:
                refused = (
                    _refused_payload(report.table, rows, columns)
                    if isinstance(exc, psycopg.DataError)
                    else None
                )
                error = refused or translate(exc)
                if error is None:
                    raise
                raise error from None
        report.rows_written += inserted
        report.rows_already_stored += len(rows) - inserted

    @contextlib.contextmanager
    def _located(
        self,
        source: str,
        report: TableReport,
        rows: Sequence[Sequence[Any]],
        describe: Callable[[Sequence[Any]], str],
        source_column: Callable[[str], str],
    ) -> Iterator[None]:
        """The errors of writing a batch as `SourceError`s naming the source's table, row
        and column."""
        try:
            yield
        except ValidationError as exc:
            raise SourceError(
                source,
                exc.reason,
                table=report.source,
                row=describe(rows[exc.row]) if 0 <= exc.row < len(rows) else None,
                field=source_column(exc.field),
            ) from None
        except ReplayConflict as exc:
            raise SourceError(
                source, f"imported before with other values: {exc}", table=report.source
            ) from None
        except SimSchemaError as exc:  # a reference not found, a value the server refused
            raise SourceError(source, str(exc), table=report.source) from None


def _refused_payload(
    table_name: str, rows: Sequence[Sequence[Any]], columns: Sequence[Column] | None = None
) -> ValidationError | None:
    """Which JSON payload encoded by the source (`JsonbWire`) the server refused, and why:
    the first that is not UTF-8, not JSON, or breaks a value rule. `columns`: those the
    rows hold (default: the table spec's)."""
    held = spec_of(table_name).columns if columns is None else columns
    json_at = [(p, c.name) for p, c in enumerate(held) if c.kind == "jsonb"]
    for i, row in enumerate(rows):
        for p, name in json_at:
            payload = row[p]
            if type(payload) is not JsonbWire:
                continue
            try:
                param(table_name, name, json.loads(payload[1:].decode()))
            except UnicodeDecodeError as exc:
                return ValidationError(table_name, i, name, f"not UTF-8 text: {exc.reason}")
            except ValueError as exc:
                return ValidationError(table_name, i, name, f"not JSON: {exc}")
            except ValidationError as exc:
                return ValidationError(table_name, i, name, exc.reason)
    return None


_STAGE = sql.Identifier("sim_schema_import_stage")


async def _stage_and_insert(
    conn: Conn, table_name: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
) -> int:
    """Validated rows of `columns` into `table_name` unless their key is stored; the number
    inserted (a row stored with other values: `ReplayConflict`)."""
    target = sql.Identifier(table_name)
    names = [c.name for c in columns]
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    key = table(table_name).key
    async with conn.transaction():
        await conn.execute(
            sql.SQL(
                "CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
            ).format(_STAGE, cols, target)
        )
        async with conn.cursor() as cur:
            await _copy_rows(cur, _STAGE, columns, rows)
            await cur.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO NOTHING").format(
                    target, cols, cols, _STAGE, sql.SQL(", ").join(map(sql.Identifier, key))
                )
            )
            inserted = max(cur.rowcount, 0)
            if inserted < len(rows):
                await _refuse_changed(cur, table_name, names, key)
    return inserted


async def _copy_rows(
    cur: psycopg.AsyncCursor[Any],
    target: sql.Identifier,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
) -> None:
    """Validated rows of `columns` into `target` by binary COPY."""
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    async with cur.copy(
        sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, cols)
    ) as copy:
        set_wire_types(cur, copy, [WIRE_TYPE[c.kind] for c in columns])
        await write_rows(copy, rows)


async def _refuse_changed(
    cur: psycopg.AsyncCursor[Any], table_name: str, names: Sequence[str], key: Sequence[str]
) -> None:
    """`ReplayConflict` for the first staged row whose stored row (same key) differs."""
    compared = [n for n in names if n not in key]
    if not compared:
        return
    same_key = sql.SQL(" AND ").join(
        sql.SQL("s.{0} = t.{0}").format(sql.Identifier(k)) for k in key
    )
    await cur.execute(
        sql.SQL(
            "SELECT {keys}, {staged}, {stored} FROM {stage} s JOIN {target} t ON {same_key}"
            " WHERE ({staged}) IS DISTINCT FROM ({stored}) LIMIT 1"
        ).format(
            keys=sql.SQL(", ").join(sql.Identifier("s", k) for k in key),
            staged=sql.SQL(", ").join(sql.Identifier("s", n) for n in compared),
            stored=sql.SQL(", ").join(sql.Identifier("t", n) for n in compared),
            stage=_STAGE,
            target=sql.Identifier(table_name),
            same_key=same_key,
        )
    )
    found = await cur.fetchone()
    if found is None:
        return
    staged = found[len(key) : len(key) + len(compared)]
    stored = found[len(key) + len(compared) :]
    for name, new, old in zip(compared, staged, stored, strict=True):
        if new != old:
            raise ReplayConflict(
                table_name,
                dict(zip(key, found[: len(key)], strict=True)),
                name,
                "NULL" if old is None else repr(old),
                "NULL" if new is None else repr(new),
            )


PREFETCH_DEPTH = 2  # batches read ahead: the reader goes on while a batch commits


@contextlib.asynccontextmanager
async def prefetched(
    items: Generator[T, None, None], depth: int = PREFETCH_DEPTH
) -> AsyncIterator[AsyncIterator[T]]:
    """`items`, produced in a worker thread up to `depth` ahead of the caller (the source is
    read while batches are copied and committed). When the block ends, whether the items
    ran out, the caller failed, or the source did (its error is raised in order), the
    thread has finished and `items` is closed (its open cursors with it)."""
    fetched = _prefetched(items, depth)
    try:
        yield fetched
    finally:
        await fetched.aclose()
        # ValueError: a second cancellation left the thread inside `items`; it stops at its
        # next item and the generator is freed then
        with contextlib.suppress(ValueError):
            items.close()


async def _prefetched(items: Iterator[T], depth: int) -> AsyncGenerator[T, None]:
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    room = threading.Semaphore(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                room.acquire()
                if stop.is_set():
                    return
                loop.call_soon_threadsafe(ready.put_nowait, (True, item))
            loop.call_soon_threadsafe(ready.put_nowait, (False, None))
        except BaseException as exc:  # handed to the caller, raised there
            loop.call_soon_threadsafe(ready.put_nowait, (False, exc))

    worker = loop.run_in_executor(None, produce)
    try:
        while True:
            more, item = await ready.get()
            if not more:
                if item is not None:
                    raise item
                return
            room.release()
            yield item
    finally:
        stop.set()
        room.release()  # a producer waiting for room wakes up, sees `stop` and ends
        # the source is not used by two threads, nor closed under one; the caller's own
        # failure is what is raised
        with contextlib.suppress(Exception):
            await worker


async def ahead(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """`items`, each next one fetched while the caller handles the current one (the source
    database is read while the previous batch's COPY streams)."""
    done: Any = object()

    async def following() -> T:
        item: T = await anext(items, done)
        return item

    pending = asyncio.create_task(following())
    try:
        while True:
            item = await pending
            if item is done:
                return
            pending = asyncio.create_task(following())
            yield item
    finally:
        if not pending.done():
            with contextlib.suppress(Exception):  # the caller's own failure is what is raised
                await pending
