"""Import a OneSim database (PostgreSQL, the tables of OneSim's data module) into this
module's tables: agents and agent states through the bulk writer, environment states,
events and agent decisions through the sink's staged COPY (`sink.copy_plain`).

The source is read in one read-only REPEATABLE READ transaction (one snapshot), each
table in (trail, key) order through a server-side cursor, the next batch fetched while
the previous one is written. The mapping:

- scenarios -> experiments: `scenario_id` -> `experiment_id`; name, description,
  folder_path, tags, created_at, updated_at as they are; status `created` (a scenario has
  none); any other column in `metadata.onesim`.
- trails -> simulations: `trail_id` -> `simulation_id` (as text), `scenario_id` ->
  `experiment_id`, `config` -> `parameters`, `start_time` / `end_time` -> `started_at` /
  `ended_at`, the status in lower case (`RUNNING` -> `running`; one we do not have is kept
  in `metadata.onesim.status`); any other column in `metadata.onesim`.
- agents (`initial_profile` -> `profile`), environment_states, agent_states
  (`additional_state` -> `extras`), events (with `processed` and `processing_result`),
  agent_decisions (with `feedback`, `rating`, `reason`): columns by name, `trail_id` ->
  `simulation_id`; `created_at` (or `timestamp`) kept; the surrogate `state_id`s are
  replaced by the keys (simulation_id, step[, agent_id]).
- Values: times without a zone are read as UTC; JSON (json, jsonb, or text holding JSON)
  becomes jsonb, text that is not JSON a JSON string; an event or decision id stored as
  text must be a UUID. A NULL where we need a value gets the column's default (an empty
  object, false, 0) or, for a type, `'unknown'`, counted in the report.

Importing again changes nothing; an interrupted import is resumed by running it again
(`sink`). `import_onesim` returns an `ImportReport`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, TextIO

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ..catalog import SPECS, Column, table
from ..errors import ConfigurationError, SourceError
from ..models import SimulationStatus
from ..pgerrors import reason
from ..progress import Progress
from ..settings import Settings, redact_dsn
from ..store import Store, connect_async
from . import collector
from .mapping import (
    UNKNOWN,
    BadValue,
    Fix,
    constant,
    counter,
    defaulting,
    fixed_rows,
    json_or_text,
    server_json,
    status,
    unless_null,
)
from .report import ImportReport, TableReport
from .sink import DEFAULT_BATCH_SIZE, Sink, ahead, opened_sink

_NS = "onesim"  # the key of OneSim's own columns in metadata


@dataclass(frozen=True)
class _Data:
    """One OneSim data table and how it maps onto ours."""

    table: str  # ours (and OneSim's: the names are the same)
    order: tuple[str, ...]  # orders the rows of one trail (after trail_id)
    bulk: bool  # through the bulk writer (True) or the staged COPY
    onesim: frozenset[str]  # our columns OneSim has: a missing one is reported
    renamed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # ours -> theirs
    replaced: Mapping[str, str] = field(default_factory=dict)  # theirs -> why left out
    defaults: Mapping[str, Any] = field(default_factory=dict)  # for NULL, beyond the catalog's


_CREATED = ("created_at", "timestamp")
_DATA = (
    _Data("agents", ("agent_id",), True, frozenset({"agent_type", "name", "profile"}),
          renamed={"profile": ("initial_profile", "profile")}),
    _Data("environment_states", ("step",), False, frozenset({"state", "created_at"}),
          renamed={"created_at": _CREATED},
          replaced={"state_id": "replaced by the key (simulation_id, step)"}),
    _Data("agent_states", ("step", "agent_id"), True,
          frozenset({"profile", "memory", "relationships"}),
          renamed={"extras": ("additional_state",)},
          replaced={"state_id": "replaced by the key (simulation_id, step, agent_id)"}),
    _Data("events", ("step", "event_id"), False,
          frozenset({"source_type", "source_id", "target_type", "target_id", "payload",
                     "processed", "processing_result", "created_at"}),
          renamed={"created_at": _CREATED}, defaults={"processed": False}),
    _Data("agent_decisions", ("step", "decision_id"), False,
          frozenset({"event_id", "prompt", "output", "context", "action", "processing_time",
                     "feedback", "rating", "reason", "created_at"}),
          renamed={"created_at": _CREATED}),
)  # fmt: skip
_CATEGORIES = frozenset({"agent_type", "event_type"})
_SCENARIO_COLUMNS = {
    "experiment_id": "scenario_id",
    "name": "name",
    "description": "description",
    "folder_path": "folder_path",
    "tags": "tags",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
_TRAIL_COLUMNS = {
    "simulation_id": "trail_id",
    "experiment_id": "scenario_id",
    "name": "name",
    "description": "description",
    "parameters": "config",
    "status": "status",
    "step_count": "step_count",
    "started_at": "start_time",
    "ended_at": "end_time",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
_TEXT = frozenset({"text", "character varying", "character", "name"})
_INTEGER = frozenset({"smallint", "integer", "bigint"})
_NUMBER = _INTEGER | {"real", "double precision", "numeric"}
_UTC = sql.SQL(" AT TIME ZONE 'UTC'")


@dataclass(frozen=True)
class _Plan:
    """How one OneSim table is read: the SELECT (rows in the order of `columns`) and the
    per-column conversions applied in Python."""

    data: _Data
    report: TableReport
    columns: tuple[Column, ...]  # ours, simulation_id first
    select: sql.Composed
    fixups: tuple[tuple[int, Fix], ...]
    sources: Mapping[str, str]  # our column -> the OneSim column it is read from
    key_at: tuple[int, ...]  # positions of the columns that name a row in messages
    omitted: tuple[str, ...]  # "column: why" of columns left to the table's default

    def describe(self, row: Sequence[Any]) -> str:
        shown = [
            f"{self.source_column(self.columns[p].name)}={_shown(row[p])!r}" for p in self.key_at
        ]
        return "(" + ", ".join(shown) + ")"

    def source_column(self, column: str) -> str:
        return self.sources.get(column, column)


def _shown(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


class _Source:
    """The OneSim database: its connection (in one read-only snapshot) and its tables."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], label: str, schema: str) -> None:
        self.conn = conn
        self.label = label
        self.schema = schema
        self.columns: dict[str, dict[str, str]] = {}  # table -> column -> data_type

    async def read_catalog(self) -> None:
        cur = await self.conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            (self.schema,),
        )
        for name, column, data_type in await cur.fetchall():
            self.columns.setdefault(name, {})[column] = data_type
        if "trails" not in self.columns:
            found = [t for t in ("scenarios", *(d.table for d in _DATA)) if t in self.columns]
            raise SourceError(
                self.label,
                f"schema {self.schema!r} has no trails table"
                + (f" (it has {', '.join(found)})" if found else ": it holds no OneSim tables"),
            )

    def ident(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    async def records(self, name: str, where: sql.Composable, params: Any) -> list[dict[str, Any]]:
        if name not in self.columns:
            return []
        query = sql.SQL("SELECT * FROM {} WHERE {}").format(self.ident(name), where)
        try:
            async with self.conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, params)
                return await cur.fetchall()
        except psycopg.Error as exc:
            raise SourceError(self.label, f"cannot be read: {reason(exc)}", table=name) from None


