"""Import AgentFarm SQLite databases (the schema of the farm's `SimulationDatabase` and
`ExperimentDatabase`) into this module's tables, through the bulk writer.

A file is either one simulation's (its tables have no `simulation_id` column: the
simulation is named by the caller, or after the file: `sim_001.db` -> `sim_001`) or an
experiment's (its tables carry `simulation_id`). Every table of the farm schema is read:
experiments, simulations, simulation_config, agents, agent_states, agent_actions,
resource_states, simulation_steps, learning_experiences, health_incidents. The mapping:

- `step_number` -> `step`; `birth_time` / `death_time` -> `birth_step` / `death_step`;
  `current_health` -> `health`; every other column of the same name as it is.
- The agent state id "agent_id-step" is the key `(step, agent_id)` (the id is not stored);
  an action's `state_before_id` / `state_after_id` become `state_before_step` /
  `state_after_step`, the step of that state of the same agent.
- `action_id`, `experience_id`, `incident_id` become `ordinal`, the n-th row of its agent
  at its step in id order; resource_states' `id` is replaced by the key `(step,
  resource_id)`.
- JSON text (`details`, `parameters`, `results_summary`, `config_data`, `variables`,
  `tags`) becomes jsonb; `details` that is not JSON is kept as a JSON string.
- Columns the schema has no place for go into the simulation's or experiment's
  `metadata.agentfarm` (simulations, experiments) or are reported as skipped.

`import_agentfarm` returns an `ImportReport` saying what was mapped, skipped or
defaulted; importing the same files again writes nothing (`sink`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any, TextIO

from ..catalog import SPECS, Column
from ..errors import ConfigurationError, SimSchemaError, SourceError, ValidationError
from ..models import ExperimentStatus, SimulationStatus
from ..progress import Progress
from ..store import Store
from ..values import JsonbWire, param
from . import collector
from .mapping import (
    UNKNOWN,
    BadValue,
    Fix,
    counter,
    defaulting,
    farm_state_step,
    fixed_rows,
    json_or_text,
    status,
    unless_null,
)
from .report import ImportReport, TableReport
from .sink import DEFAULT_BATCH_SIZE, Sink, opened_sink, prefetched

# Our per-step tables, parents first: (farm table, our column -> farm column, the farm's
# id column that orders rows of one agent and step, the farm columns replaced by our key).
_RENAMED = {
    "step": "step_number",
    "health": "current_health",
    "birth_step": "birth_time",
    "death_step": "death_time",
    "state_before_step": "state_before_id",
    "state_after_step": "state_after_id",
}
_KEY_REPLACED = {
    "agent_states": {"id": "the state id 'agent_id-step' is the key (step, agent_id)"},
    "resource_states": {"id": "replaced by the key (step, resource_id)"},
    "agent_actions": {
        "action_id": "replaced by ordinal: the n-th action of the agent at its"
        " step, in action_id order"
    },
    "learning_experiences": {
        "experience_id": "replaced by ordinal: the n-th experience of the"
        " agent at its step, in experience_id order"
    },
    "health_incidents": {
        "incident_id": "replaced by ordinal: the n-th incident of the agent"
        " at its step, in incident_id order"
    },
}
DATA_TABLES = (
    "agents",
    "agent_states",
    "agent_actions",
    "resource_states",
    "simulation_steps",
    "learning_experiences",
    "health_incidents",
)
# Columns of ours the farm schema has no counterpart for: NULL (or their default), silently.
_OURS_ONLY = {
    "agents": {"name", "position_z", "parent_ids", "profile", "config"},
    "agent_states": {"profile", "memory", "relationships", "extras"},
    "simulation_steps": {"metrics"},
    "learning_experiences": {"details"},
}
_CATEGORIES = {"agent_type", "action_type", "module_type", "cause"}
_FARM_TABLES = frozenset({"experiments", "simulations", "simulation_config", *DATA_TABLES})


@dataclass(frozen=True)
class _Plan:
    """How one farm table is read: the SELECT (rows come in our COPY column order) and the
    per-column conversions applied in Python."""

    report: TableReport
    select: str
    fixups: tuple[tuple[int, Fix], ...]
    fills: tuple[tuple[int, Any], ...]  # columns not selected: (position, every row's value)
    describe: Callable[[Sequence[Any]], str]
    source_column: Callable[[str], str]

    def full(self, selected: Sequence[Any]) -> list[Any]:
        """A selected row with the `fills` in place."""
        row = list(selected)
        for position, value in self.fills:
            row.insert(position, value)
        return row


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _File:
    """One open farm file (read-only): its tables and their columns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)
        if not path.is_file():
            raise SourceError(self.label, "no such file")
        try:
            self.db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            kinds = dict(
                self.db.execute(
                    "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"
                )
            )
            names = list(kinds)
        except sqlite3.Error as exc:
            raise SourceError(self.label, f"cannot be read as a SQLite database: {exc}") from None
        self.columns = {n: self._columns(n) for n in names if n in _FARM_TABLES}
        self.tables = {n for n in self.columns if kinds[n] == "table"}  # not views: have rowids
        if not any(t in self.columns for t in ("simulations", *DATA_TABLES)):
            raise SourceError(
                self.label,
                "holds none of the AgentFarm tables (simulations, " + ", ".join(DATA_TABLES) + ")",
            )
        self.per_experiment = any("simulation_id" in self.columns.get(t, ()) for t in DATA_TABLES)

    def _columns(self, name: str) -> list[str]:
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({_quote(name)})")]

    def rows(self, query: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(query, params)
        except sqlite3.Error as exc:
            raise SourceError(self.label, f"cannot be read: {exc}") from None

    def scalar(self, query: str) -> Any:
        """The one value of a one-row query."""
        try:
            return self.db.execute(query).fetchone()[0]
        except sqlite3.Error as exc:
            raise SourceError(self.label, f"cannot be read: {exc}") from None

    def records(self, name: str) -> list[dict[str, Any]]:
        """Every row of a (small) table, as dicts."""
        if name not in self.columns:
            return []
        cur = self.rows(f"SELECT * FROM {_quote(name)}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    def close(self) -> None:
        self.db.close()


# --- value conversions -------------------------------------------------------------------


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        raise BadValue(f"not JSON: {text[:80]!r}") from None


def _boolean(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise BadValue(f"{value!r} is not a boolean (0 or 1)")


_AS_BOOLEAN = {0: False, 1: True, None: None}


def _booleans(values: Sequence[Any]) -> list[Any] | None:
    """SQLite's 0/1 (and NULL) as booleans, a column at a time (True == 1, False == 0)."""
    if not set(values) <= _AS_BOOLEAN.keys():
        return None
    return list(map(_AS_BOOLEAN.__getitem__, values))


def _state_step_sql(farm: str) -> str:
    """The step of a state id "<agent_id>-<digits>" of the row's own agent, parsed by SQLite
    (an integer); any other value as it is, for `farm_state_step` to parse or refuse.

    The ids the farm writes, the state of the action's step and of the next one, are
    matched first by comparing with the id they would have (0.54 us a value over fetching
    it as it is, where parsing costs 0.60 us; best of 9 runs over 200,000 actions)."""
    c = _quote(farm)
    tail = f"substr({c}, length(agent_id) + 2)"
    step = "typeof(step_number) = 'integer'"
    return (
        f"CASE WHEN {step} AND {c} = agent_id || '-' || step_number THEN step_number"
        f" WHEN {step} AND {c} = agent_id || '-' || (step_number + 1) THEN step_number + 1"
        f" WHEN typeof({c}) = 'text' AND substr({c}, 1, length(agent_id) + 1) = agent_id || '-'"
        f" AND {tail} <> '' AND {tail} NOT GLOB '*[^0-9]*' THEN CAST({tail} AS INTEGER)"
        f" ELSE {c} END"
    )


def _jsonb_sql(farm: str) -> str:
    """JSON text that SQLite finds valid, as jsonb's wire payload (a version byte, then the
    text): no parsing or encoding in Python. Text with a NUL or surrogate escape (PostgreSQL
    refuses some), text that is not JSON, and blobs come as text for the Python path."""
    c = _quote(farm)
    return (
        f"CASE WHEN typeof({c}) = 'blob' THEN CAST({c} AS TEXT)"
        f" WHEN json_valid({c}) AND instr({c}, '\\u0000') = 0 AND {c} NOT LIKE '%\\ud%'"
        f" THEN CAST(X'01' || {c} AS BLOB) ELSE {c} END"
    )


def _payloads(values: Sequence[Any]) -> list[Any] | None:
    """A column of SQLite's payloads (and NULLs) as `JsonbWire`s, which the value rules
    pass as encoded."""
    types = set(map(type, values))
    if types == {bytes}:
        return list(map(JsonbWire, values))
    if types == {bytes, type(None)}:
        return [None if v is None else JsonbWire(v) for v in values]
    return None


def _jsonb_fix(table_name: str, column: str, count: Callable[[], None]) -> Fix:
    """A jsonb column read through `_jsonb_sql`: payloads pass; other text is parsed in
    Python (or kept as a JSON string, counted) and encoded by the value rules."""
    parse = json_or_text(count).value

    def value(v: Any) -> Any:
        if v is None:
            return None
        if type(v) is bytes:
            return JsonbWire(v)
        try:
            return param(table_name, column, parse(v))
        except ValidationError as exc:
            raise BadValue(exc.reason) from None

    return Fix(value, _payloads)


def _timestamp(value: Any) -> datetime | None:
    """A farm DATETIME (SQLAlchemy's ISO text; naive means UTC)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise BadValue(f"{value!r} is not a date and time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- the plan of each data table ---------------------------------------------------------


def _plan(file: _File, name: str, simulation_id: str | None, report: ImportReport) -> _Plan:
    spec = SPECS[name]
    present = file.columns[name]
    by_simulation = "simulation_id" in present
    treport = report.table(name, name)
    farm_of = {c.name: _RENAMED.get(c.name, c.name) for c in spec.columns}
    key_replaced = _KEY_REPLACED.get(name, {})
    order_id = next(iter(key_replaced), None)
    selects: list[str] = []
    fills: list[tuple[int, Any]] = []
    fixups: list[tuple[int, Fix]] = []
    source = _quote(name)
    for position, col in enumerate(spec.columns):
        farm = farm_of[col.name]
        if col.name == "simulation_id":
            if by_simulation:
                selects.append("CAST(simulation_id AS TEXT)")
            elif simulation_id is None:
                raise SimSchemaError("a per-simulation file needs its simulation id")
            else:
                fills.append((position, simulation_id))
            treport.mapped["simulation_id"] = "simulation_id" if by_simulation else "(the file)"
            continue
        if col.ordinal:
            partition = ", ".join(
                (["simulation_id"] if by_simulation else []) + ["step_number", "agent_id"]
            )
            order = _quote(order_id) if order_id in present else "rowid"
            window = f"ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order}) - 1"
            if not _repeats(file, name, partition):
                # one row per agent and step, as the farm writes actions: every ordinal is
                # 0 (the check sorts keys only: 0.4 us a row, numbering 1.5 us; 200,000)
                selects.append("0")
            elif name in file.tables:
                # Numbered in a narrow subquery joined back by rowid: sorting whole rows for
                # the window cost 0.6 us a row more (100,000 actions).
                selects.append("o.sim_schema_ordinal")
                source = (
                    f"(SELECT rowid AS sim_schema_row, {window} AS sim_schema_ordinal"
                    f" FROM {_quote(name)}) o JOIN {_quote(name)}"
                    f" ON {_quote(name)}.rowid = o.sim_schema_row"
                )
            else:
                selects.append(window)
            treport.mapped["ordinal"] = f"{order_id} order" if order_id in present else "row order"
            continue
        if farm not in present:
            if col.name in _OURS_ONLY.get(name, ()):
                # a default the farm schema has no column for, or NULL
                fills.append((position, None if col.nullable else col.default))
                continue
            if not col.nullable and col.default is None and col.name not in _CATEGORIES:
                raise SourceError(file.label, "the column is missing", table=name, field=farm)
            selects.append("NULL")
            fixups.append((position, _missing(treport, col)))
            continue
        if col.kind == "jsonb":
            selects.append(_jsonb_sql(farm))
        elif farm in ("state_before_id", "state_after_id") and "agent_id" in present:
            selects.append(_state_step_sql(farm))
        else:
            selects.append(_quote(farm))
        treport.mapped[col.name] = farm
        fixup = _convert(treport, name, col, farm)
        if fixup is not None:
            fixups.append((position, fixup))
    for farm in present:
        if farm in farm_of.values() or farm == "simulation_id":
            continue
        treport.skipped[farm] = key_replaced.get(farm, "no column for it in this schema")
    select = f"SELECT {', '.join(selects)} FROM {source}"
    if by_simulation:  # the rows of one simulation come together
        select += " ORDER BY simulation_id"
    key_columns = [
        farm_of[k]
        for k in ("simulation_id", "step", "agent_id", "resource_id")
        if k in farm_of and farm_of[k] in present
    ]
    key_positions = [
        spec.position(k)
        for k in ("simulation_id", "step", "agent_id", "resource_id")
        if k in farm_of and farm_of[k] in present
    ]
    ordinal_at = spec.position("ordinal") if "ordinal" in spec.names else None

    def describe(row: Sequence[Any]) -> str:
        shown = [f"{c}={row[p]!r}" for c, p in zip(key_columns, key_positions, strict=True)]
        if ordinal_at is not None and row[ordinal_at] is not None:
            shown.append(f"#{row[ordinal_at] + 1} of its agent at its step")
        return "(" + ", ".join(shown) + ")"

    def source_column(column: str) -> str:
        return farm_of.get(column, column)

    return _Plan(treport, select, tuple(fixups), tuple(fills), describe, source_column)


def _repeats(file: _File, name: str, partition: str) -> bool:
    """Whether some agent has more than one row of the table at one step."""
    query = f"SELECT EXISTS (SELECT 1 FROM {_quote(name)} GROUP BY {partition} HAVING count(*) > 1)"
    return bool(file.scalar(query))


def _missing(report: TableReport, col: Column) -> Fix:
    """A farm column the file lacks: our column's default (NULL, or 'unknown' for a
    required category), counted."""
    default = col.default
    if default is None and not col.nullable:
        default = UNKNOWN
    what = f"{col.name}: the source has no {_RENAMED.get(col.name, col.name)} column, {default!r}"
    return defaulting(None, default, counter(report, what))


def _convert(report: TableReport, table_name: str, col: Column, farm: str) -> Fix | None:
    """The conversion a farm column needs into `col`, or None if its values pass as they are."""
    convert: Fix | None = None
    if col.kind == "bool":
        convert = Fix(_boolean, _booleans)
    elif col.kind == "jsonb":
        count = counter(report, f"{col.name}: not JSON text, kept as a string")
        convert = _jsonb_fix(table_name, col.name, count)
    elif farm in ("state_before_id", "state_after_id"):
        convert = farm_state_step
    if not col.nullable:
        default = (
            col.default
            if col.default is not None
            else (UNKNOWN if col.name in _CATEGORIES else None)
        )
        if default is not None:
            return defaulting(convert, default, counter(report, f"{col.name}: NULL, {default!r}"))
    if convert is None:
        return None
    return unless_null(convert)


def _chunks(
    file: _File, plan: _Plan, batch_size: int, progress: Progress
) -> Iterator[tuple[str, list[Any]]]:
    """(simulation id, rows) batches of at most `batch_size` rows, each of one simulation."""
    cur = file.rows(plan.select)
    fixups, fills = plan.fixups, plan.fills
    while True:
        try:
            fetched = cur.fetchmany(batch_size)
        except sqlite3.Error as exc:
            raise SourceError(
                file.label, f"cannot be read: {exc}", table=plan.report.source
            ) from None
        if not fetched:
            return
        progress.advance(len(fetched))
        plan.report.rows_read += len(fetched)
        rows: list[Any] = fetched
        if fixups or fills:
            rows = fixed_rows(fetched, fixups, _locator(file, plan, fetched), fills)
        if rows[0][0] == rows[-1][0]:
            yield rows[0][0], rows
        else:
            for simulation_id, group in groupby(rows, key=lambda r: r[0]):
                yield simulation_id, list(group)


def _locator(
    file: _File, plan: _Plan, rows: Sequence[Sequence[Any]]
) -> Callable[[int, int, BadValue], SourceError]:
    """The error of a value that cannot be converted, naming its source row and column."""

    def located(i: int, position: int, exc: BadValue) -> SourceError:
        column = plan.source_column(SPECS[plan.report.table].names[position])
        return SourceError(
            file.label,
            str(exc),
            table=plan.report.source,
            row=plan.describe(plan.full(rows[i])),
            field=column,
        )

    return located


# --- simulations and experiments ---------------------------------------------------------

_EXPERIMENT_COLUMNS = {
    "experiment_id": "experiment_id",
    "name": "name",
    "description": "description",
    "hypothesis": "hypothesis",
    "status": "status",
    "variables": "variables",
    "tags": "tags",
    "results_summary": "results_summary",
    "created_at": "creation_date",
    "updated_at": "last_updated",
}
_SIMULATION_COLUMNS = {
    "simulation_id": "simulation_id",
    "experiment_id": "experiment_id",
    "status": "status",
    "parameters": "parameters",
    "results_summary": "results_summary",
    "started_at": "start_time",
    "ended_at": "end_time",
}
_JSON_COLUMNS = {"variables", "tags", "results_summary", "parameters"}
_TIME_COLUMNS = {"created_at", "updated_at", "started_at", "ended_at"}


def _record(
    file: _File, table_name: str, row: dict[str, Any], columns: dict[str, str], report: TableReport
) -> dict[str, Any]:
    """Our columns of a farm experiment or simulation row; the farm columns we have no
    place for in `metadata.agentfarm`."""
    values: dict[str, Any] = {}
    for ours, farm in columns.items():
        if farm not in row:
            continue
        value = row[farm]
        report.mapped[ours] = farm
        try:
            if ours in _JSON_COLUMNS:
                value = _json(value)
                if value is None:
                    continue
            elif ours in _TIME_COLUMNS:
                value = _timestamp(value)
        except BadValue as exc:
            key = next(iter(columns.values()))
            raise SourceError(
                file.label, str(exc), table=table_name, row=f"({key}={row.get(key)!r})", field=farm
            ) from None
        if value is not None:
            values[ours] = str(value) if ours.endswith("_id") else value
    extra = {k: v for k, v in row.items() if k not in columns.values() and v is not None}
    for k in extra:
        report.mapped[f"metadata.agentfarm.{k}"] = k
    values["metadata"] = {"agentfarm": {"source": file.path.name, **extra}}
    return values


async def _import_file(
    sink: Sink,
    file: _File,
    report: ImportReport,
    *,
    experiment_id: str | None,
    simulation_id: str | None,
    batch_size: int,
    progress_stream: TextIO | None,
    progress: bool | None,
) -> None:
    sink.begin_source(file.label)
    if experiment_id is None:
        ereport = report.table("experiments", "experiments")
        for row in file.records("experiments"):
            values = _record(file, "experiments", row, _EXPERIMENT_COLUMNS, ereport)
            values.setdefault("name", values.get("experiment_id"))
            status(values, ExperimentStatus, ExperimentStatus.COMPLETED.value, ereport, "agentfarm")
            ereport.rows_read += 1
            before = len(report.experiments)
            await sink.experiment(values)
            ereport.rows_written += len(report.experiments) - before
            ereport.rows_already_stored += 1 - (len(report.experiments) - before)
    elif "experiments" in file.columns:
        report.note(
            f"{file.label}: its experiments rows are not imported: --experiment "
            f"{experiment_id} groups its simulations"
        )
    sreport = report.table("simulations", "simulations")
    rows = file.records("simulations")
    if not file.per_experiment and len(rows) > 1:
        raise SourceError(
            file.label,
            f"a per-simulation file with {len(rows)} simulations rows",
            table="simulations",
        )
    file_simulation = simulation_id or file.path.stem
    for row in rows:
        values = _record(file, "simulations", row, _SIMULATION_COLUMNS, sreport)
        if not file.per_experiment:
            values["simulation_id"] = file_simulation
            sreport.mapped["simulation_id"] = "(the file; its own id in metadata.agentfarm)"
            if "simulation_id" in row:
                values["metadata"]["agentfarm"]["simulation_id"] = row["simulation_id"]
        if experiment_id is not None:
            values["experiment_id"] = experiment_id
        fallback = "completed" if values.get("ended_at") else "aborted"
        status(values, SimulationStatus, fallback, sreport, "agentfarm")
        sreport.rows_read += 1
        await sink.simulation_counted(values, sreport)
    await _configs(sink, file, file_simulation, experiment_id, report)
    batches = _file_batches(
        file,
        file_simulation,
        report,
        batch_size,
        lambda name, total: Progress(
            f"{file.path.name} {name}", total, stream=progress_stream, enabled=progress
        ),
    )
    async with prefetched(batches) as fetched:
        async for plan, sim, batch in fetched:
            if not sink.has_simulation(sim):
                unlisted = _unlisted(file, sim, experiment_id, sreport)
                await sink.simulation_counted(unlisted, sreport)
            await sink.write(plan.report, sim, batch, plan.describe, plan.source_column)


def _file_batches(
    file: _File,
    simulation_id: str,
    report: ImportReport,
    batch_size: int,
    bar: Callable[[str, int], Progress],
) -> Generator[tuple[_Plan, str, list[Any]], None, None]:
    """The batches of every data table of the file, parents first, read in one go: the
    next table is planned and read while the last batches of one are written (a reader per
    table ran dry at each table's end)."""
    for name in DATA_TABLES:
        if name not in file.columns:
            continue
        plan = _plan(file, name, simulation_id, report)
        total = file.scalar(f"SELECT count(*) FROM {_quote(name)}")
        with bar(name, total) as progress:
            for sim, batch in _chunks(file, plan, batch_size, progress):
                yield plan, sim, batch


def _unlisted(
    file: _File, simulation_id: str, experiment_id: str | None, report: TableReport
) -> dict[str, Any]:
    """A simulation the file's data names but its simulations table does not list."""
    report.defaulted["a simulation with no simulations row: status 'completed'"] += 1
    values: dict[str, Any] = {
        "simulation_id": simulation_id,
        "status": "completed",
        "metadata": {"agentfarm": {"source": file.path.name}},
    }
    if experiment_id is not None:
        values["experiment_id"] = experiment_id
    return values


async def _configs(
    sink: Sink, file: _File, file_simulation: str, experiment_id: str | None, report: ImportReport
) -> None:
    """simulation_config: config_id as it is, config_data as jsonb."""
    rows = file.records("simulation_config")
    if not rows:
        return
    creport = report.table("simulation_config", "simulation_config")
    creport.mapped.update({"config_id": "config_id", "config": "config_data"})
    creport.skipped["timestamp"] = "created_at is the time of the import"
    out: list[tuple[str, int, Any]] = []
    for row in rows:
        sim = str(row["simulation_id"]) if file.per_experiment else file_simulation
        try:
            config = _json(row.get("config_data"))
        except BadValue as exc:
            raise SourceError(
                file.label,
                str(exc),
                table="simulation_config",
                row=f"(config_id={row.get('config_id')!r})",
                field="config_data",
            ) from None
        if not sink.has_simulation(sim):
            sreport = report.table("simulations", "simulations")
            await sink.simulation_counted(_unlisted(file, sim, experiment_id, sreport), sreport)
        out.append((sim, row["config_id"], config))
    creport.rows_read += len(out)
    written = await sink.insert_many(
        "simulation_config", ("simulation_id", "config_id", "config"), out
    )
    creport.rows_written += written
    creport.rows_already_stored += len(out) - written


# --- the entry point ---------------------------------------------------------------------


async def import_agentfarm(
    store: Store,
    paths: Iterable[str | Path],
    *,
    experiment_id: str | None = None,
    simulation_id: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    progress_stream: TextIO | None = None,
) -> ImportReport:
    """Import AgentFarm SQLite files (per-simulation or experiment-wide) into `store`.

    `experiment_id` groups every simulation imported into that experiment (created if
    missing; the files' own experiments rows are then not imported). `simulation_id`
    names the simulation of a single per-simulation file (default: the file's stem).
    `progress`: draw progress on stderr (default: when it is a terminal).
    """
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
    files = [Path(p) for p in paths]
    if not files:
        raise SimSchemaError("no file to import")
    if simulation_id is not None and len(files) != 1:
        raise SimSchemaError("a simulation id can name the simulation of one file only")
    opened: list[_File] = []
    try:
        for path in files:
            opened.append(_File(path))
        _distinct_simulations(opened, simulation_id)
        report = ImportReport()
        with collector.paused():
            async with opened_sink(store, report) as sink:
                if experiment_id is not None:
                    await sink.experiment(
                        {
                            "experiment_id": experiment_id,
                            "name": experiment_id,
                            "metadata": {"agentfarm": {"sources": [f.path.name for f in opened]}},
                        }
                    )
                for file in opened:
                    await _import_file(
                        sink,
                        file,
                        report,
                        experiment_id=experiment_id,
                        simulation_id=simulation_id,
                        batch_size=batch_size,
                        progress_stream=progress_stream,
                        progress=progress,
                    )
        return report
    finally:
        for file in opened:
            file.close()


def _distinct_simulations(files: Sequence[_File], simulation_id: str | None) -> None:
    """Two per-simulation files may not map to one simulation id."""
    seen: dict[str, Path] = {}
    for f in files:
        if f.per_experiment:
            continue
        name = simulation_id or f.path.stem
        if name in seen:
            raise SimSchemaError(
                f"{seen[name]} and {f.path} would both be simulation {name!r}:"
                " import them one at a time with --simulation-id"
            )
        seen[name] = f.path
