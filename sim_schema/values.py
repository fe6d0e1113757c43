"""The value rules of both write paths: what PostgreSQL can store, checked before it is sent.

The COPY path (the logger, the bulk writer) validates whole batches with `validate`; the
repositories check each parameter with `param`. Both apply the same rules, written once
here, to the catalog's column types: a value that cannot be stored (a NUL character or a
lone surrogate in text, JSON or a JSON key; NaN or Infinity in JSON; NaN or a value below
the bound where a CHECK expects `>= n`; an integer out of range; a wrong type) is refused
with a `ValidationError` naming the table, the row and the field.

A batch is checked column by column. The common case (every value of a column already of
the column's Python type) is decided with C-level passes over the column (`set(map(type,
...))`, `min`/`max`, one `join` for NUL characters), which costs a fraction of a Python
loop per value. Any column that is not plainly valid goes through `_check_column`, the
exhaustive per-value check that converts what it can (numpy scalars, IntEnum) and names
the first bad row otherwise. Both paths accept and refuse exactly the same values.

JSONB values come out as jsonb's binary wire format (a version byte, then the UTF-8 text),
ready to be sent as they are: COPY sends them as they are, the repositories as `JsonbWire`
parameters (a binary jsonb dumper registered below). A `JsonbWire` given in a batch is
taken as encoded already: the AgentFarm importer has SQLite check and encode JSON text
(`importers.agentfarm`), and the server's own JSON parser is the last word on it.
"""

from __future__ import annotations

import json
import numbers
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from itertools import repeat
from operator import contains, is_not
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from .catalog import Column, Row, spec_of, table
from .errors import ValidationError

# Rows validated in one go while a COPY streams: the server loads one step while the next
# is checked; short steps keep the socket buffer from running dry (copy._validated_steps).
VALIDATION_STEP = 200

_LIMITS = {
    "int2": (-(2**15), 2**15 - 1),
    "int4": (-(2**31), 2**31 - 1),
    "int8": (-(2**63), 2**63 - 1),
}
_NONE = type(None)
_NULL_ORDINAL = (
    "NULL: each row needs its ordinal (the n-th row of its key at its step, from 0); the"
    " logger numbers the rows it is given, the bulk writer does not"
)
_not_none = partial(is_not, None)

# Python types a column accepts without conversion; text[] is always checked per value.
_PLAIN: dict[str, frozenset[type]] = {
    "text": frozenset({str}),
    "int2": frozenset({int}),
    "int4": frozenset({int}),
    "int8": frozenset({int}),
    "float8": frozenset({float}),
    "bool": frozenset({bool}),
    "uuid": frozenset({uuid.UUID}),
}


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays (anything with `tolist`) become plain JSON values."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
)


