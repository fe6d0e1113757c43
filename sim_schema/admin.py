"""Data lifecycle and access: delete a simulation or an experiment, archive a simulation
(export, verify, then delete), grant a role read-only access.

A delete is one `DELETE` on the parent row, and `ON DELETE CASCADE` removes the rest in the
same transaction: it row-locks only that simulation's rows, so other simulations keep
logging while it runs.

Every function is written once as work (`sim_schema.ops`) and has a sync form (the CLI,
deploy scripts) and an `_async` form (services): same statements, same checks. Each
takes any idle connection and the module's schema; the connection is handed back as it
was found.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg
from psycopg import sql

from . import ops, readiness
from .catalog import DATA_TABLES, SIMULATION_TABLES
from .errors import ArchiveRefused, ConfigurationError, LifecycleError, NotFound
from .migrations.migration import split_statements
from .names import DEFAULT_SCHEMA
from .read.export import Manifest, count_file_rows, export_work, file_sha256
from .shipped import shipped_dir

_ROLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")
_PSQL_VARIABLE = re.compile(r':"(role|schema)"')
_WHAT = "this operation"


@dataclass(frozen=True)
class ArchiveResult:
    manifest: Manifest
    out_dir: Path
    deleted: dict[str, int]


# --- sync and async forms ------------------------------------------------------------------


def row_counts(
    conn: psycopg.Connection[Any], simulation_ids: Sequence[str], *, schema: str = DEFAULT_SCHEMA
) -> dict[str, int]:
    """Rows per table that belong to these simulations."""
    work = _read(schema, _row_counts(list(simulation_ids)))
    return cast(dict[str, int], readiness.run_borrowed(conn, work, what=_WHAT, schema=schema))


async def row_counts_async(
    conn: psycopg.AsyncConnection[Any],
    simulation_ids: Sequence[str],
    *,
    schema: str = DEFAULT_SCHEMA,
) -> dict[str, int]:
    work = _read(schema, _row_counts(list(simulation_ids)))
    result = await readiness.run_borrowed_async(conn, work, what=_WHAT, schema=schema)
    return cast(dict[str, int], result)


def simulations_of(
    conn: psycopg.Connection[Any], experiment_id: str, *, schema: str = DEFAULT_SCHEMA
) -> list[str]:
    """The experiment's simulation ids; `NotFound` if the experiment does not exist."""
    work = _read(schema, _simulations_of(experiment_id, lock=False))
    return cast(list[str], readiness.run_borrowed(conn, work, what=_WHAT, schema=schema))


async def simulations_of_async(
    conn: psycopg.AsyncConnection[Any], experiment_id: str, *, schema: str = DEFAULT_SCHEMA
) -> list[str]:
    work = _read(schema, _simulations_of(experiment_id, lock=False))
    result = await readiness.run_borrowed_async(conn, work, what=_WHAT, schema=schema)
    return cast(list[str], result)


def require_simulation(
    conn: psycopg.Connection[Any], simulation_id: str, *, schema: str = DEFAULT_SCHEMA
) -> None:
    """`NotFound` unless the simulation exists."""
    work = _read(schema, _require_simulation(simulation_id))
    readiness.run_borrowed(conn, work, what=_WHAT, schema=schema)


async def require_simulation_async(
    conn: psycopg.AsyncConnection[Any], simulation_id: str, *, schema: str = DEFAULT_SCHEMA
) -> None:
    work = _read(schema, _require_simulation(simulation_id))
    await readiness.run_borrowed_async(conn, work, what=_WHAT, schema=schema)


def delete_simulation(
    conn: psycopg.Connection[Any], simulation_id: str, *, schema: str = DEFAULT_SCHEMA
) -> dict[str, int]:
    """Delete a simulation and all its rows; returns the rows deleted per table."""
    work = _write(schema, _delete_simulation(simulation_id))
    return cast(dict[str, int], readiness.run_borrowed(conn, work, what=_WHAT, schema=schema))


async def delete_simulation_async(
    conn: psycopg.AsyncConnection[Any], simulation_id: str, *, schema: str = DEFAULT_SCHEMA
) -> dict[str, int]:
    work = _write(schema, _delete_simulation(simulation_id))
    result = await readiness.run_borrowed_async(conn, work, what=_WHAT, schema=schema)
    return cast(dict[str, int], result)


