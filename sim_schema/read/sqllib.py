"""The analyst query library: `sql/*.sql`, one documented query per file.

Each file starts with a comment header: a title line, what it answers, its parameters
written as psycopg named placeholders (`%(simulation_id)s`) and what it returns. The
parameter names are parsed from the header and must match the placeholders of the body,
so a file cannot silently need a value its documentation does not mention. A parameter
whose header line says "optional" may be left out: it is then NULL (the query treats NULL
as "no filter").

The library is the one home of the read SQL: the query API (`sim_schema.read.queries`)
runs these files by name. They are read and parsed once per process.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import BaseRowFactory

from ..errors import ConfigurationError
from ..pgerrors import schema_missing, translate
from ..readiness import diagnosed, diagnosed_async
from ..shipped import shipped_dir

_PLACEHOLDER = re.compile(r"%\(([a-z_][a-z0-9_]*)\)s")
_CHUNK = 1000  # rows per round trip of a streamed result
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LibraryQuery:
    name: str
    title: str
    header: str
    parameters: tuple[str, ...]
    text: str
    path: Path
    optional: frozenset[str] = frozenset()

    def bind(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters for `execute`, refusing missing or unknown names by name."""
        missing = [p for p in self.parameters if p not in values and p not in self.optional]
        unknown = [name for name in values if name not in self.parameters]
        if missing or unknown:
            problems = [
                f"{what} parameter{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}"
                for what, names in (("unknown", unknown), ("missing", missing))
                if names
            ]
            takes = [p + (" (optional)" if p in self.optional else "") for p in self.parameters]
            raise ConfigurationError(
                f"query {self.name!r}: {'; '.join(problems)}; it takes: "
                f"{', '.join(takes) or '(none)'}"
            )
        return {p: values.get(p) for p in self.parameters}

    @property
    def statement(self) -> sql.SQL:
        # Reviewed SQL shipped with the package: as trusted as a literal in the source.
        literal: LiteralString = self.text
        return sql.SQL(literal)


def sql_dir() -> Path:
    return shipped_dir("sql")


def parse_query(path: Path, text: str) -> LibraryQuery:
    lines = text.splitlines()
    header_lines: list[str] = []
    for line in lines:
        if not line.startswith("--"):
            break
        header_lines.append(line[2:].strip())
    body = "\n".join(lines[len(header_lines):]).strip().rstrip(";").strip()
    header = "\n".join(header_lines).strip()
    if not header or not body:
        raise ConfigurationError(f"{path.name}: needs a comment header and one query")
    documented = tuple(dict.fromkeys(_PLACEHOLDER.findall(header)))
    used = set(_PLACEHOLDER.findall(body))
    if used != set(documented):
        raise ConfigurationError(
            f"{path.name}: header documents {sorted(documented)} but the query uses {sorted(used)}"
        )
    optional = frozenset(
        name
        for line in header_lines
        if "optional" in line
        for name in _PLACEHOLDER.findall(line)
    )
    return LibraryQuery(path.stem, header_lines[0], header, documented, body, path, optional)


def load_library(directory: Path | None = None) -> dict[str, LibraryQuery]:
    """Every `*.sql` directly in the library directory (sub-directories hold other scripts),
    read and parsed once per process and directory."""
    return _load(directory or sql_dir())


@functools.cache
def _load(root: Path) -> dict[str, LibraryQuery]:
    return {
        p.stem: parse_query(p, p.read_text(encoding="utf-8")) for p in sorted(root.glob("*.sql"))
    }


def get_query(name: str, directory: Path | None = None) -> LibraryQuery:
    library = load_library(directory)
    if name not in library:
        raise ConfigurationError(f"no query named {name!r}; valid: {', '.join(library)}")
    return library[name]


def bound(name: str, params: Mapping[str, Any]) -> tuple[sql.SQL, dict[str, Any]]:
    """The statement of library query `name` and its parameters, checked by name."""
    query = get_query(name)
    return query.statement, query.bind(params)


async def fetch_async(
    conn: psycopg.AsyncConnection[Any],
    rows: BaseRowFactory[T],
    query: sql.SQL | sql.Composed,
    params: Any,
) -> list[T]:
    """All rows of `query`, made by `rows`; database errors translated (`pgerrors`)."""
    try:
        async with conn.cursor(row_factory=rows) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()
    except psycopg.Error as exc:
        raise await _explained(conn, exc) from None


async def _explained(conn: psycopg.AsyncConnection[Any], exc: psycopg.Error) -> Exception:
    """A database error in this module's words (`pgerrors`, `readiness`)."""
    if schema_missing(exc):
        return await diagnosed_async(conn, exc, None)
    return translate(exc) or exc


async def stream_async(
    conn: psycopg.AsyncConnection[Any],
    rows: BaseRowFactory[T],
    query: sql.SQL | sql.Composed,
    params: Any,
) -> AsyncGenerator[T, None]:
    """The rows of `query` `_CHUNK` at a time (libpq's chunked mode; one at a time with a
    libpq older than 17), so memory stays flat whatever the size."""
    try:
        async with conn.cursor(row_factory=rows) as cur:
            try:
                async for row in cur.stream(query, params, size=_CHUNK):
                    yield row
            except psycopg.NotSupportedError:
                async for row in cur.stream(query, params):
                    yield row
    except psycopg.Error as exc:
        raise await _explained(conn, exc) from None


def run_query(
    conn: psycopg.Connection[Any], name: str, params: dict[str, Any]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a library query on a sync connection: its column names and rows."""
    query = get_query(name)
    try:
        with conn.cursor() as cur:
            cur.execute(query.statement, query.bind(params))
            names = [c.name for c in cur.description or []]
            return names, cur.fetchall()
    except psycopg.Error as exc:
        if schema_missing(exc):
            raise diagnosed(conn, exc, None) from None
        raise
