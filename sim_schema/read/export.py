"""Streaming export of simulations to CSV, JSONL or Parquet, and of agent decisions as
training data (JSONL, a JSON array or CSV).

Memory stays constant whatever the size: CSV is `COPY ... TO STDOUT` written chunk by
chunk, JSONL and Parquet read a server-side cursor in batches. Every table of one export
is read in one REPEATABLE READ READ ONLY transaction, so the files are one consistent
snapshot even while simulations keep logging. Each file is written as `<name>.part` and
renamed when complete, so a file with its final name is never a truncated one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, cast

import psycopg
from psycopg import sql

from .. import catalog, ops, readiness
from ..catalog import DATA_TABLES, SIMULATION_TABLES
from ..errors import ConfigurationError, NotFound, OutputError, SimSchemaError
from ..names import DEFAULT_SCHEMA
from ..progress import Progress

Format = Literal["csv", "jsonl", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl", "parquet")
EXTENSIONS: dict[Format, str] = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}

DecisionFormat = Literal["jsonl", "json", "csv"]
DECISION_FORMATS: tuple[DecisionFormat, ...] = ("jsonl", "json", "csv")

# The fields of a training-data record, in file order (docs/analytics.md, "Training data"):
# name -> where it comes from (d: agent_decisions, a: agents, e: events).
DECISION_FIELDS: dict[str, str] = {
    "simulation_id": "d.simulation_id", "step": "d.step", "created_at": "d.created_at",
    "decision_id": "d.decision_id", "agent_id": "d.agent_id", "agent_type": "a.agent_type",
    "event_id": "d.event_id", "event_type": "e.event_type", "prompt": "d.prompt",
    "output": "d.output", "context": "d.context", "action": "d.action",
    "processing_time": "d.processing_time", "feedback": "d.feedback", "rating": "d.rating",
    "reason": "d.reason", "feedback_at": "d.feedback_at",
}  # fmt: skip
DECISION_COLUMNS = tuple(DECISION_FIELDS)
# The stable order of the records: a run's decisions step by step, as they were made.
_DECISION_ORDER = "d.simulation_id, d.step, d.created_at, d.decision_id"

MANIFEST = "manifest.json"
_FETCH = 1000  # rows per server-side cursor round trip
_ROW_GROUP = 65_536  # rows per Parquet row group (held in Arrow memory until written)


@dataclass(frozen=True)
class FileRecord:
    """One written file: what a manifest says about it."""

    rows: int
    bytes: int
    file: str
    sha256: str


@dataclass
class Manifest:
    """What an export wrote; saved as `manifest.json` next to the files."""

    format: Format
    simulations: list[str]
    experiment: str | None
    from_step: int | None
    to_step: int | None
    tables: dict[str, FileRecord] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)  # selected tables with no rows: no file
    exported_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, out_dir: Path) -> Path:
        path = out_dir / MANIFEST
        path.write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def read(cls, out_dir: Path) -> Manifest:
        try:
            data = json.loads((out_dir / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise NotFound(f"no readable {MANIFEST} in {out_dir}: {exc}") from None
        tables = {name: FileRecord(**rec) for name, rec in data.pop("tables").items()}
        return cls(tables=tables, **data)


def validate_tables(names: Sequence[str] | None) -> list[str]:
    """The tables to export, in dependency order; an unknown name lists the valid ones.

    None: every data table (`catalog.DATA_TABLES`; the ingest ledger only when named)."""
    if names is None:
        return list(DATA_TABLES)
    unknown = [n for n in names if n not in SIMULATION_TABLES]
    if unknown:
        raise ConfigurationError(
            f"unknown table(s) {', '.join(map(repr, unknown))}; "
            f"valid tables: {', '.join(SIMULATION_TABLES)}"
        )
    return [t for t in SIMULATION_TABLES if t in names]


def validate_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ConfigurationError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return fmt


def export(
    conn: psycopg.Connection[Any],
    out_dir: str | Path,
    *,
    schema: str = DEFAULT_SCHEMA,
    simulations: Sequence[str] | None = None,
    experiment: str | None = None,
    tables: Sequence[str] | None = None,
    fmt: str = "csv",
    from_step: int | None = None,
    to_step: int | None = None,
    include_empty: bool = False,
    progress: bool | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Export the selected simulations' rows, one file per table, plus `manifest.json`.

    `tables` None: every data table that has rows for the selection (`include_empty` adds
    the empty ones; the ingest ledger is exported only when named). `conn` is any idle
    connection (autocommit or not, any search_path; handed back as it was). `progress`
    None: a bar on stderr when it is a terminal. An output directory that already holds
    files is refused unless `overwrite`; a file that cannot be written is an `OutputError`.
    """
    work = export_work(
        Path(out_dir), schema, simulations=simulations, experiment=experiment, tables=tables,
        fmt=fmt, from_step=from_step, to_step=to_step, include_empty=include_empty,
        progress=progress, overwrite=overwrite,
    )  # fmt: skip
    result: Manifest = readiness.run_borrowed(conn, work, what="export", schema=schema)
    return result