def delete_experiment(
    conn: psycopg.Connection[Any],
    experiment_id: str,
    *,
    cascade: bool = False,
    schema: str = DEFAULT_SCHEMA,
) -> dict[str, int]:
    """Delete an experiment; rows deleted per table.

    An experiment that still holds simulations is refused (`LifecycleError` naming how
    many) unless `cascade=True`, which deletes them and all their rows with it.
    """
    work = _write(schema, _delete_experiment(experiment_id, cascade))
    return cast(dict[str, int], readiness.run_borrowed(conn, work, what=_WHAT, schema=schema))


async def delete_experiment_async(
    conn: psycopg.AsyncConnection[Any],
    experiment_id: str,
    *,
    cascade: bool = False,
    schema: str = DEFAULT_SCHEMA,
) -> dict[str, int]:
    work = _write(schema, _delete_experiment(experiment_id, cascade))
    result = await readiness.run_borrowed_async(conn, work, what=_WHAT, schema=schema)
    return cast(dict[str, int], result)


def archive_simulation(
    conn: psycopg.Connection[Any],
    simulation_id: str,
    out_dir: str | Path,
    *,
    fmt: str = "csv",
    progress: bool | None = None,
    schema: str = DEFAULT_SCHEMA,
    overwrite: bool = False,
) -> ArchiveResult:
    """Export every table of the simulation, verify the files, then delete it. An output
    directory that already holds files is refused unless `overwrite`."""
    work = _archive(schema, simulation_id, Path(out_dir), fmt, progress, overwrite)
    return cast(ArchiveResult, readiness.run_borrowed(conn, work, what=_WHAT, schema=schema))


async def archive_simulation_async(
    conn: psycopg.AsyncConnection[Any],
    simulation_id: str,
    out_dir: str | Path,
    *,
    fmt: str = "csv",
    progress: bool | None = None,
    schema: str = DEFAULT_SCHEMA,
    overwrite: bool = False,
) -> ArchiveResult:
    work = _archive(schema, simulation_id, Path(out_dir), fmt, progress, overwrite)
    result = await readiness.run_borrowed_async(conn, work, what=_WHAT, schema=schema)
    return cast(ArchiveResult, result)


