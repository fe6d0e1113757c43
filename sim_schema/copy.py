"""The bulk writer: binary COPY of validated rows into the high-volume tables.

The only module that knows each table's COPY column spec. A batch is validated column by
column before anything is sent, then written in ONE transaction together with its row in
the `ingest_batches` ledger: a replayed batch (the commit succeeded but its
acknowledgement was lost) finds its ledger row and is skipped, so it is never written twice.

Rows are tuples in the spec's column order, `simulation_id` first. JSONB values are
serialized here once (stdlib json, `allow_nan=False`) and sent as jsonb's binary format,
so the validation and the serialization are the same pass.
"""

from __future__ import annotations

import json
import numbers
import re
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import errors as pg_errors
from psycopg import postgres, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from .errors import SimSchemaError, ValidationError

Kind = Literal["text", "int4", "int8", "float8", "bool", "jsonb", "uuid", "text[]"]
Row = tuple[Any, ...]

_PG_TYPE: dict[str, str] = {
    "text": "text",
    "int4": "int4",
    "int8": "int8",
    "float8": "float8",
    "bool": "bool",
    "jsonb": "jsonb",
    "uuid": "uuid",
    "text[]": "text[]",
}
_LIMITS = {"int4": (-(2**31), 2**31 - 1), "int8": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class Column:
    """One COPY column: its PostgreSQL type, whether NULL is allowed, a lower bound."""

    name: str
    kind: Kind
    nullable: bool = True
    minimum: int | None = None  # mirrors the table's `CHECK (col >= n)`, caught before COPY
    default: Any = None  # what a mapping without this key gets (the column's DEFAULT)


@dataclass(frozen=True)
class TableSpec:
    """The COPY column list of one table (`simulation_id` first), in the order rows carry."""

    name: str
    columns: tuple[Column, ...]
    names: tuple[str, ...] = field(init=False)
    json_positions: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))
        positions = tuple(i for i, c in enumerate(self.columns) if c.kind == "jsonb")
        object.__setattr__(self, "json_positions", positions)

    def row(self, simulation_id: str, values: Mapping[str, Any]) -> Row:
        """A row tuple from a mapping of column names (missing keys get the column default)."""
        unknown = values.keys() - self.names
        if unknown:
            raise ValidationError(self.name, -1, sorted(unknown)[0], "no such column")
        get = values.get
        return (
            get("simulation_id", simulation_id),
            *[get(c.name, c.default) for c in self.columns[1:]],
        )


def _cols(*specs: tuple[Any, ...]) -> tuple[Column, ...]:
    return (Column("simulation_id", "text", nullable=False), *tuple(Column(*s) for s in specs))


