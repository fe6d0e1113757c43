"""SimulationLogger: per-simulation buffers flushed by binary COPY, in the background.

Guarantees (docs/ingest.md): a `log_*` call is all or nothing (every value is checked
when the call is made, and a value that cannot be stored refuses the whole call with a
`ValidationError` naming the table, row and field); a buffer is dropped only after its
batch's transaction commits; a transient failure (by SQLSTATE) is retried within a time
budget, and a replay never duplicates rows (the batch id is in the `ingest_batches`
ledger, written in the same transaction); memory is bounded by `max_pending` rows
(buffered + queued + in flight), `log_*` waits when it is reached; a buffer is written at
the latest `flush_interval` (1 s) after its first row, so a crash loses about a second of
logging; a permanent failure is raised on the next call, `flush()` or `close()` as
`IngestError` holding the unwritten rows. One writer task per logger writes batches in
order, so agents and events are always written before the rows that reference them
(actions, states, decisions, ...); batches of one
table that queue up behind a busy writer share one transaction (each keeps its ledger
row). Values are checked and JSON encoded when they are logged, so later changes to a
logged dict are not written.

`SyncSimulationLogger` gives the same guarantees to synchronous code: the async logger runs
in an event loop on a background thread, rows are handed over in small chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from types import TracebackType
from typing import Any, Generic, TypeVar

import psycopg

from ..catalog import SPECS, WRITTEN_AFTER, Row, spec_of
from ..errors import ConfigurationError, IngestError, NotFound, SimSchemaError, ValidationError
from ..pgerrors import is_transient, locate_row, schema_missing, translate
from ..settings import Settings
from ..store import Store
from ..values import decode_json, validate
from .numbering import Numberer
from .resume import stored_steps
from .writer import BulkWriter, CopyBatch, record_watermark

log = logging.getLogger(__name__)

TURN_ROWS = 100  # rows the producer checks and buffers between two turns for the writer
TURN_INTERVAL = 0.002  # seconds of log calls that never wait before the writer gets a turn
DEFAULT_FLUSH_INTERVAL = 1.0  # seconds: about what a kill -9 loses (docs/ingest.md)
DEFAULT_MAX_PENDING_SECONDS = 1.0  # held rows: at most about this much of the writer's work
_RATE_GROUPS = 20  # committed groups the writer's rate is measured over

T = TypeVar("T")
_Done = TypeVar("_Done")
_Id = TypeVar("_Id")
_Ids = TypeVar("_Ids")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff (with jitter) for transient failures of one batch.

    `timeout` bounds the wall time spent on a batch, waits included: each attempt gets at
    most `attempt_timeout` seconds (to get a connection, then for its statements) and never
    more than what is left of the budget. `max_delay` caps the wait between attempts, so
    after an outage the logger tries again within about a second of the server's return.
    Which errors are transient is decided by SQLSTATE (`pgerrors.is_transient`).
    """

    attempts: int | None = None  # None: as many as `timeout` allows
    initial_delay: float = 0.1
    max_delay: float = 1.0
    timeout: float = 120.0
    attempt_timeout: float = 30.0

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        return is_transient(exc)


@dataclass
class _Batch:
    table: str
    number: int
    batch_id: uuid.UUID
    rows: list[Row]
    low_step: int | None  # the lowest step of its rows (None: a table without steps)


# Where each logged table's rows hold their step (agents have none).
_STEP_AT = {name: spec.position("step") for name, spec in SPECS.items() if "step" in spec.names}


def _as_dicts(table: str, rows: Sequence[Row]) -> list[object]:
    """Rows as the caller logged them (JSON values decoded back), for an IngestError."""
    names = SPECS[table].names
    return [dict(zip(names, decode_json(table, r), strict=True)) for r in rows]


def _cause(table: str, rows: list[Row], exc: BaseException) -> BaseException:
    """What made a batch fail, in this module's words where it can say more: the row and
    field at fault, or a schema that is missing or behind the code."""
    if not isinstance(exc, psycopg.Error):
        return exc
    if schema_missing(exc):
        return translate(exc) or exc
    return locate_row(table, SPECS[table].names, rows, exc) or exc