async def export_async(
    conn: psycopg.AsyncConnection[Any],
    out_dir: str | Path,
    *,
    schema: str = DEFAULT_SCHEMA,
    simulations: Sequence[str] | None = None,
    experiment: str | None = None,
    tables: Sequence[str] | None = None,
    fmt: str = "csv",
    from_step: int | None = None,
    to_step: int | None = None,
    include_empty: bool = False,
    progress: bool | None = None,
    overwrite: bool = False,
) -> Manifest:
    """`export` from async code: the same files, the same constant memory."""
    work = export_work(
        Path(out_dir), schema, simulations=simulations, experiment=experiment, tables=tables,
        fmt=fmt, from_step=from_step, to_step=to_step, include_empty=include_empty,
        progress=progress, overwrite=overwrite,
    )  # fmt: skip
    result: Manifest = await readiness.run_borrowed_async(conn, work, what="export", schema=schema)
    return result


def export_decisions(
    conn: psycopg.Connection[Any],
    out_file: str | Path,
    *,
    schema: str = DEFAULT_SCHEMA,
    simulations: Sequence[str] | None = None,
    experiment: str | None = None,
    agents: Sequence[str] | None = None,
    min_rating: float | None = None,
    rated_only: bool = False,
    fmt: str = "jsonl",
    progress: bool | None = None,
    overwrite: bool = False,
) -> FileRecord:
    """Agent decisions as training data (no row limit, constant memory), ordered by
    (simulation, step, created_at, decision_id), with the fields of `DECISION_FIELDS`.

    `fmt`: "jsonl" (one JSON object per line), "json" (one JSON array) or "csv" (a header
    line; a JSON column holding a string is written as that string, any other JSON value
    as its JSON text). With neither `simulations` nor `experiment`, every simulation's
    decisions. An existing file is refused unless `overwrite`.
    """
    work = _export_decisions(
        Path(out_file), schema, simulations, experiment, agents, min_rating, rated_only, fmt,
        progress, overwrite,
    )
    result: FileRecord = readiness.run_borrowed(conn, work, what="export", schema=schema)
    return result


async def export_decisions_async(
    conn: psycopg.AsyncConnection[Any],
    out_file: str | Path,
    *,
    schema: str = DEFAULT_SCHEMA,
    simulations: Sequence[str] | None = None,
    experiment: str | None = None,
    agents: Sequence[str] | None = None,
    min_rating: float | None = None,
    rated_only: bool = False,
    fmt: str = "jsonl",
    progress: bool | None = None,
    overwrite: bool = False,
) -> FileRecord:
    """`export_decisions` from async code: the same file, the same constant memory."""
    work = _export_decisions(
        Path(out_file), schema, simulations, experiment, agents, min_rating, rated_only, fmt,
        progress, overwrite,
    )
    result: FileRecord = await readiness.run_borrowed_async(
        conn, work, what="export", schema=schema
    )
    return result


# --- the work, once ----------------------------------------------------------------------


def export_work(
    out: Path,
    schema: str,
    *,
    simulations: Sequence[str] | None = None,
    experiment: str | None = None,
    tables: Sequence[str] | None = None,
    fmt: str = "csv",
    from_step: int | None = None,
    to_step: int | None = None,
    include_empty: bool = False,
    progress: bool | None = None,
    overwrite: bool = False,
) -> ops.Work:
    """The export as work (`sim_schema.ops`): `export`, `export_async` and archives run it."""
    form = validate_format(fmt)
    selected = validate_tables(tables)
    if form == "parquet":
        _pyarrow()  # fail before touching the database
    prepare_directory(out, overwrite)
    with_total = _wants_progress(progress)
    skip_empty = tables is None and not include_empty
    manifest = yield from snapshot(
        schema, _export_tables(out, form, selected, simulations, experiment, from_step, to_step,
                               skip_empty, progress, with_total),
    )  # fmt: skip
    manifest.write(out)
    return manifest