# NOT NULL columns with a server DEFAULT get the same default client-side: COPY of an
# explicit NULL would violate NOT NULL. Identity columns (action_id, ...) are not copied.
SPECS: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "agents",
            _cols(
                ("agent_id", "text", False),
                ("agent_type", "text", False),
                ("name", "text"),
                ("birth_step", "int4", False, 0, 0),
                ("death_step", "int4"),
                ("position_x", "float8"),
                ("position_y", "float8"),
                ("position_z", "float8"),
                ("initial_resources", "float8"),
                ("starting_health", "float8"),
                ("starvation_threshold", "int4"),
                ("genome_id", "text"),
                ("generation", "int4", False, 0, 0),
                ("parent_ids", "text[]", False, None, ()),
                ("profile", "jsonb", False, None, {}),
                ("config", "jsonb", False, None, {}),
            ),
        ),
        TableSpec(
            "agent_states",
            _cols(
                ("step", "int4", False, 0),
                ("agent_id", "text", False),
                ("position_x", "float8"),
                ("position_y", "float8"),
                ("position_z", "float8"),
                ("resource_level", "float8"),
                ("health", "float8"),
                ("is_defending", "bool", False, None, False),
                ("total_reward", "float8"),
                ("age", "int4", True, 0),
                ("profile", "jsonb"),
                ("memory", "jsonb"),
                ("relationships", "jsonb"),
                ("extras", "jsonb"),
            ),
        ),
        TableSpec(
            "agent_actions",
            _cols(
                ("step", "int4", False, 0),
                ("agent_id", "text", False),
                ("action_type", "text", False),
                ("action_target_id", "text"),
                ("state_before_step", "int4"),
                ("state_after_step", "int4"),
                ("resources_before", "float8"),
                ("resources_after", "float8"),
                ("reward", "float8"),
                ("details", "jsonb"),
            ),
        ),
        TableSpec(
            "resource_states",
            _cols(
                ("step", "int4", False, 0),
                ("resource_id", "int4", False),
                ("amount", "float8", False),
                ("position_x", "float8"),
                ("position_y", "float8"),
            ),
        ),
        TableSpec(
            "simulation_steps",
            _cols(
                ("step", "int4", False, 0),
                ("total_agents", "int4", True, 0),
                ("system_agents", "int4"),
                ("independent_agents", "int4"),
                ("control_agents", "int4"),
                ("total_resources", "float8"),
                ("average_agent_resources", "float8"),
                ("births", "int4", True, 0),
                ("deaths", "int4", True, 0),
                ("current_max_generation", "int4"),
                ("resource_efficiency", "float8"),
                ("resource_distribution_entropy", "float8"),
                ("average_agent_health", "float8"),
                ("average_agent_age", "float8"),
                ("average_reward", "float8"),
                ("combat_encounters", "int4"),
                ("successful_attacks", "int4"),
                ("resources_shared", "float8"),
                ("genetic_diversity", "float8"),
                ("dominant_genome_ratio", "float8"),
                ("resources_consumed", "float8"),
                ("metrics", "jsonb"),
            ),
        ),
        TableSpec(
            "learning_experiences",
            _cols(
                ("step", "int4", False, 0),
                ("agent_id", "text", False),
                ("module_type", "text", False),
                ("module_id", "text"),
                ("action_taken", "int4"),
                ("action_taken_mapped", "text"),
                ("reward", "float8"),
                ("details", "jsonb"),
            ),
        ),
        TableSpec(
            "health_incidents",
            _cols(
                ("step", "int4", False, 0),
                ("agent_id", "text", False),
                ("health_before", "float8"),
                ("health_after", "float8"),
                ("cause", "text", False),
                ("details", "jsonb"),
            ),
        ),
        TableSpec(
            "interactions",
            _cols(
                ("step", "int4", False, 0),
                ("source_type", "text", False),
                ("source_id", "text", False),
                ("target_type", "text", False),
                ("target_id", "text", False),
                ("interaction_type", "text", False),
                ("action_type", "text"),
                ("details", "jsonb"),
            ),
        ),
        TableSpec(
            "events",
            _cols(
                ("event_id", "uuid", False),
                ("step", "int4", False, 0),
                ("event_type", "text", False),
                ("source_type", "text"),
                ("source_id", "text"),
                ("target_type", "text"),
                ("target_id", "text"),
                ("priority", "int4", False, None, 0),
                ("payload", "jsonb", False, None, {}),
            ),
        ),
    )
}

# Tables whose rows reference agents: their batches must be written after the agents'.
AGENT_DEPENDENT = frozenset(
    {"agent_states", "agent_actions", "learning_experiences", "health_incidents"}
)


def spec_of(table: str) -> TableSpec:
    try:
        return SPECS[table]
    except KeyError:
        raise SimSchemaError(
            f"{table!r} is not a bulk-ingest table (one of: {', '.join(sorted(SPECS))})"
        ) from None


class JsonText(str):
    """A JSON document already serialized (and validated): dumped as is."""


