"""The migration runner: locked, verified, one real transaction per migration.

The decisions live once, in generator functions that yield operations (`sim_schema.ops`)
and receive their results; `ops.run` and `ops.run_async` perform them on a sync or an
async connection, which `ops.borrowed` hands back exactly as it found it (autocommit
flag, search_path, no transaction, no advisory lock), also when the work fails or is
cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from .. import ops
from ..errors import (
    ConfigurationError,
    ConnectionFailed,
    InvalidIndexError,
    LockTimeout,
    MigrationError,
    MigrationFailed,
    NotFound,
    PartialMigrationFailed,
    SimSchemaError,
    UntrackedSchema,
    VerificationError,
)
from ..names import DEFAULT_SCHEMA, validate_schema_name, validate_timeout
from ..pgerrors import reason
from . import live_schema
from .migration import (
    TRACKING_TABLE,
    SqlMigration,
    create_tracking_table,
    drift_message,
    load_migrations,
    lock_key,
    record_applied,
    tracking_table,
    validate_sequence,
)

DEFAULT_LOCK_WAIT = 60.0
DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_STATEMENT_TIMEOUT = "30min"
_POLL_INTERVAL = 0.2


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


State = Literal["applied", "pending", "drifted", "unknown", "untracked"]


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
        self.lock_key = lock_key(self.schema)

    # --- public entry points: one implementation each, two drivers ----------------------

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

    def baseline(self, conn: psycopg.Connection[Any], to: int) -> list[AppliedRecord]:
        result: list[AppliedRecord] = _drive(conn, self._baseline(to))
        return result

    async def baseline_async(
        self, conn: psycopg.AsyncConnection[Any], to: int
    ) -> list[AppliedRecord]:
        result: list[AppliedRecord] = await _drive_async(conn, self._baseline(to))
        return result

    # --- the logic, once ---------------------------------------------------------------

    def _read_applied(self) -> ops.Work:
        exists = yield ops.Query(
            "SELECT to_regclass(%s)", (f'"{self.schema}".{TRACKING_TABLE}',)
        )
        if exists[0][0] is None:
            return []
        rows = yield ops.Query(
            sql.SQL(
                "SELECT version, description, checksum, transactional, applied_at,"
                " duration_ms, applied_by FROM {} ORDER BY version"
            ).format(tracking_table(self.schema))
        )
        return [AppliedRecord(*row) for row in rows]

    def _untracked_objects(self) -> ops.Work:
        """Relations of the schema other than the tracking table (for an empty history)."""
        rows = yield ops.Query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm')"
            " AND c.relname <> %s ORDER BY 1",
            (self.schema, TRACKING_TABLE),
        )
        return [r[0] for r in rows]

    def _checked_state(self) -> ops.Work:
        """The applied records, refusing a schema that holds objects but records nothing."""
        applied, untracked = yield from self._state()
        if untracked:
            raise UntrackedSchema(self.schema, untracked)
        return applied

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
                    drift_message(
                        record.version, migration.description(), record.checksum,
                        migration.checksum,
                    )
                )  # fmt: skip

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

    def _snapshot(self, body: ops.Work) -> ops.Work:
        """Reads that must agree with each other (the tracking rows and the relations of the
        schema), taken in one snapshot: a migrator committing meanwhile is seen by both or
        by neither."""
        return ops.transaction(body, begin="BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def _state(self) -> ops.Work:
        """(applied records, relations of a schema that records nothing), in one snapshot."""

        def read() -> ops.Work:
            applied = yield from self._read_applied()
            untracked = [] if applied else (yield from self._untracked_objects())
            return applied, untracked

        result: tuple[list[AppliedRecord], list[str]] = yield from self._snapshot(read())
        return result

    def _status(self) -> ops.Work:
        applied, untracked = yield from self._state()
        by_version = {record.version: record for record in applied}
        states: list[MigrationState] = []
        for migration in self.migrations:
            record = by_version.pop(migration.version(), None)
            if record is None:
                states.append(
                    MigrationState(
                        migration.version(),
                        migration.description(),
                        "untracked" if untracked else "pending",
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

    def _plan(self, to: int | None) -> ops.Work:
        applied = yield from self._checked_state()
        self._verify(applied)
        return self._pending(applied, to)

    def _invalid_indexes(self, *, best_effort: bool = False) -> ops.Work:
        rows = yield ops.Query(
            "SELECT c.relname FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND NOT i.indisvalid ORDER BY 1",
            (self.schema,),
            best_effort,
        )
        return [row[0] for row in rows or ()]

    def _acquire_lock(self) -> ops.Work:
        started = time.monotonic()
        while True:
            got = yield ops.Query("SELECT pg_try_advisory_lock(%s)", (self.lock_key,))
            if got[0][0]:
                return time.monotonic() - started
            if time.monotonic() - started >= self.lock_wait:
                holder = yield from self._lock_holder()
                raise LockTimeout(
                    f"the migration lock of schema {self.schema!r} has been held for more"
                    f" than {self.lock_wait:g}s by {holder}; nothing was applied"
                )
            yield ops.Sleep(_POLL_INTERVAL)

    def _lock_holder(self) -> ops.Work:
        """Who holds the migration lock, for the timeout message (best effort)."""
        key = self.lock_key & 0xFFFF_FFFF_FFFF_FFFF
        rows = yield ops.Query(
            "SELECT a.pid, a.usename, a.application_name, a.usename = current_user"
            " FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.classid::bigint = %s AND l.objid::bigint = %s LIMIT 1",
            (key >> 32, key & 0xFFFF_FFFF),
            True,
        )
        if not rows:
            return "a session that could not be identified"
        pid, user, app, own = rows[0]
        who = f"pid {pid}, role {user!r}" + (f", application {app!r}" if app else "")
        if own:
            return f"another migrator ({who}): wait for it, or raise lock_wait (--lock-wait)"
        # Any role may take an advisory lock; one that is not a migrator's is a mistake.
        return (
            f"a session of another role ({who}), not a migrator: if it is not migrating,"
            f" end it (SELECT pg_terminate_backend({pid})) and run the migration again"
        )

    def _set_timeouts(self, migration: SqlMigration, is_local: bool) -> ops.Query:
        return ops.Query(
            "SELECT set_config('lock_timeout', %s, %s), set_config('statement_timeout', %s, %s)",
            (
                migration.lock_timeout or self.lock_timeout,
                is_local,
                migration.statement_timeout or self.statement_timeout,
                is_local,
            ),
        )

    def _read_record(self, version: int) -> ops.Query:
        return ops.Query(
            sql.SQL(
                "SELECT version, description, checksum, transactional, applied_at,"
                " duration_ms, applied_by FROM {} WHERE version = %s"
            ).format(tracking_table(self.schema)),
            (version,),
        )

    def _apply(self, migration: SqlMigration) -> ops.Work:
        """One migration: its own transaction, or autocommit statements recorded after success.

        The migration's own `work` runs the statements and writes its tracking row (the
        same code the host runner reaches through `up()`).
        """
        version = migration.version()
        if migration.transactional:
            yield ops.Query("BEGIN")
            try:
                yield self._set_timeouts(migration, is_local=True)
                yield from migration.work(in_transaction=True)
                rows = yield self._read_record(version)
                yield ops.Query("COMMIT")
            except BaseException as exc:  # cancellation too: never leave the BEGIN open
                yield ops.Query("ROLLBACK", best_effort=True)
                if isinstance(exc, psycopg.Error):
                    raise MigrationFailed(version, migration.description(), exc) from exc
                raise
            return AppliedRecord(*rows[0])
        try:
            yield self._set_timeouts(migration, is_local=False)
            yield from migration.work(in_transaction=False)
        except psycopg.Error as exc:
            yield ops.Query("RESET lock_timeout", best_effort=True)
            yield ops.Query("RESET statement_timeout", best_effort=True)
            invalid = yield from self._invalid_indexes(best_effort=True)
            raise PartialMigrationFailed(version, migration.description(), exc, invalid) from exc
        yield ops.Query("RESET lock_timeout")
        yield ops.Query("RESET statement_timeout")
        rows = yield self._read_record(version)
        return AppliedRecord(*rows[0])

    def _locked(self, body: ops.Work) -> ops.Work:
        """`body` under the migration lock, which is released whatever happens."""
        lock_wait = yield from self._acquire_lock()
        try:
            yield ops.Query(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            yield ops.Query(create_tracking_table(self.schema))
            result = yield from body
        finally:
            # Also released when the session ends; a failed unlock makes the driver close it.
            yield ops.Query("SELECT pg_advisory_unlock(%s)", (self.lock_key,), best_effort=True)
        return lock_wait, result

    def _migrate(self, to: int | None, drop_invalid_indexes: bool) -> ops.Work:
        # Cheap refusal before queueing for the lock; everything is re-read under it.
        applied = yield from self._checked_state()
        self._verify(applied)
        self._pending(applied, to)
        lock_wait, result = yield from self._locked(self._migrate_locked(to, drop_invalid_indexes))
        result.lock_wait_s = lock_wait
        return result

    def _migrate_locked(self, to: int | None, drop_invalid_indexes: bool) -> ops.Work:
        result = MigrateResult()
        applied = yield from self._checked_state()
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
            yield ops.Query(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
                    sql.Identifier(self.schema), sql.Identifier(name)
                )
            )
            result.dropped_invalid_indexes.append(name)
        for migration in pending:
            record = yield from self._apply(migration)
            result.applied.append(record)
        return result

    def _baseline(self, to: int) -> ops.Work:
        last = len(self.migrations) - 1
        if not 0 <= to <= last:
            raise ConfigurationError(f"--to {to}: this code knows versions 0..{last}")
        _, records = yield from self._locked(self._baseline_locked(to))
        return records

    def _baseline_locked(self, to: int) -> ops.Work:
        applied = yield from self._read_applied()
        if applied:
            raise VerificationError(
                f"schema {self.schema!r} already records versions 0..{applied[-1].version}: "
                "baseline adopts only a schema with no recorded migration"
            )
        objects = yield from self._untracked_objects()
        if not objects:
            raise NotFound(
                f"schema {self.schema!r} holds nothing to adopt: run `sim-schema migrate`"
            )
        expected = yield from live_schema.expected_catalog(self.migrations[: to + 1])
        actual = yield from live_schema.catalog(self.schema)
        difference = live_schema.first_difference(actual, expected)
        if difference is not None:
            raise VerificationError(
                f"baseline refused: schema {self.schema!r} is not what versions 0..{to} "
                f"create: {difference}; nothing was recorded"
            )
        def record() -> ops.Work:
            records: list[AppliedRecord] = []
            for migration in self.migrations[: to + 1]:
                yield record_applied(
                    self.schema, migration.version(), migration.description(),
                    migration.checksum, migration.transactional, 0.0, note=" by baseline",
                )  # fmt: skip
                rows = yield self._read_record(migration.version())
                records.append(AppliedRecord(*rows[0]))
            return records

        result: list[AppliedRecord] = yield from ops.transaction(record())
        return result


# --- drivers -----------------------------------------------------------------------------


def _unexpected(exc: psycopg.Error) -> SimSchemaError:
    """A database error the logic did not turn into a specific one (e.g. a lost connection)."""
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return ConnectionFailed(f"connection lost during migration: {reason(exc)}")
    return MigrationError(f"migration runner: {reason(exc)}")


_WHAT = "the migration runner"


def _drive(conn: psycopg.Connection[Any], work: ops.Work) -> Any:
    try:
        return ops.run_borrowed(conn, work, what=_WHAT)
    except psycopg.Error as exc:
        raise _unexpected(exc) from exc


async def _drive_async(conn: psycopg.AsyncConnection[Any], work: ops.Work) -> Any:
    try:
        return await ops.run_borrowed_async(conn, work, what=_WHAT)
    except psycopg.Error as exc:
        raise _unexpected(exc) from exc


# --- the front door ----------------------------------------------------------------------


def migrate(
    conn: psycopg.Connection[Any],
    *,
    schema: str = DEFAULT_SCHEMA,
    to: int | None = None,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT,
) -> MigrateResult:
    """Apply the shipped migrations to `schema` with our locked, verified runner.

    For a host backend at start-up: `conn` may be autocommit or not and have any
    search_path, but no open transaction; it is handed back as it was (autocommit flag,
    search_path, no transaction, no advisory lock), also when this fails or is cancelled.
    """
    runner = MigrationRunner(
        load_migrations(None), schema=schema, lock_wait=lock_wait,
        lock_timeout=lock_timeout, statement_timeout=statement_timeout,
    )  # fmt: skip
    return runner.migrate(conn, to)


async def migrate_async(
    conn: psycopg.AsyncConnection[Any],
    *,
    schema: str = DEFAULT_SCHEMA,
    to: int | None = None,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    lock_timeout: str = DEFAULT_LOCK_TIMEOUT,
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT,
) -> MigrateResult:
    """The async form of `migrate` (same implementation, async driver)."""
    runner = MigrationRunner(
        load_migrations(None), schema=schema, lock_wait=lock_wait,
        lock_timeout=lock_timeout, statement_timeout=statement_timeout,
    )  # fmt: skip
    return await runner.migrate_async(conn, to)