# --- values ------------------------------------------------------------------------------


def _as_uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise BadValue(f"{value!r} is not a UUID") from None


def _expression(
    source: _Source, name: str, column: str, col: Column, report: TableReport
) -> tuple[sql.Composable, Fix | None]:
    """What the SELECT reads for our column `col` from OneSim's `column`, and the
    conversion its values need in Python (None: they pass as they are)."""
    kind, given = col.kind, source.columns[name][column]
    ident = sql.Identifier(column)
    if kind == "text":
        return sql.SQL("{}::text").format(ident), None
    if kind in ("int2", "int4", "int8") and given in _INTEGER:
        return ident, None  # range checked by the value rules, naming the row
    if kind == "float8" and given in _NUMBER:
        return sql.SQL("{}::float8").format(ident), None
    if kind == "bool" and given == "boolean":
        return ident, None
    if kind == "jsonb" and given in ("json", "jsonb"):
        return sql.SQL("{}::text").format(ident), server_json
    if kind == "jsonb" and given in _TEXT:
        return ident, json_or_text(counter(report, f"{col.name}: not JSON text, kept as a string"))
    if kind == "uuid" and given == "uuid":
        return ident, None
    if kind == "uuid" and given in _TEXT:
        return ident, Fix(_as_uuid)
    if kind == "timestamptz" and given == "timestamp with time zone":
        return ident, None
    if kind == "timestamptz" and given == "timestamp without time zone":
        report.mapped[col.name] = f"{column} (read as UTC)"
        return sql.Composed([ident, _UTC]), None
    raise SourceError(
        source.label, f"has type {given}, which does not map onto {col.type}", table=name,
        field=column,
    )  # fmt: skip