class _JsonTextBinaryDumper(Dumper):
    """jsonb's binary format: a version byte (1) then the UTF-8 text."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: JsonText) -> bytes:
        return b"\x01" + obj.encode()


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays (anything with `tolist`) become plain JSON values."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
)


def _reject(table: str, row: int, column: str, reason: str) -> ValidationError:
    return ValidationError(table, row, column, reason)


def nul_in_json(value: Any) -> bool:
    """Whether a real NUL character is in a string or key (not an escaped backslash + u0000)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(nul_in_json(k) or nul_in_json(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(nul_in_json(v) for v in value)
    return False


def _check_column(table: str, col: Column, values: Sequence[Any]) -> list[Any] | None:
    """Raise ValidationError for the first bad value.

    Returns the column's values when they had to change (JSON serialized, numpy scalars
    made native), else None.
    """
    name, kind = col.name, col.kind
    if kind == "jsonb":
        out: list[Any] = []
        append = out.append
        dumps = _ENCODER.encode
        for i, v in enumerate(values):
            if v is None:
                if not col.nullable:
                    raise _reject(table, i, name, "NULL in a NOT NULL column")
                append(None)
                continue
            try:
                text = dumps(v)
            except ValueError as exc:  # NaN/Infinity (allow_nan=False) or a circular reference
                raise _reject(table, i, name, f"not storable as JSON: {exc}") from None
            except TypeError as exc:
                raise _reject(table, i, name, f"not JSON-serializable: {exc}") from None
            if "\\u0000" in text and nul_in_json(v):
                raise _reject(table, i, name, "NUL character (\\u0000) in a JSON string")
            append(JsonText(text))
        return out
    if None in values and not col.nullable:
        raise _reject(table, list(values).index(None), name, "NULL in a NOT NULL column")
    if kind == "float8":
        converted: list[Any] | None = None
        for i, v in enumerate(values):
            t = type(v)
            if t is float or v is None:
                continue
            if t is int:
                if not -(2**53) <= v <= 2**53:
                    raise _reject(table, i, name, "integer too large for double precision")
                continue
            if t is bool or not isinstance(v, numbers.Real):
                raise _reject(table, i, name, f"expected a float, got {t.__name__}")
            converted = converted or list(values)
            converted[i] = float(v)  # numpy floats, Fraction, Decimal-like reals
        return converted
    if kind == "int4" or kind == "int8":
        lo, hi = _LIMITS[kind]
        if col.minimum is not None:
            lo = col.minimum
        converted = None
        for i, v in enumerate(values):
            if type(v) is not int:
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                    raise _reject(table, i, name, f"expected an integer, got {type(v).__name__}")
                converted = converted or list(values)
                converted[i] = v = int(v)  # numpy integers, IntEnum
            if not lo <= v <= hi:
                bound = f">= {col.minimum}" if v < lo and col.minimum is not None else kind
                raise _reject(table, i, name, f"{v} out of range ({bound})")
        return converted
    if kind == "bool":
        np_bool = getattr(sys.modules.get("numpy"), "bool_", None)
        converted = None
        for i, v in enumerate(values):
            if v is True or v is False or v is None:
                continue
            if np_bool is None or not isinstance(v, np_bool):
                raise _reject(table, i, name, f"expected a bool, got {type(v).__name__}")
            converted = converted or list(values)
            converted[i] = bool(v)
        return converted
    if kind == "text":
        for i, v in enumerate(values):
            if type(v) is not str:
                if v is None:
                    continue
                if not isinstance(v, str):
                    raise _reject(table, i, name, f"expected a string, got {type(v).__name__}")
            if "\x00" in v:
                raise _reject(table, i, name, "NUL character (\\x00) in text")
        return None
    if kind == "uuid":
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, uuid.UUID):
                raise _reject(table, i, name, f"expected a uuid.UUID, got {type(v).__name__}")
        return None
    # text[]
    for i, v in enumerate(values):
        if v is None:
            continue
        if not isinstance(v, list | tuple) or not all(isinstance(s, str) for s in v):
            raise _reject(table, i, name, "expected a list of strings")
        if any("\x00" in s for s in v):
            raise _reject(table, i, name, "NUL character (\\x00) in text")
    return None


def validate(table: str, simulation_id: str, rows: Sequence[Sequence[Any]]) -> list[Row]:
    """The rows ready for COPY (JSON serialized), or ValidationError naming row and field.

    Column by column: one pass per column over the batch, no per-row dispatch.
    """
    spec = spec_of(table)
    width = len(spec.columns)
    for i, r in enumerate(rows):
        if len(r) != width:
            raise _reject(table, i, "*", f"row has {len(r)} values, the table takes {width}")
    if not rows:
        return []
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    for i, v in enumerate(columns[0]):
        if v != simulation_id:
            raise _reject(table, i, "simulation_id", f"{v!r} in a batch of {simulation_id!r}")
    for position, col in enumerate(spec.columns[1:], start=1):
        serialized = _check_column(table, col, columns[position])
        if serialized is not None:
            columns[position] = serialized
    if not spec.json_positions:
        return [tuple(r) for r in rows]
    return list(zip(*columns, strict=True))


def _copy_sql(spec: TableSpec) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(spec.name), sql.SQL(", ").join(sql.Identifier(n) for n in spec.names)
    )