def _export_tables(
    out: Path,
    form: Format,
    selected: list[str],
    simulations: Sequence[str] | None,
    experiment: str | None,
    from_step: int | None,
    to_step: int | None,
    skip_empty: bool,
    progress: bool | None,
    with_total: bool,
) -> ops.Work:
    ids = yield from resolve_simulations(simulations, experiment)
    manifest = Manifest(form, ids, experiment, from_step, to_step)
    for table in selected:
        query, params = _select(table, ids, from_step, to_step)
        if skip_empty:
            found = yield ops.Query(sql.SQL("SELECT EXISTS ({})").format(query), params)
            if not found[0][0]:
                manifest.empty.append(table)
                continue
        total = (yield from _count(query, params)) if with_total else None
        with Progress(table, total, enabled=progress) as bar:
            path = out / f"{table}.{EXTENSIONS[form]}"
            manifest.tables[table] = yield from _WRITERS[form](query, params, path, bar)
    manifest.exported_at = datetime.now(UTC).isoformat()
    return manifest


def validate_decision_format(fmt: str) -> DecisionFormat:
    if fmt not in DECISION_FORMATS:
        raise ConfigurationError(
            f"unknown format {fmt!r} for decisions; valid formats: {', '.join(DECISION_FORMATS)}"
        )
    return fmt


def _decisions_query(form: DecisionFormat, where: list[sql.Composable]) -> sql.Composed:
    """The training records: decisions with their agent's type and their event's type.
    For CSV, JSON columns are text: a JSON string as itself (`#>> '{}'`), else JSON text."""
    json_columns = {c.name for c in catalog.table("agent_decisions").columns if c.kind == "jsonb"}
    fields = [
        sql.SQL("{} #>> '{{}}' AS {}" if form == "csv" and name in json_columns else "{} AS {}")
        .format(sql.SQL(source), sql.Identifier(name))  # the sources: literals above
        for name, source in DECISION_FIELDS.items()
    ]
    return sql.SQL(
        "SELECT {} FROM agent_decisions d"
        " JOIN agents a ON a.simulation_id = d.simulation_id AND a.agent_id = d.agent_id"
        " LEFT JOIN events e ON e.simulation_id = d.simulation_id AND e.event_id = d.event_id"
        " WHERE {} ORDER BY " + _DECISION_ORDER
    ).format(
        sql.SQL(", ").join(fields), sql.SQL(" AND ").join(where) if where else sql.SQL("true")
    )


def _export_decisions(
    out: Path,
    schema: str,
    simulations: Sequence[str] | None,
    experiment: str | None,
    agents: Sequence[str] | None,
    min_rating: float | None,
    rated_only: bool,
    fmt: str,
    progress: bool | None,
    overwrite: bool,
) -> ops.Work:
    form = validate_decision_format(fmt)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists: choose another file, or pass --overwrite"
                          " (overwrite=True)")
    with_total = _wants_progress(progress)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create directory {out.parent}: {_reason(exc)}") from exc

    def body() -> ops.Work:
        where: list[sql.Composable] = []
        params: list[Any] = []
        if simulations is not None or experiment is not None:
            where.append(sql.SQL("d.simulation_id = ANY(%s)"))
            params.append((yield from resolve_simulations(simulations, experiment)))
        if agents:
            where.append(sql.SQL("d.agent_id = ANY(%s)"))
            params.append(list(agents))
        if min_rating is not None:
            where.append(sql.SQL("d.rating >= %s"))
            params.append(min_rating)
        if rated_only:
            where.append(sql.SQL("d.rating IS NOT NULL"))
        query = _decisions_query(form, where)
        total = (yield from _count(query, params)) if with_total else None
        with Progress("agent_decisions", total, enabled=progress) as bar:
            writer = _DECISION_WRITERS[form]
            record: FileRecord = yield from writer(query, params, out, bar)
        return record

    result: FileRecord = yield from snapshot(schema, body())
    return result


def snapshot(schema: str, body: ops.Work) -> ops.Work:
    """`body` in one REPEATABLE READ READ ONLY transaction with `schema` as its search path:
    every table read at the same instant, whatever the connection's own search path."""
    return ops.transaction(
        body, begin="BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", schema=schema
    )


