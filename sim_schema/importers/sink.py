"""The write side the importers share: source rows, already in a table's COPY column order,
go through the bulk writer (binary COPY, one transaction per batch, values checked while
the COPY streams), and the simulation and experiment rows through `insert_if_absent`.

Importing again changes nothing, and an interrupted import resumes: before the first
batch of a (simulation, table) the sink asks whether that simulation holds rows of the
table already (`ingest.resume.stored_steps`). If it does, its batches are written with
the writer's replay check (`check_stored=True`): rows stored identically are skipped,
only the missing ones are copied, and a row stored with other values is refused naming
its key and column. If it does not, the batches are plain COPYs, at the writer's full
speed. Agents are always checked by the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import psycopg

from ..errors import ReplayConflict, SourceError, ValidationError
from ..ingest.resume import stored_steps
from ..ingest.writer import BulkWriter, CopyBatch
from ..repositories.imported import insert_if_absent
from .report import ImportReport, TableReport

T = TypeVar("T")
DEFAULT_BATCH_SIZE = 20_000  # rows per COPY transaction

Conn = psycopg.AsyncConnection[Any]


class Sink:
    """Writes one import's rows into the database of `conn` (an autocommit connection)."""

    def __init__(self, conn: Conn, report: ImportReport) -> None:
        self.conn = conn
        self.report = report
        self.writer = BulkWriter()
        self._simulations: set[str] = set()
        self._checked: dict[tuple[str, str], bool] = {}  # (simulation, table) -> replay check

    async def experiment(self, values: Mapping[str, Any]) -> None:
        """The experiment row, inserted unless its id is stored."""
        if await insert_if_absent(self.conn, "experiments", values):
            self.report.experiments.append(values["experiment_id"])

    async def simulation(self, values: Mapping[str, Any]) -> None:
        """The simulation row, inserted unless its id is stored (once per import)."""
        simulation_id = values["simulation_id"]
        if simulation_id in self._simulations:
            return
        self._simulations.add(simulation_id)
        self.report.simulations.append(simulation_id)
        if not await insert_if_absent(self.conn, "simulations", values):
            self.report.simulations_existing.append(simulation_id)

    def has_simulation(self, simulation_id: str) -> bool:
        return simulation_id in self._simulations

    async def _replay_checked(self, simulation_id: str, name: str) -> bool:
        key = (simulation_id, name)
        found = self._checked.get(key)
        if found is None:
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
        """
        check = await self._replay_checked(simulation_id, report.table)
        before = self.writer.rows_skipped
        try:
            await self.writer.write_many(
                self.conn,
                report.table,
                simulation_id,
                [CopyBatch(uuid.uuid4(), rows)],
                check_stored=check,
            )
        except ValidationError as exc:
            raise SourceError(
                self.report.sources[-1],
                exc.reason,
                table=report.source,
                row=describe(rows[exc.row]) if 0 <= exc.row < len(rows) else None,
                field=source_column(exc.field),
            ) from None
        except ReplayConflict as exc:
            raise SourceError(
                self.report.sources[-1],
                f"imported before with other values: {exc}",
                table=report.source,
            ) from None
        skipped = self.writer.rows_skipped - before
        report.rows_written += len(rows) - skipped
        report.rows_already_stored += skipped


async def prefetched(items: Iterator[T]) -> AsyncIterator[T]:
    """`items`, each next one produced in a worker thread while the caller handles the
    current one (the source is read while the previous batch's COPY streams)."""
    done = object()

    def step() -> Any:
        return next(items, done)

    pending = asyncio.ensure_future(asyncio.to_thread(step))
    try:
        while True:
            item = await pending
            if item is done:
                return
            pending = asyncio.ensure_future(asyncio.to_thread(step))
            yield item
    finally:
        if not pending.done():
            # the source is not used by two threads, nor closed under one; the caller's
            # own failure is what is raised
            with contextlib.suppress(Exception):
                await pending