def _null_default(data: _Data, col: Column) -> Any:
    """What a NULL becomes in a NOT NULL column of ours (None: it is refused)."""
    if col.nullable:
        return None
    if col.name in data.defaults:
        return data.defaults[col.name]
    if col.default is not None:
        return col.default
    return UNKNOWN if col.name in _CATEGORIES else None


def _plan(source: _Source, data: _Data, report: ImportReport, trails: bool) -> _Plan:
    name = data.table
    present = source.columns[name]
    treport = report.table(name, name)
    candidates = SPECS[name].columns if data.bulk else table(name).columns
    columns: list[Column] = []
    selects: list[sql.Composable] = []
    fixups: list[tuple[int, Fix]] = []
    sources: dict[str, str] = {"simulation_id": "trail_id"}
    omitted: list[str] = []
    for col in candidates:
        position = len(columns)
        if col.name == "simulation_id":
            columns.append(col)
            selects.append(sql.SQL("trail_id::text"))
            treport.mapped["simulation_id"] = "trail_id"
            continue
        found = next((c for c in data.renamed.get(col.name, (col.name,)) if c in present), None)
        default = _null_default(data, col)
        if found is None:
            reported = col.name in data.onesim
            what = f"{col.name}: the source has no {col.name} column"
            if not data.bulk and (not col.written or col.nullable):
                if reported:  # left to the table's default; counted per batch (_import_table)
                    omitted.append(f"{what}, the table's default")
                continue
            if default is None and not col.nullable:
                raise SourceError(source.label, "the column is missing", table=name,
                                  field=col.name)  # fmt: skip
            columns.append(col)
            selects.append(sql.SQL("NULL"))
            if reported:
                count = counter(treport, f"{what}, {default!r}")
                fixups.append((position, defaulting(None, default, count)))
            elif default is not None:
                fixups.append((position, constant(default)))
            continue
        expression, convert = _expression(source, name, found, col, treport)
        columns.append(col)
        selects.append(expression)
        sources[col.name] = found
        treport.mapped.setdefault(col.name, found)
        if default is not None:
            what = f"{col.name}: NULL, {default!r}"
            fixups.append((position, defaulting(convert, default, counter(treport, what))))
        elif convert is not None:
            fixups.append((position, unless_null(convert)))
    used = set(sources.values())
    ours = table(name).names
    for column in present:
        if column in used:
            continue
        why = (
            "set by the server here (the time of the import)"
            if column in ours
            else ("no column for it in this schema")
        )
        treport.skipped[column] = data.replaced.get(column, why)
    order = sql.SQL(", ").join(sql.Identifier(c) for c in ("trail_id", *data.order))
    select = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
        sql.SQL(", ").join(selects), source.ident(name), _trail_filter(trails), order
    )
    names = [c.name for c in columns]
    key_at = (0, *(names.index(c) for c in data.order if c in names))
    return _Plan(
        data, treport, tuple(columns), select, tuple(fixups), sources, key_at, tuple(omitted)
    )


