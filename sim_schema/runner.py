"""The migration runner: locked, verified, one real transaction per migration.

The decisions live once, in generator functions that yield operations (`_Query`,
`_Up`, `_Sleep`) and receive their results; `_drive` and `_drive_async` perform them on
a sync or an async connection. This is how psycopg keeps one protocol implementation for
both worlds, and it keeps our sync and async entry points from drifting apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from .errors import (
    ConfigurationError,
    ConnectionFailed,
    InvalidIndexError,
    LockTimeout,
    MigrationError,
    MigrationFailed,
    PartialMigrationFailed,
    SimSchemaError,
    VerificationError,
)
from .migration import (
    DEFAULT_SCHEMA,
    SqlMigration,
    validate_schema_name,
    validate_sequence,
    validate_timeout,
)

TRACKING_TABLE = "schema_migrations"
DEFAULT_LOCK_WAIT = 60.0
DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_STATEMENT_TIMEOUT = "30min"
_POLL_INTERVAL = 0.2


@dataclass(frozen=True)
class _Query:
    query: sql.SQL | sql.Composed
    params: tuple[Any, ...] = ()
    # Clean-up (ROLLBACK, RESET, unlock) must not mask the error that made it necessary.
    best_effort: bool = False


@dataclass(frozen=True)
class _Up:
    migration: SqlMigration


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Op = _Query | _Up | _Sleep
_Gen = Generator[_Op, Any, Any]


@dataclass(frozen=True)
class AppliedRecord:
    """One row of the tracking table."""

    version: int
    description: str
    checksum: str
    transactional: bool
    applied_at: datetime
    duration_ms: float
    applied_by: str


State = Literal["applied", "pending", "drifted", "unknown"]


@dataclass(frozen=True)
class MigrationState:
    """A version as `status` reports it: code and database side by side.

    `checksum` is the code's (None for an `unknown` version, which the code does not
    have); `applied_checksum` is the one recorded when it was applied.
    """

    version: int
    description: str
    state: State
    applied_at: datetime | None = None
    duration_ms: float | None = None
    applied_by: str | None = None
    checksum: str | None = None
    applied_checksum: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "description": self.description,
            "state": self.state,
            "applied_at": self.applied_at.isoformat() if self.applied_at else None,
            "duration_ms": None if self.duration_ms is None else round(self.duration_ms, 3),
            "applied_by": self.applied_by,
            "checksum": self.checksum,
            "applied_checksum": self.applied_checksum,
        }


@dataclass
class MigrateResult:
    applied: list[AppliedRecord] = field(default_factory=list)
    lock_wait_s: float = 0.0
    dropped_invalid_indexes: list[str] = field(default_factory=list)


class MigrationRunner:
    """Applies `migrations` to the schema they are bound to.

    lock_wait: seconds to wait for another migrator before `LockTimeout`.
    lock_timeout / statement_timeout: PostgreSQL settings applied to every migration
    (a migration file may override them with `-- lock_timeout:` headers).
    """

    def __init__(
        self,
        migrations: Sequence[SqlMigration],
        *,
        schema: str = DEFAULT_SCHEMA,
        lock_wait: float = DEFAULT_LOCK_WAIT,
        lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
        statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT,
    ) -> None:
        validate_sequence(migrations)
        if lock_wait < 0:
            raise ConfigurationError(f"lock_wait must be >= 0 seconds, got {lock_wait}")
        self.schema = validate_schema_name(schema)
        self.migrations = [m.bound_to(self.schema) for m in migrations]
        self.lock_wait = lock_wait
        self.lock_timeout = validate_timeout("lock_timeout", lock_timeout)
        self.statement_timeout = validate_timeout("statement_timeout", statement_timeout)
        self.lock_key = int.from_bytes(
            hashlib.sha256(f"sim_schema.migrate:{self.schema}".encode()).digest()[:8],
            "big",
            signed=True,
        )

    # --- public entry points -----------------------------------------------------------

    def migrate(
        self,
        conn: psycopg.Connection[Any],
        to: int | None = None,
        *,
        drop_invalid_indexes: bool = False,
    ) -> MigrateResult:
        result: MigrateResult = _drive(conn, self._migrate(to, drop_invalid_indexes))
        return result

    async def migrate_async(
        self,
        conn: psycopg.AsyncConnection[Any],
        to: int | None = None,
        *,
        drop_invalid_indexes: bool = False,
    ) -> MigrateResult:
        result: MigrateResult = await _drive_async(conn, self._migrate(to, drop_invalid_indexes))
        return result

    def status(self, conn: psycopg.Connection[Any]) -> list[MigrationState]:
        result: list[MigrationState] = _drive(conn, self._status())
        return result

    async def status_async(self, conn: psycopg.AsyncConnection[Any]) -> list[MigrationState]:
        result: list[MigrationState] = await _drive_async(conn, self._status())
        return result

    def plan(self, conn: psycopg.Connection[Any], to: int | None = None) -> list[SqlMigration]:
        result: list[SqlMigration] = _drive(conn, self._plan(to))
        return result

    async def plan_async(
        self, conn: psycopg.AsyncConnection[Any], to: int | None = None
    ) -> list[SqlMigration]:
        result: list[SqlMigration] = await _drive_async(conn, self._plan(to))
        return result

    # --- the logic, once ---------------------------------------------------------------

    def _tracking(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(TRACKING_TABLE))

    def _read_applied(self) -> _Gen:
        exists = yield _Query(
            sql.SQL("SELECT to_regclass(%s)"), (f'"{self.schema}".{TRACKING_TABLE}',)
        )
        if exists[0][0] is None:
            return []
        rows = yield _Query(
            sql.SQL(
                "SELECT version, description, checksum, transactional, applied_at,"
                " duration_ms, applied_by FROM {} ORDER BY version"
            ).format(self._tracking())
        )
        return [AppliedRecord(*row) for row in rows]

    def _verify(self, applied: list[AppliedRecord]) -> None:
        known = len(self.migrations)
        for expected, record in enumerate(applied):
            if record.version != expected:
                raise VerificationError(
                    f"gap in applied migrations: version {expected} is missing but "
                    f"version {record.version} is applied"
                )
            if record.version >= known:
                raise VerificationError(
                    f"database is ahead of the code: version {record.version} "
                    f"({record.description}) is applied, this code knows versions 0..{known - 1}"
                )
            migration = self.migrations[record.version]
            if migration.checksum != record.checksum:
                raise VerificationError(
                    f"migration {record.version} ({migration.description()}) has drifted: "
                    f"applied checksum {record.checksum[:12]} != code checksum "
                    f"{migration.checksum[:12]}; never edit an applied migration, add a new one"
                )

    def _pending(self, applied: list[AppliedRecord], to: int | None) -> list[SqlMigration]:
        last = len(self.migrations) - 1
        target = last if to is None else to
        if not -1 <= target <= last:
            raise ConfigurationError(f"--to {to}: this code knows versions 0..{last}")
        if target < len(applied) - 1:
            raise ConfigurationError(
                f"--to {to}: the database is already at version {len(applied) - 1}; "
                "migrations only go forward"
            )
        return self.migrations[len(applied) : target + 1]

    def _status(self) -> _Gen:
        applied = yield from self._read_applied()
        by_version = {record.version: record for record in applied}
        states: list[MigrationState] = []
        for migration in self.migrations:
            record = by_version.pop(migration.version(), None)
            if record is None:
                states.append(
                    MigrationState(
                        migration.version(),
                        migration.description(),
                        "pending",
                        checksum=migration.checksum,
                    )
                )
                continue
            states.append(
                MigrationState(
                    record.version,
                    migration.description(),
                    "applied" if record.checksum == migration.checksum else "drifted",
                    record.applied_at,
                    record.duration_ms,
                    record.applied_by,
                    migration.checksum,
                    record.checksum,
                )
            )
        for record in by_version.values():
            states.append(
                MigrationState(
                    record.version,
                    record.description,
                    "unknown",
                    record.applied_at,
                    record.duration_ms,
                    record.applied_by,
                    None,
                    record.checksum,
                )
            )
        return states

    def _plan(self, to: int | None) -> _Gen:
        applied = yield from self._read_applied()
        self._verify(applied)
        return self._pending(applied, to)

    def _invalid_indexes(self, *, best_effort: bool = False) -> _Gen:
        rows = yield _Query(
            sql.SQL(
                "SELECT c.relname FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND NOT i.indisvalid ORDER BY 1"
            ),
            (self.schema,),
            best_effort,
        )
        return [row[0] for row in rows or ()]

    def _acquire_lock(self) -> _Gen:
        started = time.monotonic()
        while True:
            got = yield _Query(sql.SQL("SELECT pg_try_advisory_lock(%s)"), (self.lock_key,))
            if got[0][0]:
                return time.monotonic() - started
            if time.monotonic() - started >= self.lock_wait:
                raise LockTimeout(
                    f"another migrator has held the migration lock of schema {self.schema!r} "
                    f"for more than {self.lock_wait:g}s; nothing was applied"
                )
            yield _Sleep(_POLL_INTERVAL)

    def _set_timeouts(self, migration: SqlMigration, is_local: bool) -> _Query:
        return _Query(
            sql.SQL(
                "SELECT set_config('lock_timeout', %s, %s), set_config('statement_timeout', %s, %s)"
            ),
            (
                migration.lock_timeout or self.lock_timeout,
                is_local,
                migration.statement_timeout or self.statement_timeout,
                is_local,
            ),
        )

    def _record(self, migration: SqlMigration, started: float) -> _Query:
        return _Query(
            sql.SQL(
                "INSERT INTO {} (version, description, checksum, transactional, duration_ms,"
                " applied_by) VALUES (%s, %s, %s, %s, %s, current_user"
                " || coalesce(' (' || nullif(current_setting('application_name'), '') || ')', ''))"
                " RETURNING version, description, checksum, transactional, applied_at,"
                " duration_ms, applied_by"
            ).format(self._tracking()),
            (
                migration.version(),
                migration.description(),
                migration.checksum,
                migration.transactional,
                (time.monotonic() - started) * 1000.0,
            ),
        )

    def _apply(self, migration: SqlMigration) -> _Gen:
        """One migration: its own transaction, or autocommit statements recorded after success."""
        started = time.monotonic()
        if migration.transactional:
            yield _Query(sql.SQL("BEGIN"))
            try:
                yield self._set_timeouts(migration, is_local=True)
                yield _Up(migration)
                rows = yield self._record(migration, started)
                yield _Query(sql.SQL("COMMIT"))
            except psycopg.Error as exc:
                yield _Query(sql.SQL("ROLLBACK"), best_effort=True)
                raise MigrationFailed(migration.version(), migration.description(), exc) from exc
            return AppliedRecord(*rows[0])
        try:
            yield self._set_timeouts(migration, is_local=False)
            yield _Up(migration)
        except psycopg.Error as exc:
            yield _Query(sql.SQL("RESET lock_timeout"), best_effort=True)
            yield _Query(sql.SQL("RESET statement_timeout"), best_effort=True)
            invalid = yield from self._invalid_indexes(best_effort=True)
            raise PartialMigrationFailed(
                migration.version(), migration.description(), exc, invalid
            ) from exc
        yield _Query(sql.SQL("RESET lock_timeout"))
        yield _Query(sql.SQL("RESET statement_timeout"))
        rows = yield self._record(migration, started)
        return AppliedRecord(*rows[0])

    def _migrate(self, to: int | None, drop_invalid_indexes: bool) -> _Gen:
        # Cheap refusal before queueing for the lock; everything is re-read under it.
        applied = yield from self._read_applied()
        self._verify(applied)
        self._pending(applied, to)
        result = MigrateResult()
        result.lock_wait_s = yield from self._acquire_lock()
        try:
            yield _Query(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            yield _Query(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " version integer PRIMARY KEY CHECK (version >= 0),"
                    " description text NOT NULL,"
                    " checksum text NOT NULL,"
                    " transactional boolean NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now(),"
                    " duration_ms double precision NOT NULL,"
                    " applied_by text NOT NULL)"
                ).format(self._tracking())
            )
            applied = yield from self._read_applied()
            self._verify(applied)
            pending = self._pending(applied, to)
            invalid = yield from self._invalid_indexes()
            if invalid and not drop_invalid_indexes:
                raise InvalidIndexError(
                    f"schema {self.schema!r} has INVALID index(es) {', '.join(invalid)} left by a "
                    "failed concurrent build; rerun with --drop-invalid-indexes to drop and rebuild"
                )
            for name in invalid:
                # The unrecorded migration that built it is still pending: it rebuilds it.
                yield _Query(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
                        sql.Identifier(self.schema), sql.Identifier(name)
                    )
                )
                result.dropped_invalid_indexes.append(name)
            for migration in pending:
                record = yield from self._apply(migration)
                result.applied.append(record)
        finally:
            # Also released when the session ends, should this fail on a broken connection.
            yield _Query(
                sql.SQL("SELECT pg_advisory_unlock(%s)"), (self.lock_key,), best_effort=True
            )
        return result


def _check_idle(status: psycopg.pq.TransactionStatus) -> None:
    if status != psycopg.pq.TransactionStatus.IDLE:
        raise ConfigurationError(
            "the migration runner needs an idle connection (no transaction in progress): "
            "it opens one real transaction per migration itself"
        )


def _unexpected(exc: psycopg.Error) -> SimSchemaError:
    """A database error the logic did not turn into a specific one (e.g. a lost connection)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return ConnectionFailed(f"connection lost during migration: {reason}")
    return MigrationError(f"migration runner: {reason}")