_COPY_SQL = {name: _copy_sql(spec) for name, spec in SPECS.items()}
_TYPES = {name: [_PG_TYPE[c.kind] for c in spec.columns] for name, spec in SPECS.items()}
_LEDGER = (
    "INSERT INTO ingest_batches (simulation_id, batch_id, table_name, row_count)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT (simulation_id, batch_id) DO NOTHING"
    " RETURNING batch_id"
)


class BulkWriter:
    """Writes one validated batch per transaction, recorded in the ingest ledger."""

    async def write(
        self,
        conn: psycopg.AsyncConnection[Any],
        table: str,
        simulation_id: str,
        batch_id: uuid.UUID,
        rows: Sequence[Row],
    ) -> bool:
        """COPY the rows (already `validate`d) unless the ledger has the batch.

        True if written now, False if an earlier attempt had committed it. `conn` must be
        in autocommit mode (a pool connection), so the transaction here is a real one.
        """
        async with conn.transaction():
            cur = await conn.execute(_LEDGER, (simulation_id, batch_id, table, len(rows)))
            if await cur.fetchone() is None:
                return False
            async with conn.cursor() as copy_cur:
                copy_cur.adapters.register_dumper(JsonText, _JsonTextBinaryDumper)
                async with copy_cur.copy(_COPY_SQL[table]) as copy:
                    copy.set_types(_TYPES[table])
                    for r in rows:
                        await copy.write_row(r)
        return True


async def copy_rows(
    conn: psycopg.AsyncConnection[Any],
    table: str,
    simulation_id: str,
    rows: Iterable[Sequence[Any]],
    *,
    batch_id: uuid.UUID | None = None,
) -> int:
    """Validate then COPY one batch in one transaction; the number of rows written now.

    0 if the batch id was already in the ledger. Raises ValidationError before any write.
    """
    ready = validate(table, simulation_id, list(rows))
    written = await BulkWriter().write(conn, table, simulation_id, batch_id or uuid.uuid4(), ready)
    return len(ready) if written else 0


_KEY_DETAIL = re.compile(
    r"Key \((?P<cols>.+?)\)=\((?P<vals>.*)\) (?:is not present|already exists)"
)


def locate_row(
    table: str, rows: Sequence[Sequence[Any]], exc: psycopg.Error
) -> ValidationError | None:
    """The batch row a foreign-key, unique or check violation is about, as a ValidationError.

    PostgreSQL names the failing key (`Key (simulation_id, agent_id)=(s1, a9)`); the row is
    found by comparing that text with the batch's values.
    """
    diag = exc.diag
    spec = spec_of(table)
    if isinstance(exc, pg_errors.CheckViolation | pg_errors.NotNullViolation):
        column = diag.column_name or _check_column_name(table, diag.constraint_name or "")
        return ValidationError(table, -1, column, f"violates {diag.constraint_name or 'NOT NULL'}")
    match = _KEY_DETAIL.search(diag.message_detail or "")
    if match is None:
        return None
    names = [n.strip() for n in match["cols"].split(",")]
    if not all(n in spec.names for n in names):
        return None
    positions = [spec.names.index(n) for n in names]
    wanted = match["vals"]
    duplicate = isinstance(exc, pg_errors.UniqueViolation)
    # a duplicate within the batch: the later row is the one that conflicts
    order = range(len(rows) - 1, -1, -1) if duplicate else range(len(rows))
    for i in order:
        r = rows[i]
        if ", ".join(str(r[p]) for p in positions) == wanted:
            field_name = names[-1]
            if isinstance(exc, pg_errors.ForeignKeyViolation):
                reason = f"({match['cols']})=({wanted}) not found in {_referenced(diag)}"
            else:
                reason = f"duplicate key ({match['cols']})=({wanted})"
            return ValidationError(table, i, field_name, reason)
    return None


def _referenced(diag: Any) -> str:
    text = diag.message_primary or ""
    found = re.search(r'table "([^"]+)"', diag.message_detail or "")
    return found.group(1) if found else text


def _check_column_name(table: str, constraint: str) -> str:
    prefix, suffix = f"{table}_", "_check"
    if constraint.startswith(prefix) and constraint.endswith(suffix):
        return constraint[len(prefix) : -len(suffix)] or constraint
    return constraint or "?"
