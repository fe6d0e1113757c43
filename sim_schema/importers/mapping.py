"""Value conversions the importers share: JSON text, defaults for missing values, statuses.

Each conversion that changes or invents a value counts it in the table's report
(`TableReport.defaulted`), so the final report says how many rows got what. Conversions
are applied to a batch a column at a time (`fixed_rows`); a conversion may carry a
whole-column shortcut (`Fix.column`) for the common case, decided by C-level passes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..models import ExperimentStatus, SimulationStatus
from ..values import JsonbWire
from .report import TableReport

# A required category (agent_type, event_type, ...) the source left NULL gets this value.
UNKNOWN = "unknown"


class BadValue(Exception):
    """A source value that cannot be mapped (the reason is the message)."""


_NONE = type(None)
_INT_OR_NONE = frozenset({int, _NONE})


@dataclass(frozen=True)
class Fix:
    """A conversion of one column's values: `value` converts one; `column`, if given,
    converts a whole column at once, or returns None to leave it to `value`."""

    value: Callable[[Any], Any]
    column: Callable[[Sequence[Any]], Sequence[Any] | None] | None = None


Fixups = Sequence[tuple[int, Fix]]
Fills = Sequence[tuple[int, Any]]


def fixed_rows(
    rows: Sequence[Sequence[Any]],
    fixups: Fixups,
    located: Callable[[int, int, BadValue], Exception],
    fills: Fills = (),
) -> list[Any]:
    """`rows` with each column of `fixups` converted, a column at a time; the first value
    that cannot be converted raises `located(row index, column position, error)`.

    `fills`: (position, value) in position order, columns the source rows leave out (a
    value every row has, as the simulation id of a per-simulation file: fetching it from
    the source costs more, 0.06 us a value)."""
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    for position, value in fills:
        columns.insert(position, [value] * len(rows))
    for position, fix in fixups:
        values = columns[position]
        done = fix.column(values) if fix.column is not None else None
        if done is None:
            try:
                done = list(map(fix.value, values))
            except BadValue:
                for i, v in enumerate(values):
                    try:
                        fix.value(v)
                    except BadValue as exc:
                        raise located(i, position, exc) from None
                raise
        columns[position] = done
    return list(zip(*columns, strict=True))


def _payload(text: Any) -> Any:
    return JsonbWire(b"\x01" + text.encode()) if type(text) is str else text


# JSON text a server wrote (a json or jsonb column read as text) as jsonb's wire payload,
# which the value rules pass as encoded: no json.loads then json.dumps in Python (OneSim
# agent states, three jsonb columns: 19.8 us of client CPU a row parsed, 6.2 us not).
server_json = Fix(_payload, lambda values: list(map(_payload, values)))


def unless_null(fix: Fix) -> Fix:
    """`fix` for the values that are not NULL; NULL stays NULL."""
    convert = fix.value
    return Fix(lambda v: None if v is None else convert(v), fix.column)


def counter(report: TableReport, what: str) -> Callable[[], None]:
    """Counts one more row under `what` ("column: why") in the report's defaulted."""

    def count() -> None:
        report.defaulted[what] += 1

    return count


def constant(value: Any) -> Fix:
    return Fix(lambda _: value, lambda values: [value] * len(values))


def json_or_text(count: Callable[[], None]) -> Fix:
    """JSON text parsed; text that is not JSON kept as a JSON string (and counted)."""

    def convert(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        try:
            return json.loads(text)
        except ValueError:
            count()
            return text

    return Fix(convert)


def _steps_already(values: Sequence[Any]) -> Sequence[Any] | None:
    return values if set(map(type, values)) <= _INT_OR_NONE else None


def _state_step(value: Any) -> Any:
    if value is None or type(value) is int:
        return value
    _, sep, step = str(value).rpartition("-")
    if not sep or not step.isdigit():
        raise BadValue(f"{value!r} is not a state id 'agent_id-step'")
    return int(step)


# The step of an AgentFarm state id "agent_id-step" (agent ids may contain '-'); a step
# given as an integer is that step. Integers pass a column at a time: the farm importer's
# SELECT parses the common ids in SQLite already.
farm_state_step = Fix(_state_step, _steps_already)


def defaulting(convert: Fix | None, default: Any, count: Callable[[], None]) -> Fix:
    """NULL becomes `default` (counted); other values go through `convert`, if any."""
    inner = convert.value if convert is not None else None

    def fill(value: Any) -> Any:
        if value is None:
            count()
            return default
        return inner(value) if inner is not None else value

    def column(values: Sequence[Any]) -> Sequence[Any] | None:
        if None in values:
            return None
        if convert is None:
            return values
        return convert.column(values) if convert.column is not None else None

    return Fix(fill, column)


def status(
    values: dict[str, Any],
    allowed: type[ExperimentStatus | SimulationStatus],
    fallback: str,
    report: TableReport,
    namespace: str,
) -> None:
    """`values["status"]` made one of ours: kept if it is one (any letter case), else
    `fallback`, the source's own value kept in `metadata[namespace]["status"]`."""
    given = values.get("status")
    ours = {s.value for s in allowed}
    if isinstance(given, str) and given.lower() in ours:
        values["status"] = given.lower()
        return
    if given is not None:
        values["metadata"][namespace]["status"] = given
    values["status"] = fallback
    report.defaulted[f"status: {given!r} is not one of ours, {fallback!r}"] += 1
