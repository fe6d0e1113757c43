"""Migration objects in the host backend's shape, plus the loader for `migrations/*.sql`.

The host runner calls `version()`, `description()`, `up(conn)` and `up_async(conn)` and
checks that list index == version. Everything beyond that (checksum, non-transactional
flag, schema binding) is an extension the host runner never needs to know about.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from .. import ops
from ..errors import ConfigurationError, MigrationDefinitionError, VerificationError
from ..names import DEFAULT_SCHEMA, validate_schema_name, validate_timeout
from ..shipped import shipped_dir

_INTRANS = psycopg.pq.TransactionStatus.INTRANS


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


# --- the tracking table: our record of what is applied, whichever runner applied it ------

TRACKING_TABLE = "schema_migrations"


def tracking_table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(TRACKING_TABLE))


def create_tracking_table(schema: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        " version integer PRIMARY KEY CHECK (version >= 0),"
        " description text NOT NULL,"
        " checksum text NOT NULL,"
        " transactional boolean NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(),"
        " duration_ms double precision NOT NULL,"
        " applied_by text NOT NULL)"
    ).format(tracking_table(schema))


def record_applied(
    schema: str, version: int, description: str, checksum: str, transactional: bool,
    duration_ms: float, *, note: str = "",
) -> ops.Query:  # fmt: skip
    """The tracking row of one applied migration, stamped with who applied it (and how)."""
    return ops.Query(
        sql.SQL(
            "INSERT INTO {} (version, description, checksum, transactional, duration_ms,"
            " applied_by) VALUES (%s, %s, %s, %s, %s, current_user"
            " || coalesce(' (' || nullif(current_setting('application_name'), '') || ')', '')"
            " || %s)"
        ).format(tracking_table(schema)),
        (version, description, checksum, transactional, duration_ms, note),
    )


def lock_key(schema: str) -> int:
    """The advisory lock key of `schema`'s migrations (our runner's and every `up()`'s)."""
    digest = hashlib.sha256(f"sim_schema.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def drift_message(version: int, description: str, applied: str, code: str) -> str:
    return (
        f"migration {version} ({description}) has drifted: applied checksum {applied[:12]} "
        f"!= code checksum {code[:12]}; never edit an applied migration, add a new one"
    )


class SqlMigration(Migration):
    """A migration made of raw SQL statements.

    `schema`, when set, binds the migration to that schema: `up()` creates the schema if
    needed, runs the statements with it as the search path (restored afterwards), and
    records the migration in `<schema>.schema_migrations` in the same transaction, so our
    runner and the host's see the same truth. A migration already recorded there with
    the same checksum makes `up()` a no-op; with another checksum `up()` refuses (drift).

    `version()` is the number a runner's list gives it; `module_version` is its number
    among our migrations, the one recorded. They differ only after `renumbered()`, for a
    host that appends our migrations to its own list.
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
        module_version: int | None = None,
    ) -> None:
        self._version = version
        self._description = description
        self._sql_statements = list(sql_statements)
        self.module_version = version if module_version is None else module_version
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

    def _copy(self, **changes: Any) -> SqlMigration:
        fields: dict[str, Any] = {
            "version": self._version,
            "description": self._description,
            "sql_statements": self._sql_statements,
            "transactional": self.transactional,
            "schema": self.schema,
            "lock_timeout": self.lock_timeout,
            "statement_timeout": self.statement_timeout,
            "module_version": self.module_version,
        }
        fields.update(changes)
        return SqlMigration(**fields)

    def bound_to(self, schema: str) -> SqlMigration:
        """The same migration, installing into `schema`."""
        return self._copy(schema=schema)

    def renumbered(self, version: int) -> SqlMigration:
        """The same migration at position `version` of another list (still recorded as ours)."""
        return self._copy(version=version)

    def work(self, *, in_transaction: bool) -> ops.Work:
        """What `up()` does, as operations; True if applied now, False if already recorded.

        In a transaction (the host runner's, or ours) a transaction-level advisory lock on
        the schema's migration key serializes concurrent callers, so two host replicas
        never race on creating the schema or the tracking table.
        """
        if self.schema is None:
            for statement in self._sql_statements:
                yield ops.Query(sql.SQL(statement))
            return True
        started = time.monotonic()
        if in_transaction:
            yield ops.Query("SELECT pg_advisory_xact_lock(%s)", (lock_key(self.schema),))
        ident = sql.Identifier(self.schema)
        yield ops.Query(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        yield ops.Query(create_tracking_table(self.schema))
        recorded = yield ops.Query(
            sql.SQL("SELECT checksum FROM {} WHERE version = %s").format(
                tracking_table(self.schema)
            ),
            (self.module_version,),
        )
        if recorded:
            if recorded[0][0] != self.checksum:
                raise VerificationError(
                    drift_message(
                        self.module_version, self._description, recorded[0][0], self.checksum
                    )
                )
            return False
        shown = yield ops.Query(ops.SHOW_PATH)
        previous = shown[0][0]
        yield ops.Query(ops.SET_PATH_SCOPED, (ops.quoted_path(self.schema), in_transaction))
        try:
            for statement in self._sql_statements:
                yield ops.Query(sql.SQL(statement))
        except BaseException:
            if not in_transaction:  # a failed transaction's rollback restores the path
                yield ops.Query(ops.SET_PATH_SCOPED, (previous, False), best_effort=True)
            raise
        yield ops.Query(ops.SET_PATH_SCOPED, (previous, in_transaction))
        yield record_applied(
            self.schema, self.module_version, self._description, self.checksum,
            self.transactional, (time.monotonic() - started) * 1000.0,
        )  # fmt: skip
        return True

    def up(self, conn: psycopg.Connection[Any]) -> None:
        ops.run(conn, self.work(in_transaction=conn.info.transaction_status == _INTRANS))

    async def up_async(self, conn: psycopg.AsyncConnection[Any]) -> None:
        in_transaction = conn.info.transaction_status == _INTRANS
        await ops.run_async(conn, self.work(in_transaction=in_transaction))

    def __repr__(self) -> str:
        return f"SqlMigration({self._version}, {self._description!r})"


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
    return shipped_dir("migrations")


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


@functools.cache
def head_version() -> int:
    """The highest version of the shipped migrations: the schema this code needs."""
    return len(load_migrations(None)) - 1


def load_migrations(schema: str | None = DEFAULT_SCHEMA) -> list[SqlMigration]:
    """The shipped migrations, bound to `schema` (pass None for raw, unbound objects)."""
    return load_migrations_from(migrations_dir(), schema)


def host_migrations(
    first_version: int,
    *,
    schema: str = DEFAULT_SCHEMA,
    start: int = 0,
    stop: int | None = None,
) -> list[SqlMigration]:
    """Our migrations `start..stop-1`, numbered from `first_version`, for a host's own list.

    For a host whose runner insists on one list with index == version: append the result
    to its list. Each one still records its own number in `<schema>.schema_migrations`,
    so our runner and `sim-schema status` see what the host runner applied. A later
    release that adds migrations is taken in as one more slice (docs/migrations.md).
    """
    ours = load_migrations(schema)
    if first_version < 0:
        raise ConfigurationError(f"first_version must be >= 0, got {first_version}")
    if not 0 <= start <= len(ours) or (stop is not None and not start <= stop <= len(ours)):
        raise ConfigurationError(
            f"start={start}, stop={stop}: this release has migrations 0..{len(ours) - 1}"
        )
    return [m.renumbered(first_version + i) for i, m in enumerate(ours[start:stop])]


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
