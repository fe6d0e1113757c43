"""Replay-stable keys for the rows a logger numbers (`catalog.Numbering`).

An action, learning experience or health incident is the n-th of its agent at its step,
an interaction the n-th of its step, an event (or a decision) without an id the n-th event
(decision) of its step:
n counts the rows logged in this logger, in the order logged. A run resumed from a step
(docs/ingest.md, "Resume") logs that step's rows again in the same order and gets the
same keys, so the writer recognises the rows already stored.

Counters are kept for the last `WINDOW` steps seen per table; a row without its key that
is older than that is refused (its n could no longer be right). A call is numbered as a
whole and its counters committed only once the call is accepted (`Numbered.commit`), so
a refused call leaves no gap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..catalog import Row, spec_of
from ..errors import ValidationError
from ..ids import MAX_REPLAY_N, replay_id
from ..values import param

WINDOW = 16  # steps per table whose counters are kept


@dataclass
class Numbered:
    rows: list[Row]
    commit: Callable[[], None]


class Numberer:
    """The counters of one logger (one simulation)."""

    def __init__(self, simulation_id: str) -> None:
        self.simulation_id = simulation_id
        # table -> step -> (prefix values after the step) -> next n
        self._next: dict[str, dict[int, dict[tuple[Any, ...], int]]] = {}

    def number(self, table: str, rows: list[Row]) -> Numbered:
        """`rows` with their numbered column filled where it is None (nothing kept yet)."""
        spec = spec_of(table)
        numbering = spec.numbering
        if numbering is None or not rows:
            return Numbered(rows, _nothing)
        column = spec.position(numbering.column)
        if all(r[column] is not None for r in rows):
            return Numbered(rows, _nothing)
        prefix_at = [(n, spec.position(n)) for n in numbering.prefix]  # the step first
        counters = self._next.setdefault(table, {})
        staged: dict[int, dict[tuple[Any, ...], int]] = {}
        newest = max(counters, default=-1)
        out: list[Row] = []
        for i, r in enumerate(rows):
            if r[column] is not None:
                out.append(r)
                continue
            step, *rest = [_key_value(table, i, name, r[p]) for name, p in prefix_at]
            newest = max(newest, step)
            if step < newest - WINDOW + 1 and step not in counters:
                raise ValidationError(
                    table,
                    i,
                    numbering.column,
                    f"step {step} is {newest - step} steps behind step {newest}: the logger "
                    f"numbers the rows of the last {WINDOW} steps it saw; give "
                    f"{numbering.column} explicitly",
                )
            prefix = tuple(rest)
            at_step = staged.setdefault(step, {})
            n = at_step.get(prefix)
            if n is None:
                n = counters.get(step, {}).get(prefix, 0)
            at_step[prefix] = n + 1
            value: Any = n
            if numbering.kind == "uuid":
                value = self._id(table, i, numbering.column, step, n, numbering.namespace)
            out.append((*r[:column], value, *r[column + 1 :]))

        def commit() -> None:
            for step, prefixes in staged.items():
                counters.setdefault(step, {}).update(prefixes)
            if len(counters) > WINDOW:
                for old in sorted(counters)[: len(counters) - WINDOW]:
                    del counters[old]

        return Numbered(out, commit)

    def _id(self, table: str, i: int, column: str, step: int, n: int, namespace: str) -> Any:
        if n > MAX_REPLAY_N:
            raise ValidationError(
                table, i, column, f"more than {MAX_REPLAY_N + 1} rows at step {step}"
            )
        return replay_id(self.simulation_id, step, n, namespace)


def _key_value(table: str, i: int, name: str, value: Any) -> Any:
    """A key column's value as the counters use it, or the value rules' refusal."""
    if type(value) is str and name != "step":
        return value
    if type(value) is int and (name != "step" or value >= 0):
        return value
    try:
        checked = param(table, name, value)
    except ValidationError as exc:
        raise ValidationError(table, i, exc.field, exc.reason) from None
    if checked is None:
        raise ValidationError(table, i, name, "NULL in a NOT NULL column")
    return checked


def _nothing() -> None:
    return None
