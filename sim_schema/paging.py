"""Keyset paging, shared by every listing: a page is "at most `limit` rows after `after`".

`after` is the last row of the previous page: a record (or any object with the order's
columns as attributes), or a mapping holding them (what a service sends back to its
client as a cursor, e.g. `{"step": 12, "agent_id": "a7"}`). Each listing states its
order; it is total over NOT NULL columns (its last columns a key), so a page never
repeats or skips a row, and a page deep in a listing costs what the first one does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigurationError

Cursor = object  # a record / object with the order's attributes, or a Mapping of them


def check_limit(limit: int | None) -> None:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ConfigurationError(f"limit must be an int >= 0 or None, got {limit!r}")


def cursor_values(order: Sequence[str], after: Cursor) -> list[Any]:
    """The values of the order's columns (a leading `-` marks a descending one) in `after`."""
    names = [c.lstrip("-") for c in order]
    try:
        if isinstance(after, Mapping):
            return [after[n] for n in names]
        return [getattr(after, n) for n in names]
    except (KeyError, AttributeError):
        raise ConfigurationError(
            f"after= must hold the columns of the order ({', '.join(names)}), got {after!r}"
        ) from None