def resolve_simulations(simulations: Sequence[str] | None, experiment: str | None) -> ops.Work:
    """The simulation ids selected by a list or an experiment; unknown ones are named."""
    if (simulations is None) == (experiment is None):
        raise ConfigurationError("give either simulations or an experiment, not both or neither")
    if experiment is not None:
        found = yield ops.Query(
            "SELECT 1 FROM experiments WHERE experiment_id = %s", (experiment,)
        )
        if not found:
            raise NotFound(f"experiment {experiment!r} does not exist")
        rows = yield ops.Query(
            "SELECT simulation_id FROM simulations WHERE experiment_id = %s ORDER BY 1",
            (experiment,),
        )
        return [r[0] for r in rows]
    wanted = list(dict.fromkeys(cast(Sequence[str], simulations)))
    if not wanted:
        raise ConfigurationError("no simulation given")
    rows = yield ops.Query(
        "SELECT simulation_id FROM simulations WHERE simulation_id = ANY(%s)", (wanted,)
    )
    missing = sorted(set(wanted) - {r[0] for r in rows})
    if missing:
        raise NotFound(f"simulation(s) not found: {', '.join(map(repr, missing))}")
    return wanted


# --- reading back ----------------------------------------------------------------------


def count_file_rows(path: Path, fmt: str) -> int:
    """Rows in an exported file, read from the file itself (streaming)."""
    form = validate_format(fmt)
    if form == "parquet":
        _, pq = _pyarrow()
        return int(pq.ParquetFile(path).metadata.num_rows)
    if form == "jsonl":
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    with path.open(newline="", encoding="utf-8") as f:
        return max(sum(1 for _ in csv.reader(f)) - 1, 0)  # minus the header


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- internals ---------------------------------------------------------------------------


def _select(
    table: str, ids: list[str], from_step: int | None, to_step: int | None
) -> tuple[sql.Composed, list[Any]]:
    where: list[sql.Composable] = [sql.SQL("simulation_id = ANY(%s)")]
    params: list[Any] = [ids]
    if catalog.table(table).has_step:
        if from_step is not None:
            where.append(sql.SQL("step >= %s"))
            params.append(from_step)
        if to_step is not None:
            where.append(sql.SQL("step <= %s"))
            params.append(to_step)
    query = sql.SQL("SELECT * FROM {} WHERE {}").format(
        sql.Identifier(table), sql.SQL(" AND ").join(where)
    )
    return query, params


def _wants_progress(progress: bool | None) -> bool:
    return progress if progress is not None else Progress("").enabled


def _count(query: sql.Composed, params: list[Any]) -> ops.Work:
    rows = yield ops.Query(sql.SQL("SELECT count(*) FROM ({}) AS t").format(query), params)
    return int(rows[0][0])


class _HashingFile:
    """A binary file that hashes and counts what goes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.digest = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.f.write(data)
        self.digest.update(data)
        self.bytes += len(data)
        return len(data)

    # What pyarrow's PythonFile needs of a sink; `_output` closes the real file.
    @property
    def closed(self) -> bool:
        return self.f.closed

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.flush()


def prepare_directory(out: Path, overwrite: bool) -> None:
    """Create an export's directory; one that already holds files only with `overwrite`."""
    try:
        if out.is_dir() and not overwrite and any(out.iterdir()):
            raise OutputError(
                f"output directory {out} is not empty: choose another, or pass --overwrite"
                " (overwrite=True) to replace its files"
            )
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out}: {_reason(exc)}") from exc


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextmanager
def _output(path: Path) -> Iterator[_HashingFile]:
    """Write to `<path>.part`, rename on success, remove on failure; a file error is an
    `OutputError` naming the file."""
    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as f:
            yield _HashingFile(f)
        os.replace(part, path)
    except BaseException as exc:
        with suppress(OSError):
            part.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
        raise


def _record(path: Path, rows: int, out: _HashingFile) -> FileRecord:
    return FileRecord(rows, out.bytes, path.name, out.digest.hexdigest())


def _write_csv(query: sql.Composed, params: list[Any], path: Path, bar: Progress) -> ops.Work:
    copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT CSV, HEADER)").format(query)
    with _output(path) as out:

        def sink(chunk: bytes) -> None:  # the server sends one row per message, header first
            out.write(chunk)
            bar.advance(1)

        rows = yield ops.CopyOut(copy_sql, params, sink)
        bar.set(rows)
    return _record(path, rows, out)


def _write_jsonl(
    query: sql.Composed, params: list[Any], path: Path, bar: Progress
) -> ops.Work:
    # PostgreSQL renders the JSON: jsonb nested, timestamps ISO 8601, NaN as a string.
    as_json = sql.SQL("SELECT row_to_json(t)::text FROM ({}) AS t").format(query)
    with _output(path) as out:

        def sink(_: Sequence[psycopg.Column], batch: list[tuple[Any, ...]]) -> None:
            if batch:
                out.write(("\n".join(r[0] for r in batch) + "\n").encode())
                bar.advance(len(batch))

        rows = yield ops.Stream(as_json, params, _FETCH, sink)
    return _record(path, rows, out)


