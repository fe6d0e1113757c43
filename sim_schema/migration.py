"""Migration objects in the host backend's shape, plus the loader for `migrations/*.sql`.

The host runner calls `version()`, `description()`, `up(conn)` and `up_async(conn)` and
checks that list index == version. Everything beyond that (checksum, non-transactional
flag, schema binding) is an extension the host runner never needs to know about.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from .errors import ConfigurationError, MigrationDefinitionError

DEFAULT_SCHEMA = "sim"
_INTRANS = psycopg.pq.TransactionStatus.INTRANS
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TIMEOUT = re.compile(r"\d+(\.\d+)?\s*(us|ms|s|min|h|d)?")


def validate_schema_name(schema: str) -> str:
    """Accept only plain lower-case identifiers, so a schema name is never a quoting puzzle."""
    if not _SCHEMA_NAME.fullmatch(schema) or schema.startswith("pg_"):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: use 1-63 characters of a-z, 0-9 and _, "
            "not starting with a digit or 'pg_'"
        )
    return schema


def validate_timeout(name: str, value: str) -> str:
    """A PostgreSQL duration such as '5s', '250ms', '30min' or '0' (no limit)."""
    if not _TIMEOUT.fullmatch(value.strip()):
        raise ConfigurationError(
            f"invalid {name} {value!r}: use a PostgreSQL duration like 5s, 250ms, 30min or 0"
        )
    return value.strip()


def _without_comments(statement: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", " ", statement, flags=re.S).strip()


# Statements a non-transactional migration may contain only in their re-runnable form.
_NEEDS_GUARD = [
    (re.compile(r"CREATE\s+(UNIQUE\s+)?INDEX\b", re.I), "IF NOT EXISTS"),
    (re.compile(r"DROP\s+INDEX\b", re.I), "IF EXISTS"),
]


def _check_rerunnable(version: int, statements: Sequence[str]) -> None:
    """A failed non-transactional migration is repeated whole, so each step must be idempotent."""
    for position, statement in enumerate(statements, start=1):
        code = " ".join(_without_comments(statement).split())
        for starts, guard in _NEEDS_GUARD:
            if starts.match(code) and guard not in code.upper():
                raise MigrationDefinitionError(
                    f"non-transactional migration {version}, statement {position} "
                    f"({code[:60]!r}...) must use {guard} so that a failed run can be repeated"
                )


class Migration(abc.ABC):
    """The interface the host backend's runner calls."""

    @abc.abstractmethod
    def version(self) -> int: ...

    @abc.abstractmethod
    def description(self) -> str: ...

    @abc.abstractmethod
    def up(self, conn: psycopg.Connection[Any]) -> None: ...

    @abc.abstractmethod
    async def up_async(self, conn: psycopg.AsyncConnection[Any]) -> None: ...


def normalize_statement(statement: str) -> str:
    """Line endings and trailing whitespace never change a checksum."""
    unified = statement.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in unified.split("\n")]
    return "\n".join(lines).strip("\n")


class SqlMigration(Migration):
    """A migration made of raw SQL statements.

    `schema`, when set, makes `up()` create that schema if needed and run the statements
    with it as the search path (restored afterwards), so the same unqualified SQL can be
    installed into any schema by our runner or by the host's.
    """

    def __init__(
        self,
        version: int,
        description: str,
        sql_statements: list[LiteralString],
        *,
        transactional: bool = True,
        schema: str | None = None,
        lock_timeout: str | None = None,
        statement_timeout: str | None = None,
    ) -> None:
        self._version = version
        self._description = description
        self._sql_statements = list(sql_statements)
        self.transactional = transactional
        if not transactional:
            _check_rerunnable(version, self._sql_statements)
        self.schema = validate_schema_name(schema) if schema is not None else None
        self.lock_timeout = (
            validate_timeout("lock_timeout", lock_timeout) if lock_timeout is not None else None
        )
        self.statement_timeout = (
            validate_timeout("statement_timeout", statement_timeout)
            if statement_timeout is not None
            else None
        )

    def version(self) -> int:
        return self._version

    def description(self) -> str:
        return self._description

    @property
    def statements(self) -> list[LiteralString]:
        return list(self._sql_statements)

    @property
    def checksum(self) -> str:
        digest = hashlib.sha256()
        for statement in self._sql_statements:
            digest.update(normalize_statement(statement).encode())
            digest.update(b"\n;\n")
        return digest.hexdigest()

    def bound_to(self, schema: str) -> SqlMigration:
        """The same migration, installing into `schema`."""
        return SqlMigration(
            self._version,
            self._description,
            self._sql_statements,
            transactional=self.transactional,
            schema=schema,
            lock_timeout=self.lock_timeout,
            statement_timeout=self.statement_timeout,
        )

    def _preamble(self, is_local: bool) -> list[tuple[sql.SQL | sql.Composed, tuple[object, ...]]]:
        if self.schema is None:
            return []
        ident = sql.Identifier(self.schema)
        return [
            (sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident), ()),
            (
                sql.SQL("SELECT set_config('search_path', %s, %s)"),
                (f'"{self.schema}"', is_local),
            ),
        ]

    def up(self, conn: psycopg.Connection[Any]) -> None:
        is_local = conn.info.transaction_status == _INTRANS
        with conn.cursor() as cur:
            previous = cur.execute("SELECT current_setting('search_path')").fetchone()
            for query, params in self._preamble(is_local):
                cur.execute(query, params)
            try:
                for stmt in self._sql_statements:
                    cur.execute(sql.SQL(stmt))
            finally:
                if self.schema is not None and previous is not None and _usable(conn.info):
                    cur.execute("SELECT set_config('search_path', %s, %s)", (previous[0], is_local))

    async def up_async(self, conn: psycopg.AsyncConnection[Any]) -> None:
        is_local = conn.info.transaction_status == _INTRANS
        async with conn.cursor() as cur:
            await cur.execute("SELECT current_setting('search_path')")
            previous = await cur.fetchone()
            for query, params in self._preamble(is_local):
                await cur.execute(query, params)
            try:
                for stmt in self._sql_statements:
                    await cur.execute(sql.SQL(stmt))
            finally:
                if self.schema is not None and previous is not None and _usable(conn.info):
                    await cur.execute(
                        "SELECT set_config('search_path', %s, %s)", (previous[0], is_local)
                    )

    def __repr__(self) -> str:
        return f"SqlMigration({self._version}, {self._description!r})"


