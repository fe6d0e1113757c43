"""The names and durations we accept from users, checked before they reach SQL.

A schema name is a plain lower-case identifier (so it is never a quoting puzzle in SQL,
in `search_path` or on a command line) and never a system schema: `pg_catalog`,
`pg_toast`, `information_schema` and every other `pg_*` name belong to PostgreSQL, and
installing tables there would mix them with the server's own catalog.
"""

from __future__ import annotations

import re

from .errors import ConfigurationError

DEFAULT_SCHEMA = "sim"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SYSTEM_SCHEMAS = frozenset({"information_schema"})
_TIMEOUT = re.compile(r"\d+(\.\d+)?\s*(us|ms|s|min|h|d)?")


def validate_schema_name(schema: str) -> str:
    """`schema` if it is a plain identifier and not a system schema; else ConfigurationError."""
    if schema.startswith("pg_") or schema in _SYSTEM_SCHEMAS:
        raise ConfigurationError(
            f"schema {schema!r} is a PostgreSQL system schema: choose another name "
            "(the default is 'sim')"
        )
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: use 1-63 characters of a-z, 0-9 and _, "
            "not starting with a digit"
        )
    return schema


def validate_timeout(name: str, value: str) -> str:
    """A PostgreSQL duration such as '5s', '250ms', '30min' or '0' (no limit)."""
    if not _TIMEOUT.fullmatch(value.strip()):
        raise ConfigurationError(
            f"invalid {name} {value!r}: use a PostgreSQL duration like 5s, 250ms, 30min or 0"
        )
    return value.strip()
