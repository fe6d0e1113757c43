"""One exception hierarchy for the whole package.

Every message names the thing that went wrong (migration version, table, row index,
field); none of them ever contains a password.
"""

from __future__ import annotations


class SimSchemaError(Exception):
    """Root of every error raised by sim_schema."""


class ConfigurationError(SimSchemaError):
    """Bad settings: an invalid schema name, a malformed DSN, a missing option."""


class ConnectionFailed(SimSchemaError):
    """The server could not be reached or refused the credentials."""


class MigrationError(SimSchemaError):
    """Base of every migration-runner failure."""


class MigrationDefinitionError(MigrationError):
    """The migration list shipped with the code is itself inconsistent."""


class VerificationError(MigrationError):
    """The database's migration history disagrees with the code (drift, gap, duplicate, ahead)."""


class UntrackedSchema(MigrationError):
    """The schema holds our objects but no migration is recorded (installed by another
    runner before it recorded ours, or restored without its tracking table)."""

    def __init__(self, schema: str, objects: list[str]) -> None:
        self.schema = schema
        self.objects = objects
        shown = ", ".join(objects[:5]) + (", ..." if len(objects) > 5 else "")
        super().__init__(
            f"schema {schema!r} holds {len(objects)} relation(s) ({shown}) but records no "
            "migration: adopt it with `sim-schema baseline --to VERSION` (it first checks "
            "that the schema is exactly what versions 0..VERSION create)"
        )


class LockTimeout(MigrationError):
    """Another migrator held the advisory lock longer than the configured wait."""


class MigrationFailed(MigrationError):
    """A migration's SQL failed; it was rolled back, the database stays at the prior version."""

    def __init__(self, version: int, description: str, cause: BaseException) -> None:
        self.version = version
        self.description = description
        self.cause = cause
        super().__init__(f"migration {version} ({description}) failed and was rolled back: {cause}")


class InvalidIndexError(MigrationError):
    """An index left INVALID by a failed concurrent build blocks the migrations."""


class ValidationError(SimSchemaError):
    """A value PostgreSQL cannot store, reported by table, row index and field."""

    def __init__(self, table: str, row: int, field: str, reason: str) -> None:
        self.table = table
        self.row = row
        self.field = field
        self.reason = reason
        super().__init__(f"{table} row {row} field {field!r}: {reason}")


class NotFound(SimSchemaError):
    """A referenced simulation, experiment, agent or event does not exist."""


class SchemaNotReady(NotFound):
    """The module's tables are missing (never migrated) or older than the code needs; the
    message names the schema and the versions missing, and says to run `sim-schema migrate`."""


class LifecycleError(SimSchemaError):
    """A status change the simulation or experiment lifecycle forbids."""


class IngestError(SimSchemaError):
    """A batch could not be written; its rows are kept in `rows` for the caller.

    `rows_dropped` counts the rows not kept: the logger keeps the rows of failed batches
    up to a memory cap (`keep_failed_rows`), and only counts the ones beyond it.
    """

    def __init__(
        self,
        table: str,
        batch: int,
        cause: BaseException,
        rows: list[object],
        *,
        rows_dropped: int = 0,
    ) -> None:
        self.table = table
        self.batch = batch
        self.cause = cause
        self.rows = rows
        self.rows_dropped = rows_dropped
        count = len(rows) + rows_dropped
        kept = f", {rows_dropped} of them not kept: over the memory cap" if rows_dropped else ""
        super().__init__(f"{table} batch {batch} ({count} rows{kept}) was not written: {cause}")


class PartialMigrationFailed(MigrationFailed):
    """A non-transactional migration failed part-way: its earlier statements stay applied.

    It is not recorded, so the next run repeats it (its statements are written to be safe
    to re-run); `invalid_indexes` lists indexes its failure left INVALID.
    """

    def __init__(
        self, version: int, description: str, cause: BaseException, invalid_indexes: list[str]
    ) -> None:
        super().__init__(version, description, cause)
        self.invalid_indexes = invalid_indexes
        reason = " ".join(str(cause).split())
        message = (
            f"non-transactional migration {version} ({description}) failed and is not recorded;"
            f" statements before the failure stay applied: {reason}"
        )
        if invalid_indexes:
            message += (
                f"; it left INVALID index(es) {', '.join(invalid_indexes)}:"
                " rerun with --drop-invalid-indexes"
            )
        self.args = (message,)


class AlreadyExists(SimSchemaError):
    """A create met an existing row with the same key (experiment, simulation, event id)."""


class OutputError(SimSchemaError):
    """An export's output cannot be written: a file error, or an output that would be
    overwritten without `overwrite=True`."""


class ArchiveRefused(SimSchemaError):
    """An archive's export is incomplete or unverified, so nothing was deleted."""


class DatabaseTimeout(SimSchemaError):
    """A statement hit `statement_timeout` or `lock_timeout`; nothing of it was written."""


class SourceError(SimSchemaError):
    """An import source that cannot be read, or a value in it that cannot be stored; the
    message names the source (file or database), its table, the row and the field."""

    def __init__(
        self,
        source: str,
        reason: str,
        *,
        table: str | None = None,
        row: str | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.table = table
        self.row = row
        self.field = field
        self.reason = reason
        where = [source]
        if table:
            where.append(f"table {table}")
        if row:
            where.append(f"row {row}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}")


class ReplayConflict(SimSchemaError):
    """A row logged again (a resumed run) differs from the row stored under its key."""

    def __init__(
        self, table: str, key: dict[str, object], column: str, stored: str, logged: str
    ) -> None:
        self.table = table
        self.key = key
        self.column = column
        shown = ", ".join(f"{k}={v!r}" for k, v in key.items())
        super().__init__(
            f"{table}: the row with key ({shown}) is already stored with {column} = {stored},"
            f" the row logged again has {logged}: a resumed run must log the same rows in the"
            " same order (docs/ingest.md, Resume)"
        )