def check_options(
    buffer_size: int,
    flush_interval: float,
    max_pending: int | None,
    max_pending_seconds: float | None = DEFAULT_MAX_PENDING_SECONDS,
) -> int:
    """The logger's options checked (before anything is started); the max_pending to use."""
    if buffer_size < 1:
        raise ConfigurationError(f"buffer_size must be >= 1, got {buffer_size}")
    if not flush_interval > 0:
        raise ConfigurationError(f"flush_interval must be > 0 seconds, got {flush_interval}")
    if max_pending_seconds is not None and not max_pending_seconds > 0:
        raise ConfigurationError(
            f"max_pending_seconds must be > 0 seconds or None, got {max_pending_seconds}"
        )
    pending = 50 * buffer_size if max_pending is None else max_pending
    if pending < buffer_size:
        raise ConfigurationError(f"max_pending ({pending}) must be >= buffer_size ({buffer_size})")
    return pending


class _RowLogger(Generic[_Done, _Id, _Ids]):
    """The `log_*` API of every high-volume table, built on `_put` / `_put_ids`.

    Shared by the async logger (which returns awaitables) and the sync facade.
    """

    simulation_id: str
    _numbers: Numberer

    def _accepted(self, table: str, rows: list[Row], start: int = 0) -> list[Row]:
        """The rows numbered (`numbering`) and checked (`values`), ready to buffer: all of
        them or, with a ValidationError naming the row and field, none."""
        numbered = self._numbers.number(table, rows)
        ready = validate(table, self.simulation_id, numbered.rows, start=start)
        numbered.commit()
        return ready

    def _put(self, table: str, rows: list[Row]) -> _Done:
        raise NotImplementedError

    def _put_id(self, table: str, row: Row) -> _Id:
        """`_put` of one row that returns the row's id (numbered if it had none)."""
        raise NotImplementedError

    def _put_ids(self, table: str, rows: list[Row]) -> _Ids:
        raise NotImplementedError

    def log_rows(self, table: str, rows: Iterable[Mapping[str, Any]]) -> _Done:
        """Rows of any logged table as mappings of column name to value.

        A missing column gets its default; an unknown one is refused naming the row and
        the column (and an unknown table names the valid ones)."""
        return self._put(table, spec_of(table).rows(self.simulation_id, rows))

    def _one(self, table: str, columns: dict[str, Any]) -> _Done:
        return self._put(table, [spec_of(table).row(self.simulation_id, columns)])

    # One method per table for a single row: the leading arguments are the columns a row
    # of that table cannot do without; every other column goes by name (docs/schema.md),
    # so a column added to the catalog is accepted here without a change.

    def log_agent(self, agent_id: str, agent_type: str, **columns: Any) -> _Done:
        """Register an agent; written before any batch of rows that reference it."""
        return self._one("agents", {"agent_id": agent_id, "agent_type": agent_type, **columns})

    def log_agents(self, rows: Iterable[Mapping[str, Any]]) -> _Done:
        return self.log_rows("agents", rows)

    def log_agent_state(self, step: int, agent_id: str, **columns: Any) -> _Done:
        return self._one("agent_states", {"step": step, "agent_id": agent_id, **columns})

    def log_agent_states(self, rows: Iterable[Mapping[str, Any]]) -> _Done:
        return self.log_rows("agent_states", rows)

    def log_action(self, step: int, agent_id: str, action_type: str, **columns: Any) -> _Done:
        row = {"step": step, "agent_id": agent_id, "action_type": action_type, **columns}
        return self._one("agent_actions", row)

    def log_actions(self, rows: Iterable[Mapping[str, Any]]) -> _Done:
        return self.log_rows("agent_actions", rows)

    def log_resource_state(
        self, step: int, resource_id: int, amount: float, **columns: Any
    ) -> _Done:
        row = {"step": step, "resource_id": resource_id, "amount": amount, **columns}
        return self._one("resource_states", row)

    def log_resource_states(self, rows: Iterable[Mapping[str, Any]]) -> _Done:
        return self.log_rows("resource_states", rows)

    def log_step(self, step: int, *, metrics: Any = None, **columns: Any) -> _Done:
        """One `simulation_steps` row: the typed metric columns by name, the rest in `metrics`."""
        return self._one("simulation_steps", {"step": step, "metrics": metrics, **columns})

    def log_steps(self, rows: Iterable[Mapping[str, Any]]) -> _Done:
        return self.log_rows("simulation_steps", rows)

    def log_learning_experience(
        self, step: int, agent_id: str, module_type: str, **columns: Any
    ) -> _Done:
        row = {"step": step, "agent_id": agent_id, "module_type": module_type, **columns}
        return self._one("learning_experiences", row)

    def log_learning_experiences(self, rows: Iterable[Mapping[str, Any]]) -> _Done:
        return self.log_rows("learning_experiences", rows)

    def log_health_incident(self, step: int, agent_id: str, cause: str, **columns: Any) -> _Done:
        row = {"step": step, "agent_id": agent_id, "cause": cause, **columns}
        return self._one("health_incidents", row)

    def log_health_incidents(self, rows: Iterable[Mapping[str, Any]]) -> _Done:
        return self.log_rows("health_incidents", rows)

    def log_interaction(
        self,
        step: int,
        source_type: str,
        source_id: str,
        target_type: str,
        target_id: str,
        interaction_type: str,
        **columns: Any,
    ) -> _Done:
        row = {
            "step": step, "source_type": source_type, "source_id": source_id,
            "target_type": target_type, "target_id": target_id,
            "interaction_type": interaction_type, **columns,
        }  # fmt: skip
        return self._one("interactions", row)

    def log_interactions(self, rows: Iterable[Mapping[str, Any]]) -> _Done:
        return self.log_rows("interactions", rows)

    def log_event(self, step: int, event_type: str, **columns: Any) -> _Id:
        """Log an event; its id is returned at once: unless given, the replay-stable id of
        the n-th event logged at that step (`ids.replay_id`)."""
        row = spec_of("events").row(
            self.simulation_id, {"step": step, "event_type": event_type, **columns}
        )
        return self._put_id("events", row)

    def log_events(self, rows: Iterable[Mapping[str, Any]]) -> _Ids:
        """Events as mappings; a missing `event_id` is made as in `log_event`. Their ids."""
        return self._put_ids("events", spec_of("events").rows(self.simulation_id, rows))

    def log_decision(self, step: int, agent_id: str, **columns: Any) -> _Id:
        """Log an agent decision (`event_id`, `prompt`, `output`, `context`, `action`,
        `processing_time`, ... by name); its id is returned at once: unless given, the
        replay-stable id of the n-th decision logged at that step. Written after the
        agents and events logged before it (it may name an event just logged)."""
        row = spec_of("agent_decisions").row(
            self.simulation_id, {"step": step, "agent_id": agent_id, **columns}
        )
        return self._put_id("agent_decisions", row)

    def log_decisions(self, rows: Iterable[Mapping[str, Any]]) -> _Ids:
        """Decisions as mappings; a missing `decision_id` is made as in `log_decision`."""
        spec = spec_of("agent_decisions")
        return self._put_ids("agent_decisions", spec.rows(self.simulation_id, rows))