def delete_archived(
    conn: psycopg.Connection[Any],
    simulation_id: str,
    out_dir: str | Path,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> ArchiveResult:
    """Delete a simulation only if the export in `out_dir` holds every one of its rows.

    The files are re-read (row counts and sha256 against the manifest); then, with the
    simulation row locked FOR UPDATE (new rows for it wait: their foreign-key check needs
    that row), the database counts must equal the files' counts table by table.
    Otherwise nothing is deleted and `ArchiveRefused` says which table differs.
    """
    work = _delete_archived(schema, simulation_id, Path(out_dir))
    return cast(ArchiveResult, readiness.run_borrowed(conn, work, what=_WHAT, schema=schema))


async def delete_archived_async(
    conn: psycopg.AsyncConnection[Any],
    simulation_id: str,
    out_dir: str | Path,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> ArchiveResult:
    work = _delete_archived(schema, simulation_id, Path(out_dir))
    result = await readiness.run_borrowed_async(conn, work, what=_WHAT, schema=schema)
    return cast(ArchiveResult, result)


def grant_read_only(
    conn: psycopg.Connection[Any], role: str, schema: str, *, allow_temp: bool = False
) -> None:
    """Give an existing role SELECT on the schema's tables and views, now and later.

    Refused (`ConfigurationError`, nothing granted) while the role could still create
    temporary tables in the database, unless `allow_temp`: PostgreSQL grants TEMPORARY to
    PUBLIC by default, which only the database's owner can take back (the message gives
    the statements).
    """
    work = _write(schema, _grant(role, schema, allow_temp))
    readiness.run_borrowed(conn, work, what=_WHAT, schema=schema)


async def grant_read_only_async(
    conn: psycopg.AsyncConnection[Any], role: str, schema: str, *, allow_temp: bool = False
) -> None:
    work = _write(schema, _grant(role, schema, allow_temp))
    await readiness.run_borrowed_async(conn, work, what=_WHAT, schema=schema)


# --- the work, once ------------------------------------------------------------------------


def _read(schema: str | None, body: ops.Work) -> ops.Work:
    """`body` in a read-only transaction; `schema` None keeps the connection's search path
    (the repositories, whose connections come from `Store.connection()`)."""
    return ops.transaction(body, begin="BEGIN READ ONLY", schema=schema)


def _write(schema: str | None, body: ops.Work) -> ops.Work:
    return ops.transaction(body, schema=schema)


def delete_simulation_work(simulation_id: str) -> ops.Work:
    """`delete_simulation` on a connection whose search path is the module schema."""
    return _write(None, _delete_simulation(simulation_id))


def delete_experiment_work(experiment_id: str, *, cascade: bool) -> ops.Work:
    """`delete_experiment` on a connection whose search path is the module schema."""
    return _write(None, _delete_experiment(experiment_id, cascade))


def _row_counts(simulation_ids: list[str]) -> ops.Work:
    counts: dict[str, int] = {}
    for table in SIMULATION_TABLES:
        rows = yield ops.Query(
            sql.SQL("SELECT count(*) FROM {} WHERE simulation_id = ANY(%s)").format(
                sql.Identifier(table)
            ),
            (simulation_ids,),
        )
        counts[table] = int(rows[0][0])
    return counts


def _simulations_of(experiment_id: str, *, lock: bool) -> ops.Work:
    found = yield ops.Query(
        "SELECT 1 FROM experiments WHERE experiment_id = %s FOR UPDATE"
        if lock
        else "SELECT 1 FROM experiments WHERE experiment_id = %s",
        (experiment_id,),
    )
    if not found:
        raise NotFound(f"experiment {experiment_id!r} does not exist")
    rows = yield ops.Query(
        "SELECT simulation_id FROM simulations WHERE experiment_id = %s ORDER BY 1 FOR UPDATE"
        if lock
        else "SELECT simulation_id FROM simulations WHERE experiment_id = %s ORDER BY 1",
        (experiment_id,),
    )
    return [r[0] for r in rows]


def _require_simulation(simulation_id: str, *, lock: bool = False) -> ops.Work:
    found = yield ops.Query(
        "SELECT 1 FROM simulations WHERE simulation_id = %s FOR UPDATE"
        if lock
        else "SELECT 1 FROM simulations WHERE simulation_id = %s",
        (simulation_id,),
    )
    if not found:
        raise NotFound(f"simulation {simulation_id!r} does not exist")


def _delete_simulation(simulation_id: str) -> ops.Work:
    yield from _require_simulation(simulation_id, lock=True)
    counts = yield from _row_counts([simulation_id])
    yield ops.Query("DELETE FROM simulations WHERE simulation_id = %s", (simulation_id,))
    return counts


def _delete_experiment(experiment_id: str, cascade: bool) -> ops.Work:
    ids = yield from _simulations_of(experiment_id, lock=True)
    if ids and not cascade:
        raise LifecycleError(
            f"experiment {experiment_id!r} still holds {len(ids)} simulation(s) "
            f"({', '.join(map(repr, ids[:3]))}{', ...' if len(ids) > 3 else ''}): "
            "delete them first, or pass cascade=True (CLI: --cascade) to delete them with it"
        )
    counts = yield from _row_counts(ids)
    yield ops.Query("DELETE FROM experiments WHERE experiment_id = %s", (experiment_id,))
    return {"experiments": 1, **counts}


def _archive(
    schema: str, simulation_id: str, out: Path, fmt: str, progress: bool | None, overwrite: bool
) -> ops.Work:
    yield from export_work(
        out, schema, simulations=[simulation_id], fmt=fmt, progress=progress, overwrite=overwrite
    )
    result: ArchiveResult = yield from _delete_archived(schema, simulation_id, out)
    return result


def _delete_archived(schema: str, simulation_id: str, out: Path) -> ops.Work:
    manifest = Manifest.read(out)
    if manifest.simulations != [simulation_id]:
        raise ArchiveRefused(
            f"archive of {simulation_id!r}: {out} holds an export of {manifest.simulations}"
        )
    in_files = verify_files(out, manifest)

    def body() -> ops.Work:
        yield from _require_simulation(simulation_id, lock=True)
        unknown = yield from _unexported_tables(schema)
        if unknown:
            raise ArchiveRefused(
                f"archive of {simulation_id!r}: nothing deleted: table(s) {', '.join(unknown)} "
                "hold simulation rows but are not in the catalog (sim_schema.catalog)"
            )
        in_db = yield from _row_counts([simulation_id])
        problems = [
            f"{table} has {n} rows in the database but {in_files.get(table, 0)} in the export"
            + ("" if table in in_files else " (table not exported)")
            for table, n in in_db.items()
            if table in DATA_TABLES and n != in_files.get(table, 0)
        ]
        if problems:
            raise ArchiveRefused(
                f"archive of {simulation_id!r}: nothing deleted: {'; '.join(problems)}"
            )
        yield ops.Query("DELETE FROM simulations WHERE simulation_id = %s", (simulation_id,))
        return ArchiveResult(manifest, out, in_db)

    result: ArchiveResult = yield from _write(schema, body())
    return result


def verify_files(out_dir: Path, manifest: Manifest) -> dict[str, int]:
    """Rows per table read back from the files; `ArchiveRefused` if a file is not as written."""
    counts: dict[str, int] = {}
    for table, rec in manifest.tables.items():
        path = out_dir / rec.file
        if not path.is_file():
            raise ArchiveRefused(f"export file {path} is missing: nothing deleted")
        if file_sha256(path) != rec.sha256:
            raise ArchiveRefused(
                f"export file {path} changed since it was written: nothing deleted"
            )
        counts[table] = count_file_rows(path, manifest.format)
        if counts[table] != rec.rows:
            raise ArchiveRefused(
                f"export file {path} has {counts[table]} rows, the manifest says {rec.rows}: "
                "nothing deleted"
            )
    return counts


def _unexported_tables(schema: str) -> ops.Work:
    """Tables of the schema with a simulation_id column that the export does not know:
    the cascade would delete their rows without an archive of them."""
    rows = yield ops.Query(
        "SELECT c.table_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = %s AND c.column_name = 'simulation_id'"
        " AND t.table_type = 'BASE TABLE' ORDER BY 1",
        (schema,),
    )
    return [r[0] for r in rows if r[0] not in SIMULATION_TABLES]


# --- read-only role ----------------------------------------------------------------------


def validate_role_name(role: str) -> str:
    if not _ROLE_NAME.fullmatch(role) or role.lower().startswith("pg_") or role.lower() == "public":
        raise ConfigurationError(
            f"invalid role name {role!r}: use 1-63 characters of letters, digits, _ $ -, "
            "not starting with a digit or 'pg_', and not 'public'"
        )
    return role


def grant_read_only_statements(role: str, schema: str) -> list[sql.Composed]:
    """The statements of sql/roles/grant_read_only.sql with role and schema quoted."""
    text = _grant_sql_path().read_text(encoding="utf-8")
    idents = {"role": sql.Identifier(role), "schema": sql.Identifier(schema)}
    return [
        # Reviewed SQL shipped with the package; its only variables become Identifiers.
        sql.SQL(_PSQL_VARIABLE.sub(r"{\1}", stmt)).format(**idents)
        for stmt in split_statements(text)
    ]


def _grant(role: str, schema: str, allow_temp: bool) -> ops.Work:
    validate_role_name(role)
    found = yield ops.Query("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    if not found:
        raise NotFound(f"role {role!r} does not exist: create it first (CREATE ROLE ... LOGIN)")
    for stmt in grant_read_only_statements(role, schema):
        yield ops.Query(stmt)
    if allow_temp:
        return
    rows = yield ops.Query("SELECT current_database()")
    database = sql.Identifier(rows[0][0])
    yield ops.Query(
        sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM {}").format(database, sql.Identifier(role))
    )
    rows = yield ops.Query(
        "SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')", (role,)
    )
    if rows[0][0]:
        revoke = sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(database)
        raise ConfigurationError(
            f"role {role!r} could still create temporary tables: TEMPORARY on this database"
            " is granted to PUBLIC (PostgreSQL's default) or to a role it is a member of;"
            f" nothing was granted. Run `{revoke.as_string()}` as the database owner (and"
            " GRANT TEMPORARY to the roles that need it), or allow it: --allow-temp,"
            " allow_temp=True"
        )


def _grant_sql_path() -> Path:
    return shipped_dir("sql") / "roles" / "grant_read_only.sql"