def _trail_filter(trails: bool) -> sql.Composable:
    """The WHERE condition of the trails selected (`%(trails)s`), or of all."""
    return sql.SQL("trail_id::text = ANY(%(trails)s)") if trails else sql.SQL("true")


def _locator(
    source: _Source, plan: _Plan, rows: Sequence[Sequence[Any]]
) -> Callable[[int, int, BadValue], SourceError]:
    """The error of a value that cannot be converted, naming its source row and column."""

    def located(i: int, position: int, exc: BadValue) -> SourceError:
        return SourceError(
            source.label, str(exc), table=plan.data.table, row=plan.describe(rows[i]),
            field=plan.source_column(plan.columns[position].name),
        )  # fmt: skip

    return located


async def _batches(
    source: _Source, plan: _Plan, params: Mapping[str, Any], batch_size: int, bar: Progress
) -> AsyncIterator[tuple[str, list[Any]]]:
    """(simulation id, rows) batches of at most `batch_size` rows, each of one trail."""
    try:
        async with source.conn.cursor(name=f"sim_schema_import_{plan.data.table}") as cur:
            await cur.execute(plan.select, params)
            while True:
                fetched = await cur.fetchmany(batch_size)
                if not fetched:
                    return
                bar.advance(len(fetched))
                plan.report.rows_read += len(fetched)
                rows: list[Any] = fetched
                if plan.fixups:
                    rows = fixed_rows(fetched, plan.fixups, _locator(source, plan, fetched))
                for simulation_id, group in groupby(rows, key=lambda r: r[0]):
                    yield simulation_id, list(group)
    except psycopg.Error as exc:
        raise SourceError(
            source.label, f"cannot be read: {reason(exc)}", table=plan.data.table
        ) from None


async def _import_table(
    sink: Sink,
    source: _Source,
    plan: _Plan,
    params: Mapping[str, Any],
    batch_size: int,
    progress: bool | None,
    progress_stream: TextIO | None,
) -> None:
    name = plan.data.table
    count = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
        source.ident(name), _trail_filter("trails" in params)
    )
    try:
        cur = await source.conn.execute(count, params)
        total = (await cur.fetchone() or (0,))[0]
    except psycopg.Error as exc:
        raise SourceError(source.label, f"cannot be read: {reason(exc)}", table=name) from None
    with Progress(f"onesim {name}", total, stream=progress_stream, enabled=progress) as bar:
        async for sim, rows in ahead(_batches(source, plan, params, batch_size, bar)):
            if not sink.has_simulation(sim):
                raise SourceError(
                    source.label, f"trail {sim!r} is not in the trails table", table=name,
                    row=plan.describe(rows[0]),
                )  # fmt: skip
            if plan.data.bulk:
                await sink.write(plan.report, sim, rows, plan.describe, plan.source_column)
            else:
                await sink.copy_plain(
                    plan.report, sim, plan.columns, rows, plan.describe, plan.source_column
                )
            for what in plan.omitted:
                plan.report.defaulted[what] += len(rows)


# --- scenarios and trails ----------------------------------------------------------------


def _json_value(value: Any) -> Any:
    """A JSON column's value: parsed already (json, jsonb) or JSON text."""
    return json_or_text(lambda: None).value(value) if isinstance(value, str) else value


def _record(
    source: _Source, name: str, row: Mapping[str, Any], columns: Mapping[str, str],
    report: TableReport,
) -> dict[str, Any]:  # fmt: skip
    """Our columns of a scenario or trail; the OneSim columns we have no place for in
    `metadata.onesim`."""
    ours = table("experiments" if name == "scenarios" else "simulations")
    values: dict[str, Any] = {}
    for column, theirs in columns.items():
        if theirs not in row:
            continue
        value = row[theirs]
        report.mapped[column] = theirs
        kind = ours.column(column).kind
        if value is None:
            continue
        if kind == "jsonb":
            value = _json_value(value)
        elif kind == "timestamptz" and isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif kind == "text":
            value = str(value)
        values[column] = value
    extra = {k: _plain(v) for k, v in row.items() if k not in columns.values() and v is not None}
    for k in extra:
        report.mapped[f"metadata.{_NS}.{k}"] = k
    values["metadata"] = {_NS: extra}
    return values