# Where the id a `log_*` call returns is, in the rows of the tables that return one.
_ID_AT = {
    name: spec.position(spec.numbering.column)
    for name, spec in SPECS.items()
    if spec.numbering is not None and spec.numbering.kind == "uuid"
}


class SimulationLogger(
    _RowLogger[Awaitable[None], Awaitable[uuid.UUID], Awaitable[list[uuid.UUID]]]
):
    """Buffered, retried, idempotent ingest of one simulation's per-step rows.

    >>> async with SimulationLogger(store, "sim-1") as logger:
    ...     await logger.log_agent("a1", "prey")
    ...     await logger.log_agent_state(0, "a1", health=1.0)
    """

    def __init__(
        self,
        store: Store,
        simulation_id: str,
        *,
        buffer_size: int = 1000,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_pending: int | None = None,
        max_pending_seconds: float | None = DEFAULT_MAX_PENDING_SECONDS,
        retry: RetryPolicy | None = None,
        writer: BulkWriter | None = None,
        keep_failed_rows: int | None = None,
    ) -> None:
        max_pending = check_options(buffer_size, flush_interval, max_pending, max_pending_seconds)
        self.store = store
        self.simulation_id = simulation_id
        self.buffer_size = buffer_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        # Held rows are also bounded by what the writer commits in this many seconds, so a
        # simulation faster than the database loses about that much to a kill -9.
        self.max_pending_seconds = max_pending_seconds
        self._commits: deque[tuple[int, float]] = deque(maxlen=_RATE_GROUPS)  # rows, seconds
        self._pending_limit = max_pending
        self.retry = retry or RetryPolicy()
        self._writer = writer or BulkWriter()
        self._numbers = Numberer(simulation_id)
        self._numbering = asyncio.Lock()
        self._buffers: dict[str, list[Row]] = {t: [] for t in SPECS}
        self._low: dict[str, int] = {}  # the lowest step buffered per table
        self._newest = -1  # the highest step logged
        self._published: int | None = None  # the watermark recorded (`resume`)
        self._failed_low: int | None = None  # the lowest step of a failed batch
        self._horizon: dict[str, int | None] | None = None  # last stored step per table
        self._born: dict[str, float] = {}
        self._queue: deque[_Batch] = deque()
        self._pending = 0  # rows buffered + queued + being written
        self._sealed = 0  # number of the last batch sealed
        self._done = 0  # number of the last batch finished (written, skipped or failed)
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self.errors: list[IngestError] = []  # every permanent failure, in order
        self._unreported: deque[IngestError] = deque()
        self.rows_written = 0  # rows this logger stored
        self.rows_skipped = 0  # rows logged again that were already stored, identical
        self.batches_replayed = 0  # batches found already committed on a retry
        # Rows of failed batches kept for the caller (IngestError.rows), at most this many;
        # beyond it a failure counts its rows instead (IngestError.rows_dropped).
        self.keep_failed_rows = max_pending if keep_failed_rows is None else keep_failed_rows
        self._kept_failed = 0
        self.blocked = False  # a log_* call is waiting for room (back-pressure)
        self._next_turn = 0.0  # when the writer gets its next turn (`_give_turn`)

    @property
    def pending(self) -> int:
        """Rows accepted but not yet committed (or failed): what a crash now would lose."""
        return self._pending

    @property
    def pending_limit(self) -> int:
        """The rows held at most now: `max_pending`, or less once the writer's rate is
        known, `max_pending_seconds` of it (never below two batches). Recomputed once per
        commit (`_record_commit`), not on every call: producers read it per chunk."""
        return self._pending_limit

    def _record_commit(self, rows: int, seconds: float) -> None:
        self._commits.append((rows, seconds))
        if self.max_pending_seconds is None:
            return
        total_rows = sum(r for r, _ in self._commits)
        total_seconds = sum(t for _, t in self._commits)
        rate = total_rows / total_seconds if total_seconds > 0 else float("inf")
        window = max(2 * self.buffer_size, int(min(rate * self.max_pending_seconds, 1e12)))
        self._pending_limit = min(self.max_pending, window)

    # -- producer side ---------------------------------------------------------------

    async def _put(self, table: str, rows: list[Row]) -> None:
        await self._take(table, rows)

    async def _put_id(self, table: str, row: Row) -> uuid.UUID:
        return (await self._take(table, [row]))[0][_ID_AT[table]]  # type: ignore[no-any-return]

    async def _put_ids(self, table: str, rows: list[Row]) -> list[uuid.UUID]:
        at = _ID_AT[table]
        return [r[at] for r in await self._take(table, rows)]

    async def _take(self, table: str, rows: list[Row]) -> list[Row]:
        """Check every row of one call, then buffer them, `TURN_ROWS` at a time.

        All or nothing: a value that cannot be stored raises `ValidationError` (its row
        index counts from the call's first row) before any row of the call is taken. While
        the writer has work it gets a turn between two parts: checking a large call in one
        go would keep its next command to the server waiting (the server idles meanwhile).
        A pending failure is raised before anything is taken.
        """
        self._check_usable(True)
        ready: list[Row] = []
        async with self._numbering:  # two tasks logging at once must not share a number
            numbered = self._numbers.number(table, rows)
            for start in range(0, len(rows), TURN_ROWS):
                await self._give_turn()
                part = numbered.rows[start : start + TURN_ROWS]
                ready += validate(table, self.simulation_id, part, start=start)
            numbered.commit()
        for start in range(0, len(ready), TURN_ROWS):
            if start:
                await self._give_turn()
            await self._add(table, ready[start : start + TURN_ROWS])
        return ready

    async def _give_turn(self) -> None:
        """Let the writer run now and then. Log calls that never wait (a model computing in
        the event loop between them) would otherwise hold it off until back-pressure:
        nothing would be written, sealed by age or committed until `max_pending` rows
        are held, and a crash would lose them all."""
        if self._pending and time.monotonic() >= self._next_turn:
            await asyncio.sleep(0)
            # From when this producer runs again: others may have had their turns meanwhile.
            self._next_turn = time.monotonic() + TURN_INTERVAL

    async def _add(self, table: str, rows: list[Row]) -> None:
        """Buffer checked rows, waiting for room."""
        self._check_usable(False)
        size = self.buffer_size
        i, n = 0, len(rows)
        while i < n:
            buf = self._buffers[table]
            take = min(size - len(buf), n - i)
            if self._pending + take > self.pending_limit:
                await self._wait_for_room(take)
                continue  # the buffer may have been sealed meanwhile
            if not buf:
                self._born[table] = time.monotonic()
                self._start()
            if take == 1:
                buf.append(rows[i])
            else:
                buf.extend(rows[i : i + take])
            at = _STEP_AT.get(table)
            if at is not None:
                steps = list(map(itemgetter(at), rows[i : i + take]))
                low, high = min(steps), max(steps)
                self._low[table] = min(low, self._low.get(table, low))
                self._newest = max(self._newest, high)
            self._pending += take
            i += take
            if len(buf) >= size:
                self._seal(table)
                # A turn for the writer: a producer that never awaits would hold the event
                # loop while the writer's next command to the server waits to be sent.
                await asyncio.sleep(0)

    async def _add_many(self, tables: Mapping[str, list[Row]]) -> None:
        """Checked rows of several tables, in the given table order (the sync facade's
        hand-over). Every row is taken before a pending failure is raised: none
        of them is dropped."""
        for table, rows in tables.items():
            await self._add(table, rows)
        self._check_usable(True)

    async def _wait_for_room(self, rows: int) -> None:
        """Back-pressure: wait for the writer; hand it the fullest buffer only when idle.

        Sealing every buffer here would cut the small per-step tables into tiny batches
        each time a big one fills up; one full batch at a time keeps every COPY large.
        Failures that happen meanwhile are not raised here (part of the caller's rows may
        be buffered already): the next call reports them.
        """
        self.blocked = True
        try:
            while self._pending + rows > self.pending_limit:
                if not self._queue:
                    fullest = max(self._buffers, key=lambda t: len(self._buffers[t]))
                    if self._buffers[fullest]:
                        self._seal(fullest)
                self._raise_if_writer_died()
                await self._progress.wait()
        finally:
            self.blocked = False
        self._check_usable(False)

    def _check_usable(self, report: bool) -> None:
        if self._closed or self._closing:
            raise SimSchemaError(f"the logger of simulation {self.simulation_id!r} is closed")
        if report and self._unreported:
            raise self._unreported.popleft()

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"sim_schema logger {self.simulation_id}"
            )

    def _seal(self, table: str) -> None:
        for parent in WRITTEN_AFTER[table]:  # references: agents and events go first
            if self._buffers[parent]:
                self._seal(parent)
        rows = self._buffers[table]
        self._buffers[table] = []
        self._born.pop(table, None)
        self._sealed += 1
        batch = _Batch(table, self._sealed, uuid.uuid4(), rows, self._low.pop(table, None))
        self._queue.append(batch)
        self._wakeup.set()

    def _seal_all(self) -> None:
        for table, buf in self._buffers.items():  # agents first (SPECS order)
            if buf:
                self._seal(table)

    # -- writer side -----------------------------------------------------------------

    def _seal_aged(self) -> float | None:
        """Seal buffers older than flush_interval; seconds until the next one ages."""
        now = time.monotonic()
        for table, born in list(self._born.items()):
            if now - born >= self.flush_interval and self._buffers[table]:
                self._seal(table)
        if not self._born:
            return None
        return max(0.0, min(self._born.values()) + self.flush_interval - now)

    async def _run(self) -> None:
        try:
            await self._drain()
        finally:
            self._notify()  # wake waiters, whatever ended the task

    async def _drain(self) -> None:
        while True:
            timeout = self._seal_aged()
            if self._queue:
                group = self._next_group()
                await self._write(group)
                for batch in group:
                    self._queue.popleft()
                    self._pending -= len(batch.rows)
                self._done = group[-1].number
                self._notify()
                continue
            if self._closing:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _next_group(self) -> list[_Batch]:
        """The queued batches that share one transaction: those of the first one's table,
        up to the next batch of another table (which keeps agents before their rows) and
        to half of `pending_limit` rows.

        Under load the queue holds several batches, so the per-transaction round trips and
        commit are paid once for all of them; a lone batch is written alone, at once. The
        half leaves the producer room to fill the next group while this one is written.
        """
        first = self._queue[0]
        group, rows = [first], len(first.rows)
        most = self.pending_limit // 2
        for batch in itertools.islice(self._queue, 1, None):
            rows += len(batch.rows)
            if batch.table != first.table or rows > most:
                break
            group.append(batch)
        return group

    def _notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def _write(self, group: list[_Batch]) -> None:
        """Write a group in one transaction, retrying transient failures within the budget.

        Each attempt has a deadline (to get a connection, then for its statements) that
        never passes the end of the budget. A permanent failure of a group of several
        batches is retried one batch at a time, so the batches that can be written are, and
        the error names the batch at fault.
        """
        table = group[0].table
        batches = [CopyBatch(b.batch_id, b.rows, validated=True) for b in group]
        watermark = self._watermark(group)
        policy = self.retry
        delay, deadline = policy.initial_delay, time.monotonic() + policy.timeout
        attempt = 0
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            budget = max(0.001, min(policy.attempt_timeout, left))
            skipped_before = self._writer.rows_skipped
            began = time.monotonic()
            try:
                async with self.store.connection(timeout=budget) as conn:
                    if self._horizon is None:
                        self._horizon = await self._stored_steps(conn, table)
                    written = await self._writer.write_many(
                        conn,
                        table,
                        self.simulation_id,
                        batches,
                        timeout=budget,
                        check_stored=self._maybe_stored(group),
                        stored_through=watermark,
                    )
            except Exception as exc:
                transient = policy.is_transient(exc)
                more = policy.attempts is None or attempt < policy.attempts
                if transient and more and time.monotonic() + delay < deadline:
                    log.warning(
                        "simulation %s: %s batches %d-%d attempt %d failed, retrying in %.2fs: %s",
                        self.simulation_id, table, group[0].number, group[-1].number, attempt,
                        delay, exc,
                    )  # fmt: skip
                    await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 (jitter)
                    delay = min(delay * 2, policy.max_delay)
                    continue
                if len(group) > 1 and not transient:
                    for batch in group:  # pin the failure to its batch; the others go in
                        await self._write([batch])
                    return
                for batch in group:
                    self._fail(batch, _cause(table, batch.rows, exc))
                return
            self._record_commit(sum(len(b.rows) for b in group), time.monotonic() - began)
            if watermark is not None:
                self._published = watermark
            skipped = self._writer.rows_skipped - skipped_before
            self.rows_skipped += skipped
            self.rows_written -= skipped
            for batch, now in zip(group, written, strict=True):
                if now:
                    self.rows_written += len(batch.rows)
                else:
                    self.batches_replayed += 1
                    log.info(
                        "simulation %s: %s batch %d was already committed (lost acknowledgement)",
                        self.simulation_id, table, batch.number,
                    )  # fmt: skip
            return

    async def _stored_steps(
        self, conn: psycopg.AsyncConnection[Any], table: str
    ) -> dict[str, int | None]:
        """The last step stored per table; an unknown simulation is refused as the first
        row's `simulation_id`, as an unknown agent is refused as its row's `agent_id`."""
        try:
            return (await stored_steps(conn, self.simulation_id))[1]
        except NotFound as exc:
            raise ValidationError(table, 0, "simulation_id", f"{exc} (create it first)") from exc

    def _maybe_stored(self, group: list[_Batch]) -> bool:
        """Whether rows of the group may be stored already: their step is not after the
        last step stored when this logger started (a resumed run logging again)."""
        last = (self._horizon or {}).get(group[0].table)
        return last is not None and any(
            b.low_step is not None and b.low_step <= last for b in group
        )

    def _watermark(self, group: list[_Batch]) -> int | None:
        """The resume watermark to record with `group`, if it moves: once the group is
        committed, every step before the lowest step still pending (buffered, queued after
        the group, or failed) and before the newest step logged is completely stored."""
        pending = [b.low_step for b in self._queue if b.number > group[-1].number]
        lows = [low for low in pending if low is not None] + list(self._low.values())
        if self._failed_low is not None:
            lows.append(self._failed_low)
        watermark = min([*lows, self._newest]) - 1
        published = -1 if self._published is None else self._published
        return watermark if watermark > published else None

    def _fail(self, batch: _Batch, cause: BaseException) -> None:
        if batch.low_step is not None:
            low = self._failed_low
            self._failed_low = batch.low_step if low is None else min(low, batch.low_step)
        rows: list[object] = []
        dropped = len(batch.rows)
        if self._kept_failed + dropped <= self.keep_failed_rows:
            rows, dropped = _as_dicts(batch.table, batch.rows), 0
            self._kept_failed += len(rows)
        error = IngestError(batch.table, batch.number, cause, rows, rows_dropped=dropped)
        log.error("simulation %s: %s", self.simulation_id, error)
        self.errors.append(error)
        self._unreported.append(error)

    def _raise_if_writer_died(self) -> None:
        """A writer that was cancelled or crashed will write nothing more: say so, never wait."""
        task = self._task
        if task is None or not task.done() or (self._closing and self._done >= self._sealed):
            return
        how = "was cancelled" if task.cancelled() else f"stopped: {task.exception()!r}"
        raise SimSchemaError(
            f"the writer of simulation {self.simulation_id!r} {how}; {self._pending} logged "
            "rows were not written"
        )

    # -- flush and close -------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything logged so far; raise the first unreported permanent failure."""
        self._seal_all()
        target = self._sealed
        while self._done < target:
            self._raise_if_writer_died()
            await self._progress.wait()
        if self._unreported:
            raise self._unreported.popleft()

    async def close(self) -> None:
        """Flush, stop the writer task; raise the first unreported failure (all in `errors`)."""
        if self._closed:
            return
        try:
            await self.flush()
            await self._record_final_watermark()
        finally:
            self._closing = True
            self._wakeup.set()
            task = self._task
            if task is not None and not task.done():
                await task  # writes whatever is still queued (if flush raised)
            self._closed = True
        if self._unreported:
            raise self._unreported.popleft()

    async def _record_final_watermark(self) -> None:
        """Closing marks every step logged as complete (below a failed batch's step)."""
        low = self._failed_low
        final = self._newest if low is None else min(self._newest, low - 1)
        if final <= (-1 if self._published is None else self._published):
            return
        try:
            async with self.store.connection(timeout=self.retry.attempt_timeout) as conn:
                await record_watermark(conn, self.simulation_id, final)
        except Exception as exc:  # the rows are stored; a resume would only repeat more
            log.warning("simulation %s: resume watermark not recorded: %s", self.simulation_id, exc)
            return
        self._published = final

    async def __aenter__(self) -> SimulationLogger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class SyncSimulationLogger(_RowLogger[None, uuid.UUID, list[uuid.UUID]]):
    """The logger for synchronous code: same `log_*` methods, blocking, same guarantees.

    A background thread runs an event loop with its own `Store` and a `SimulationLogger`.
    Rows are handed over in chunks of `handoff` rows (or when the oldest is
    `flush_interval` old at the next call); the hand-over blocks while the async logger
    applies back-pressure, and raises its permanent failures.

    >>> with SyncSimulationLogger("sim-1", settings=Settings.from_env()) as log:
    ...     for step in range(100):
    ...         log.log_agent_state(step, "a1", health=1.0)
    """

    def __init__(
        self,
        simulation_id: str,
        *,
        settings: Settings | None = None,
        buffer_size: int = 1000,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_pending: int | None = None,
        max_pending_seconds: float | None = DEFAULT_MAX_PENDING_SECONDS,
        retry: RetryPolicy | None = None,
        handoff: int = 100,
    ) -> None:
        # before any thread or pool
        check_options(buffer_size, flush_interval, max_pending, max_pending_seconds)
        self.simulation_id = simulation_id
        self._numbers = Numberer(simulation_id)
        self.flush_interval = flush_interval
        self._handoff = max(1, min(handoff, buffer_size))
        self._local: dict[str, list[Row]] = {}
        self._local_rows = 0
        self._local_born = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"sim_schema logger {simulation_id}", daemon=True
        )
        self._thread.start()
        self.store = Store(settings)
        self._closed = False
        try:
            self._call(self.store.open())
        except BaseException:
            self._stop_loop()
            raise
        self.logger = SimulationLogger(
            self.store,
            simulation_id,
            buffer_size=buffer_size,
            flush_interval=flush_interval,
            max_pending=max_pending,
            max_pending_seconds=max_pending_seconds,
            retry=retry,
        )

    def _call(self, coro: Awaitable[T]) -> T:
        async def run() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def call(self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Run `fn(store)` in the logger's event loop, e.g. a repository call; its result."""
        return self._call(fn(self.store))

    def _put(self, table: str, rows: list[Row]) -> None:
        self._put_rows(table, rows)

    def _put_rows(self, table: str, rows: list[Row]) -> list[Row]:
        if self._closed:
            raise SimSchemaError(f"the logger of simulation {self.simulation_id!r} is closed")
        # Checked now, in the caller's thread: the call is refused whole, naming the row.
        ready = self._accepted(table, rows)
        if not self._local_rows:
            self._local_born = time.monotonic()
        self._local.setdefault(table, []).extend(ready)
        self._local_rows += len(rows)
        if (
            self._local_rows >= self._handoff
            or time.monotonic() - self._local_born >= self.flush_interval
        ):
            self._hand_over()
        return ready

    def _put_id(self, table: str, row: Row) -> uuid.UUID:
        return self._put_rows(table, [row])[0][_ID_AT[table]]  # type: ignore[no-any-return]

    def _put_ids(self, table: str, rows: list[Row]) -> list[uuid.UUID]:
        at = _ID_AT[table]
        return [r[at] for r in self._put_rows(table, rows)]

    def _hand_over(self) -> None:
        if not self._local_rows:
            return
        ordered = {t: self._local[t] for t in SPECS if t in self._local}  # agents first
        self._local = {}
        self._local_rows = 0
        self._call(self.logger._add_many(ordered))

    def flush(self) -> None:
        """Write everything logged so far (blocks); raises like `SimulationLogger.flush`."""
        self._hand_over()
        self._call(self.logger.flush())

    @property
    def pending(self) -> int:
        return self._local_rows + self.logger.pending

    @property
    def errors(self) -> list[IngestError]:
        return self.logger.errors

    def close(self) -> None:
        """Flush, close the logger and its store, stop the thread."""
        if self._closed:
            return
        try:
            self._hand_over()
        finally:
            self._closed = True
            try:
                self._call(self.logger.close())
            finally:
                try:
                    self._call(self.store.close())
                finally:
                    self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncSimulationLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