def _ignorable(op: _Op, exc: Exception) -> bool:
    return isinstance(op, _Query) and op.best_effort and isinstance(exc, psycopg.Error)


def _step(gen: _Gen, reply: Any, error: Exception | None) -> tuple[bool, Any]:
    """Advance the logic: (True, next operation) or (False, its return value)."""
    try:
        return True, gen.throw(error) if error is not None else gen.send(reply)
    except StopIteration as stop:
        return False, stop.value
    except psycopg.Error as exc:
        raise _unexpected(exc) from exc


def _drive(conn: psycopg.Connection[Any], gen: _Gen) -> Any:
    """Perform the generator's operations on a sync connection, in autocommit mode."""
    _check_idle(conn.info.transaction_status)
    previous = conn.autocommit
    conn.autocommit = True
    try:
        reply: Any = None
        error: Exception | None = None
        while True:
            running, op = _step(gen, reply, error)
            if not running:
                return op
            reply, error = None, None
            try:
                if isinstance(op, _Query):
                    cur = conn.execute(op.query, op.params or None)
                    reply = cur.fetchall() if cur.description else None
                elif isinstance(op, _Up):
                    op.migration.up(conn)
                else:
                    time.sleep(op.seconds)
            except Exception as exc:
                if not _ignorable(op, exc):
                    error = exc
    finally:
        if not conn.closed:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            conn.autocommit = previous


async def _drive_async(conn: psycopg.AsyncConnection[Any], gen: _Gen) -> Any:
    """Perform the generator's operations on an async connection, in autocommit mode."""
    _check_idle(conn.info.transaction_status)
    previous = conn.autocommit
    await conn.set_autocommit(True)
    try:
        reply: Any = None
        error: Exception | None = None
        while True:
            running, op = _step(gen, reply, error)
            if not running:
                return op
            reply, error = None, None
            try:
                if isinstance(op, _Query):
                    cur = await conn.execute(op.query, op.params or None)
                    reply = await cur.fetchall() if cur.description else None
                elif isinstance(op, _Up):
                    await op.migration.up_async(conn)
                else:
                    await asyncio.sleep(op.seconds)
            except Exception as exc:
                if not _ignorable(op, exc):
                    error = exc
    finally:
        if not conn.closed:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.rollback()
            await conn.set_autocommit(previous)
