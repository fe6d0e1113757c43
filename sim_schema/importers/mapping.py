"""Value conversions the importers share: JSON text, defaults for missing values, statuses.

Each conversion that changes or invents a value counts it in the table's report
(`TableReport.defaulted`), so the final report says how many rows got what.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..models import ExperimentStatus, SimulationStatus
from .report import TableReport

# A required category (agent_type, event_type, ...) the source left NULL gets this value.
UNKNOWN = "unknown"


class BadValue(Exception):
    """A source value that cannot be mapped (the reason is the message)."""


def counter(report: TableReport, what: str) -> Callable[[], None]:
    """Counts one more row under `what` ("column: why") in the report's defaulted."""

    def count() -> None:
        report.defaulted[what] += 1

    return count


def constant(value: Any) -> Callable[[Any], Any]:
    return lambda _: value


def json_or_text(count: Callable[[], None]) -> Callable[[Any], Any]:
    """JSON text parsed; text that is not JSON kept as a JSON string (and counted)."""

    def convert(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        try:
            return json.loads(text)
        except ValueError:
            count()
            return text

    return convert


def farm_state_step(value: Any) -> Any:
    """The step of an AgentFarm state id "agent_id-step" (agent ids may contain '-'); a
    step given as an integer is that step."""
    if value is None or type(value) is int:
        return value
    _, sep, step = str(value).rpartition("-")
    if not sep or not step.isdigit():
        raise BadValue(f"{value!r} is not a state id 'agent_id-step'")
    return int(step)


def defaulting(
    convert: Callable[[Any], Any] | None, default: Any, count: Callable[[], None]
) -> Callable[[Any], Any]:
    """NULL becomes `default` (counted); other values go through `convert`, if any."""

    def fill(value: Any) -> Any:
        if value is None:
            count()
            return default
        return convert(value) if convert is not None else value

    return fill


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