def _write_json_array(
    query: sql.Composed, params: list[Any], path: Path, bar: Progress
) -> ops.Work:
    """One JSON array, one element per line, written as the rows arrive."""
    as_json = sql.SQL("SELECT row_to_json(t)::text FROM ({}) AS t").format(query)
    with _output(path) as out:
        out.write(b"[")
        separator = b"\n"

        def sink(_: Sequence[psycopg.Column], batch: list[tuple[Any, ...]]) -> None:
            nonlocal separator
            for (text,) in batch:
                out.write(separator + text.encode())
                separator = b",\n"
            bar.advance(len(batch))

        rows = yield ops.Stream(as_json, params, _FETCH, sink)
        out.write(b"\n]\n" if rows else b"]\n")
    return _record(path, rows, out)


class _ParquetSink:
    """Rows in batches to a Parquet file: row groups of `_ROW_GROUP` rows, schema from the
    first batch's column types (json, jsonb and uuid arrive as text)."""

    def __init__(self, out: _HashingFile, bar: Progress) -> None:
        self.pa, self.pq = _pyarrow()
        self.out, self.bar = out, bar
        self.writer: Any = None
        self.schema: Any = None
        self.group: list[Any] = []

    def __call__(self, description: Sequence[psycopg.Column], batch: list[tuple[Any, ...]]) -> None:
        pa = self.pa
        if self.writer is None:
            self.schema = pa.schema([(c.name, _arrow_type(pa, c.type_code)) for c in description])
            self.writer = self.pq.ParquetWriter(cast(IO[bytes], self.out), self.schema)
        if not batch:
            return
        columns = list(zip(*batch, strict=True))
        arrays = [pa.array(c, type=f.type) for c, f in zip(columns, self.schema, strict=True)]
        self.group.append(pa.record_batch(arrays, schema=self.schema))
        self.bar.advance(len(batch))
        if sum(b.num_rows for b in self.group) >= _ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        self.writer.write_table(self.pa.Table.from_batches(self.group, schema=self.schema))
        self.group = []

    def close(self, rows: int) -> None:
        if self.writer is None:
            return
        if self.group or rows == 0:
            self._flush()
        self.writer.close()


def _write_parquet(
    query: sql.Composed, params: list[Any], path: Path, bar: Progress
) -> ops.Work:
    with _output(path) as out:
        sink = _ParquetSink(out, bar)
        rows = yield ops.Stream(query, params, _FETCH, sink, as_text=("json", "jsonb", "uuid"))
        sink.close(rows)
    return _record(path, rows, out)


_WRITERS = {"csv": _write_csv, "jsonl": _write_jsonl, "parquet": _write_parquet}
_DECISION_WRITERS = {"csv": _write_csv, "jsonl": _write_jsonl, "json": _write_json_array}

_ARROW_TYPES = {
    16: "bool_", 21: "int16", 23: "int32", 20: "int64", 700: "float32", 701: "float64",
    25: "string", 1043: "string", 114: "string", 3802: "string", 2950: "string",
}  # fmt: skip


def _arrow_type(pa: Any, oid: int) -> Any:
    if oid in (1184, 1114):  # timestamptz, timestamp
        return pa.timestamp("us", tz="UTC" if oid == 1184 else None)
    if oid == 1009:  # text[]
        return pa.list_(pa.string())
    name = _ARROW_TYPES.get(oid)
    if name is None:
        raise SimSchemaError(f"Parquet export: no Arrow type for PostgreSQL type oid {oid}")
    return getattr(pa, name)()


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow  # type: ignore[import-untyped]
        import pyarrow.parquet  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigurationError(
            "Parquet export needs pyarrow: pip install 'sim_schema[parquet]'"
        ) from None
    return pyarrow, pyarrow.parquet


__all__ = [
    "DECISION_COLUMNS",
    "DECISION_FIELDS",
    "DECISION_FORMATS",
    "FORMATS",
    "MANIFEST",
    "FileRecord",
    "Manifest",
    "count_file_rows",
    "export",
    "export_async",
    "export_decisions",
    "export_decisions_async",
    "file_sha256",
    "resolve_simulations",
    "validate_decision_format",
    "validate_format",
    "validate_tables",
]