def _usable(info: psycopg.ConnectionInfo) -> bool:
    """False when the transaction has failed: its rollback restores the search path anyway."""
    return info.transaction_status in (psycopg.pq.TransactionStatus.IDLE, _INTRANS)


# --- loading migrations/*.sql ---------------------------------------------------------

_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_HEADER = re.compile(r"--\s*([a-z_]+)\s*:\s*(.*?)\s*$")


def split_statements(text: str) -> list[str]:
    """Split SQL on top-level semicolons, respecting quotes, dollar quotes and comments."""
    statements: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch == "/" and text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif ch in ("'", '"'):
            i += 1
            while i < n:
                if text[i] == ch:
                    if i + 1 < n and text[i + 1] == ch:
                        i += 2
                        continue
                    break
                i += 1
            i += 1
        elif ch == "$":
            match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])
            if match:
                tag = match.group(0)
                end = text.find(tag, i + len(tag))
                i = n if end < 0 else end + len(tag)
            else:
                i += 1
        elif ch == ";":
            statements.append(text[start:i])
            i += 1
            start = i
        else:
            i += 1
    statements.append(text[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return bool(_without_comments(statement))


def parse_migration_file(path: Path, text: str) -> SqlMigration:
    match = _FILE_NAME.fullmatch(path.name)
    if not match:
        raise MigrationDefinitionError(
            f"migration file {path.name!r} must be named NNNN_description.sql"
        )
    headers: dict[str, str] = {}
    for line in text.splitlines():
        header = _HEADER.match(line)
        if not header:
            break
        headers[header.group(1)] = header.group(2)
    unknown = set(headers) - {"description", "transactional", "lock_timeout", "statement_timeout"}
    if unknown:
        raise MigrationDefinitionError(f"{path.name}: unknown header(s) {sorted(unknown)}")
    transactional = headers.get("transactional", "true").lower()
    if transactional not in ("true", "false"):
        raise MigrationDefinitionError(f"{path.name}: transactional must be true or false")
    statements = split_statements(text)
    if not statements:
        raise MigrationDefinitionError(f"{path.name}: no SQL statements")
    # Reviewed SQL shipped inside the package: as trusted as a literal in the source.
    # (mypy treats LiteralString as str; stricter checkers would want a cast here).
    literal: list[LiteralString] = list(statements)
    return SqlMigration(
        int(match.group(1)),
        headers.get("description", match.group(2).replace("_", " ")),
        literal,
        transactional=transactional == "true",
        lock_timeout=headers.get("lock_timeout"),
        statement_timeout=headers.get("statement_timeout"),
    )


def migrations_dir() -> Path:
    """`sim_schema/_migrations` in a built wheel, the repository's `migrations/` otherwise."""
    packaged = resources.files("sim_schema") / "_migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "migrations"


def load_migrations_from(directory: Path, schema: str | None = None) -> list[SqlMigration]:
    if not directory.is_dir():
        raise MigrationDefinitionError(f"migrations directory {directory} does not exist")
    paths = sorted(directory.glob("*.sql"))
    seen: dict[str, str] = {}
    for path in paths:
        number = path.name[:4]
        if number in seen:
            raise MigrationDefinitionError(
                f"duplicate migration version {int(number)}: {seen[number]} and {path.name}"
            )
        seen[number] = path.name
    migrations = []
    for path in paths:
        try:
            migrations.append(parse_migration_file(path, path.read_text(encoding="utf-8")))
        except ConfigurationError as exc:  # a bad timeout header
            raise MigrationDefinitionError(f"{path.name}: {exc}") from None
    validate_sequence(migrations)
    return [m.bound_to(schema) for m in migrations] if schema is not None else migrations


def load_migrations(schema: str | None = DEFAULT_SCHEMA) -> list[SqlMigration]:
    """The shipped migrations, bound to `schema` (pass None for raw, unbound objects)."""
    return load_migrations_from(migrations_dir(), schema)


def validate_sequence(migrations: Sequence[Migration]) -> None:
    """The host runner's rule: list index == version, from 0; a duplicate or a gap is named."""
    first_at: dict[int, int] = {}
    for index, migration in enumerate(migrations):
        version = migration.version()
        if version in first_at:
            raise MigrationDefinitionError(
                f"duplicate migration version {version}: positions {first_at[version]} and "
                f"{index} ({migration.description()})"
            )
        first_at[version] = index
    for index, migration in enumerate(migrations):
        if migration.version() != index:
            raise MigrationDefinitionError(
                f"gap in migrations: version {index} is missing (position {index} holds "
                f"version {migration.version()}); versions must be contiguous from 0"
            )