def _c_encoder() -> Callable[[Any, int], Sequence[str]] | None:
    """json's C encoder, built once and called directly (None without the C accelerator).

    `JSONEncoder.encode` builds a new C encoder on every call: for the small documents of
    a simulation that is about 40% of the cost. No circular-reference memo: a cycle ends
    in RecursionError, like a document nested too deeply.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    encoder: Callable[[Any, int], Sequence[str]] = make(
        None, _json_default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    return encoder


_C_ENCODE = _c_encoder()


def _dumps(value: Any) -> str:
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def _dumps_all(values: Sequence[Any]) -> list[str]:
    """`_dumps` of every value, without a Python frame per value when the C encoder is there."""
    if _C_ENCODE is None:
        return list(map(_ENCODER.encode, values))
    return list(map("".join, map(_C_ENCODE, values, repeat(0))))


def nul_in_json(value: Any) -> bool:
    """Whether a real NUL character is in a string or key (not an escaped backslash + u0000)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(nul_in_json(k) or nul_in_json(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(nul_in_json(v) for v in value)
    return False


def _jsonb(text: str) -> bytes:
    """jsonb's wire format; UnicodeEncodeError for a lone surrogate in a string or key."""
    return b"\x01" + text.encode()


_SURROGATE = "a lone surrogate ({!r}) cannot be stored as UTF-8"


def _surrogate_in(exc: UnicodeEncodeError) -> str:
    return _SURROGATE.format(exc.object[exc.start : exc.end])


def sendable_text(text: object) -> bool:
    """A string the server can store (no NUL, no lone surrogate): others cannot be an id."""
    return type(text) is str and "\x00" not in text and _utf8_ok(text)


def _utf8_ok(text: str) -> bool:
    """No lone surrogate: what PostgreSQL (UTF-8) can store. ASCII is decided in C."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def decode_json(table: str, row: Row) -> Row:
    """A validated row with its JSONB payloads decoded back: the values as logged (for the
    rows an `IngestError` hands back)."""
    positions = spec_of(table).json_positions
    if not positions:
        return row
    values = list(row)
    for p in positions:
        v = values[p]
        if type(v) is bytes:
            values[p] = json.loads(v[1:])
    return tuple(values)


def _plainly_valid(col: Column, values: Sequence[Any]) -> bool:
    """The fast check: True only if every value is valid as it is (no conversion needed).

    False means "look closer", not "invalid": `_check_column` decides.
    """
    plain = _PLAIN.get(col.kind)
    if plain is None:
        return False
    types = set(map(type, values))
    has_none = _NONE in types
    if has_none:
        if not col.nullable:
            return False
        types.discard(_NONE)
    if not types <= plain:
        return False
    if not types:
        return True
    present: Iterable[Any] = filter(_not_none, values) if has_none else values
    kind = col.kind
    if kind == "text":
        joined = "".join(present)
        return "\x00" not in joined and _utf8_ok(joined)
    if kind == "float8":
        return col.minimum is None  # a bound (and NaN against it) is checked per value
    if kind in _LIMITS:
        lo, hi = _LIMITS[kind]
        if col.minimum is not None:
            lo = col.minimum
        ints: Sequence[int] = list(present) if has_none else values
        return bool(lo <= min(ints) and max(ints) <= hi)
    return True


def _encode_json(table: str, col: Column, values: Sequence[Any]) -> list[bytes | None]:
    """The column's values as jsonb payloads, the first unstorable one named. A `JsonbWire`
    is a payload already (an importer's source checked it as JSON): it passes as it is."""
    types = set(map(type, values))
    if types <= _ENCODED:
        if _NONE in types and not col.nullable:
            raise ValidationError(table, values.index(None), col.name, "NULL in a NOT NULL column")
        return list(values)
    if _NONE not in types and JsonbWire not in types:
        try:
            texts = _dumps_all(values)
            if not any(map(contains, texts, repeat("\\u0000"))):
                return list(map(_jsonb, texts))
        except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
            pass  # the loop below names the row
    out: list[bytes | None] = []
    append = out.append
    for i, v in enumerate(values):
        if v is None:
            if not col.nullable:
                raise ValidationError(table, i, col.name, "NULL in a NOT NULL column")
            append(None)
            continue
        if type(v) is JsonbWire:  # among values to encode (a source's default for NULL)
            append(v)
            continue
        try:
            text = _dumps(v)
            payload = _jsonb(text)
        except UnicodeEncodeError as exc:
            raise ValidationError(table, i, col.name, f"JSON: {_surrogate_in(exc)}") from None
        except ValueError as exc:  # NaN/Infinity (allow_nan=False)
            raise ValidationError(table, i, col.name, f"not storable as JSON: {exc}") from None
        except RecursionError:
            reason = "not storable as JSON: circular, or nested too deeply"
            raise ValidationError(table, i, col.name, reason) from None
        except TypeError as exc:
            raise ValidationError(table, i, col.name, f"not JSON-serializable: {exc}") from None
        if "\\u0000" in text and nul_in_json(v):
            raise ValidationError(table, i, col.name, "NUL character (\\u0000) in a JSON string")
        append(payload)
    return out


def _check_column(table: str, col: Column, values: Sequence[Any]) -> list[Any] | None:
    """Raise ValidationError for the first bad value, one value at a time.

    Returns the column's values when they had to change (numpy scalars made native), else
    None.
    """
    name, kind = col.name, col.kind

    def reject(i: int, reason: str) -> ValidationError:
        return ValidationError(table, i, name, reason)

    if not col.nullable:
        for i, v in enumerate(values):
            if v is None:
                raise reject(i, _NULL_ORDINAL if col.ordinal else "NULL in a NOT NULL column")
    if kind == "float8":
        converted: list[Any] | None = None
        for i, v in enumerate(values):
            t = type(v)
            if t is float or v is None:
                continue
            if t is int:
                if not -(2**53) <= v <= 2**53:
                    raise reject(i, "integer too large for double precision")
                continue
            if t is bool or not isinstance(v, numbers.Real):
                raise reject(i, f"expected a float, got {t.__name__}")
            converted = converted or list(values)
            converted[i] = float(v)  # numpy floats, Fraction, Decimal-like reals
        if col.minimum is not None:
            least = col.minimum
            for i, v in enumerate(converted or values):
                if v is not None and not v >= least:  # NaN compares false: refused too
                    raise reject(i, f"{v} violates CHECK ({name} >= {least})")
        return converted
    if kind in _LIMITS:
        lo, hi = _LIMITS[kind]
        if col.minimum is not None:
            lo = col.minimum
        converted = None
        for i, v in enumerate(values):
            if type(v) is not int:
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                    raise reject(i, f"expected an integer, got {type(v).__name__}")
                converted = converted or list(values)
                converted[i] = v = int(v)  # numpy integers, IntEnum
            if not lo <= v <= hi:
                bound = f">= {col.minimum}" if v < lo and col.minimum is not None else kind
                raise reject(i, f"{v} out of range ({bound})")
        return converted
    if kind == "bool":
        np_bool = getattr(sys.modules.get("numpy"), "bool_", None)
        converted = None
        for i, v in enumerate(values):
            if v is True or v is False or v is None:
                continue
            if np_bool is None or not isinstance(v, np_bool):
                raise reject(i, f"expected a bool, got {type(v).__name__}")
            converted = converted or list(values)
            converted[i] = bool(v)
        return converted
    if kind == "text":
        for i, v in enumerate(values):
            if v is None:
                continue
            if not isinstance(v, str):
                raise reject(i, f"expected a string, got {type(v).__name__}")
            if "\x00" in v:
                raise reject(i, "NUL character (\\x00) in text")
            _check_utf8(v, reject, i)
        return None
    if kind == "timestamptz":
        for i, v in enumerate(values):
            if v is not None and not (isinstance(v, datetime) and v.tzinfo is not None):
                raise reject(i, f"expected a timezone-aware datetime, got {v!r}")
        return None
    if kind == "uuid":
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, uuid.UUID):
                raise reject(i, f"expected a uuid.UUID, got {type(v).__name__}")
        return None
    # text[]
    for i, v in enumerate(values):
        if v is None:
            continue
        if not isinstance(v, list | tuple) or not all(isinstance(s, str) for s in v):
            raise reject(i, "expected a list of strings")
        if any("\x00" in s for s in v):
            raise reject(i, "NUL character (\\x00) in text")
        for s in v:
            _check_utf8(s, reject, i)
    return None


def _check_utf8(text: str, reject: Callable[[int, str], ValidationError], i: int) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise reject(i, _surrogate_in(exc)) from None


def validate(
    table: str,
    simulation_id: str,
    rows: Sequence[Sequence[Any]],
    *,
    start: int = 0,
) -> list[Row]:
    """The rows ready for COPY (JSON encoded), or ValidationError naming row and field.

    `start` is the index of `rows[0]` in the caller's batch, for the error's row number.
    """
    return validate_columns(table, spec_of(table).columns, simulation_id, rows, start=start)


def validate_columns(
    table: str,
    columns: Sequence[Column],
    simulation_id: str,
    rows: Sequence[Sequence[Any]],
    *,
    start: int = 0,
) -> list[Row]:
    """`validate` for rows of any `columns` of `table` (`simulation_id` first): what an
    importer copies into a table the logger does not write."""
    try:
        return _validate(table, columns, simulation_id, rows)
    except ValidationError as exc:
        if not start:
            raise
        raise ValidationError(exc.table, exc.row + start, exc.field, exc.reason) from None


def _validate(
    table: str, spec_columns: Sequence[Column], simulation_id: str, rows: Sequence[Sequence[Any]]
) -> list[Row]:
    if not rows:
        return []
    width = len(spec_columns)
    if set(map(len, rows)) != {width}:
        for i, r in enumerate(rows):
            if len(r) != width:
                reason = f"row has {len(r)} values, the table takes {width}"
                raise ValidationError(table, i, "*", reason)
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    ids = columns[0]
    if set(map(type, ids)) != {str} or ids.count(simulation_id) != len(rows):
        for i, v in enumerate(ids):
            if type(v) is not str or v != simulation_id:
                reason = f"{v!r} in a batch of {simulation_id!r}"
                raise ValidationError(table, i, "simulation_id", reason)
    changed = False
    for position, col in enumerate(spec_columns[1:], start=1):
        values = columns[position]
        if col.kind == "jsonb":
            columns[position] = _encode_json(table, col, values)
            changed = True
        elif not _plainly_valid(col, values):
            converted = _check_column(table, col, values)
            if converted is not None:
                columns[position] = converted
                changed = True
    if changed:
        return list(zip(*columns, strict=True))
    return [r if type(r) is tuple else tuple(r) for r in rows]


# --- one value at a time: the repositories' parameters -----------------------------------


class JsonbWire(bytes):
    """A JSON value already in jsonb's binary wire format (what `param` returns for jsonb)."""


_ENCODED = frozenset({JsonbWire, _NONE})


class _JsonbWireDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


_JsonbWireDumper.oid = psycopg.adapters.types["jsonb"].oid
# Registered for the JsonbWire class only: registering a dumper with an oid also makes it
# the process-wide binary dumper of that oid (a host's `copy.set_types(["jsonb"])`), so
# psycopg's own is put back for that.
_jsonb_by_oid = psycopg.adapters.get_dumper_by_oid(_JsonbWireDumper.oid, Format.BINARY)
psycopg.adapters.register_dumper(JsonbWire, _JsonbWireDumper)
psycopg.adapters.register_dumper(None, _jsonb_by_oid)


def param(table_name: str, column: str, value: Any) -> Any:
    """`value` ready to be bound for `column` of `table_name` (None passes as NULL).

    The same rules as `validate`; `ValidationError(table, 0, column, reason)` otherwise.
    """
    if value is None:
        return None
    col = table(table_name).column(column)
    if col.kind == "jsonb":
        payload = _encode_json(table_name, col, [value])[0]
        assert payload is not None  # a non-NULL value was encoded
        return JsonbWire(payload)
    converted = _check_column(table_name, col, [value])
    return value if converted is None else converted[0]