def _plain(value: Any) -> Any:
    """A value for JSON: times and uuids as text."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return _json_value(value)


async def _scenarios_and_trails(
    sink: Sink,
    source: _Source,
    report: ImportReport,
    experiment_id: str | None,
    where: sql.Composable,
    params: Mapping[str, Any],
) -> None:
    trails = await source.records("trails", where, params)
    missing = sorted(set(params.get("trails", ())) - {str(t["trail_id"]) for t in trails})
    if missing:
        raise SourceError(source.label, f"no trail {', '.join(missing)}", table="trails")
    if experiment_id is None:
        ereport = report.table("experiments", "scenarios")
        wanted = sql.SQL("scenario_id::text = ANY(%(scenarios)s)")
        ids = sorted({str(t["scenario_id"]) for t in trails if t.get("scenario_id") is not None})
        for row in await source.records("scenarios", wanted, {"scenarios": ids}):
            values = _record(source, "scenarios", row, _SCENARIO_COLUMNS, ereport)
            values["status"] = "created"
            ereport.defaulted["status: a OneSim scenario has none, 'created'"] += 1
            ereport.rows_read += 1
            before = len(report.experiments)
            await sink.experiment(values)
            ereport.rows_written += len(report.experiments) - before
            ereport.rows_already_stored += 1 - (len(report.experiments) - before)
    elif "scenarios" in source.columns:
        report.note(
            f"the scenarios rows are not imported: --experiment {experiment_id} groups the trails"
        )
    sreport = report.table("simulations", "trails")
    for row in trails:
        values = _record(source, "trails", row, _TRAIL_COLUMNS, sreport)
        if experiment_id is not None:
            values["experiment_id"] = experiment_id
        fallback = "completed" if values.get("ended_at") else "aborted"
        status(values, SimulationStatus, fallback, sreport, _NS)
        sreport.rows_read += 1
        await sink.simulation_counted(values, sreport)


# --- the entry point ---------------------------------------------------------------------


async def import_onesim(
    store: Store,
    source_dsn: str,
    *,
    experiment_id: str | None = None,
    trail_ids: Sequence[str] | None = None,
    source_schema: str = "public",
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    progress_stream: TextIO | None = None,
) -> ImportReport:
    """Import the OneSim database at `source_dsn` (its tables in `source_schema`) into
    `store`: every trail, or those of `trail_ids`, with their scenarios and data.

    `experiment_id` groups every trail imported into that experiment (created if missing;
    the scenarios are then not imported). `progress`: draw progress on stderr (default:
    when it is a terminal). The source is only read.
    """
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    settings = Settings(dsn=source_dsn, application_name="sim_schema import")
    label = f"OneSim database ({redact_dsn(source_dsn) or 'libpq defaults'})"
    report = ImportReport()
    report.sources.append(label)
    params: dict[str, Any] = {} if trail_ids is None else {"trails": list(trail_ids)}
    where = _trail_filter(trail_ids is not None)
    async with connect_async(settings, module_schema=False) as src:
        await src.set_autocommit(False)
        await src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        source = _Source(src, label, source_schema)
        await source.read_catalog()
        with collector.paused():
            async with opened_sink(store, report) as sink:
                if experiment_id is not None:
                    await sink.experiment(
                        {"experiment_id": experiment_id, "name": experiment_id,
                         "metadata": {_NS: {"source": label}}}
                    )  # fmt: skip
                await _scenarios_and_trails(sink, source, report, experiment_id, where, params)
                for data in _DATA:
                    if data.table not in source.columns:
                        report.note(
                            f"the source has no {data.table} table: nothing imported into it"
                        )
                        continue
                    plan = _plan(source, data, report, trail_ids is not None)
                    await _import_table(
                        sink, source, plan, params, batch_size, progress, progress_stream
                    )
        await src.rollback()
    return report
