"""Data lifecycle and access: delete a simulation or an experiment, archive a simulation
(export, verify, then delete), grant a role read-only access.

A delete is one `DELETE` on the parent row, and `ON DELETE CASCADE` removes the rest in the
same transaction: it row-locks only that simulation's rows, so other simulations keep
logging while it runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .errors import ArchiveRefused, ConfigurationError, NotFound
from .export import TABLES, Manifest, count_file_rows, export, file_sha256
from .migration import split_statements

_ROLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")
_PSQL_VARIABLE = re.compile(r':"(role|schema)"')


def row_counts(conn: psycopg.Connection[Any], simulation_ids: Sequence[str]) -> dict[str, int]:
    """Rows per table that belong to these simulations."""
    counts: dict[str, int] = {}
    for table in TABLES:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE simulation_id = ANY(%s)").format(
                sql.Identifier(table)
            ),
            (list(simulation_ids),),
        ).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def simulations_of(conn: psycopg.Connection[Any], experiment_id: str) -> list[str]:
    """The experiment's simulation ids; `NotFound` if the experiment does not exist."""
    if (
        conn.execute(
            "SELECT 1 FROM experiments WHERE experiment_id = %s", (experiment_id,)
        ).fetchone()
        is None
    ):
        raise NotFound(f"experiment {experiment_id!r} does not exist")
    rows = conn.execute(
        "SELECT simulation_id FROM simulations WHERE experiment_id = %s ORDER BY 1",
        (experiment_id,),
    ).fetchall()
    return [r[0] for r in rows]


def require_simulation(conn: psycopg.Connection[Any], simulation_id: str) -> None:
    if (
        conn.execute(
            "SELECT 1 FROM simulations WHERE simulation_id = %s", (simulation_id,)
        ).fetchone()
        is None
    ):
        raise NotFound(f"simulation {simulation_id!r} does not exist")


def delete_simulation(conn: psycopg.Connection[Any], simulation_id: str) -> dict[str, int]:
    """Delete a simulation and all its rows; returns the rows deleted per table."""
    with conn.transaction():
        _lock_simulation(conn, simulation_id)
        counts = row_counts(conn, [simulation_id])
        conn.execute("DELETE FROM simulations WHERE simulation_id = %s", (simulation_id,))
    return counts


def delete_experiment(conn: psycopg.Connection[Any], experiment_id: str) -> dict[str, int]:
    """Delete an experiment with all its simulations; returns the rows deleted per table."""
    with conn.transaction():
        found = conn.execute(
            "SELECT 1 FROM experiments WHERE experiment_id = %s FOR UPDATE", (experiment_id,)
        ).fetchone()
        if found is None:
            raise NotFound(f"experiment {experiment_id!r} does not exist")
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT simulation_id FROM simulations WHERE experiment_id = %s FOR UPDATE",
                (experiment_id,),
            )
        ]
        counts = {"experiments": 1, **row_counts(conn, ids)}
        conn.execute("DELETE FROM experiments WHERE experiment_id = %s", (experiment_id,))
    return counts


@dataclass(frozen=True)
class ArchiveResult:
    manifest: Manifest
    out_dir: Path
    deleted: dict[str, int]


def archive_simulation(
    conn: psycopg.Connection[Any],
    simulation_id: str,
    out_dir: str | Path,
    *,
    fmt: str = "csv",
    progress: bool | None = None,
) -> ArchiveResult:
    """Export every table of the simulation, verify the files, then delete it."""
    export(conn, out_dir, simulations=[simulation_id], fmt=fmt, progress=progress)
    return delete_archived(conn, simulation_id, out_dir)


def delete_archived(
    conn: psycopg.Connection[Any], simulation_id: str, out_dir: str | Path
) -> ArchiveResult:
    """Delete a simulation only if the export in `out_dir` holds every one of its rows.

    The files are re-read (row counts and sha256 against the manifest); then, with the
    simulation row locked FOR UPDATE (new rows for it wait: their foreign-key check needs
    that row), the database counts must equal the files' counts table by table.
    Otherwise nothing is deleted and `ArchiveRefused` says which table differs.
    """
    out = Path(out_dir)
    manifest = Manifest.read(out)
    if manifest.simulations != [simulation_id]:
        raise ArchiveRefused(
            f"archive of {simulation_id!r}: {out} holds an export of {manifest.simulations}"
        )
    in_files = verify_files(out, manifest)
    with conn.transaction():
        _lock_simulation(conn, simulation_id)
        unknown = _unexported_tables(conn)
        if unknown:
            raise ArchiveRefused(
                f"archive of {simulation_id!r}: nothing deleted: table(s) {', '.join(unknown)} "
                "hold simulation rows but are not known to the export (update export.TABLES)"
            )
        in_db = row_counts(conn, [simulation_id])
        problems = [
            f"{table} has {n} rows in the database but {in_files.get(table, 0)} in the export"
            + ("" if table in in_files else " (table not exported)")
            for table, n in in_db.items()
            if n != in_files.get(table, 0)
        ]
        if problems:
            raise ArchiveRefused(
                f"archive of {simulation_id!r}: nothing deleted: {'; '.join(problems)}"
            )
        conn.execute("DELETE FROM simulations WHERE simulation_id = %s", (simulation_id,))
    return ArchiveResult(manifest, out, in_db)


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


def _unexported_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables of the schema with a simulation_id column that the export does not know:
    the cascade would delete their rows without an archive of them."""
    rows = conn.execute(
        "SELECT c.table_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = current_schema() AND c.column_name = 'simulation_id'"
        " AND t.table_type = 'BASE TABLE' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows if r[0] not in TABLES]


def _lock_simulation(conn: psycopg.Connection[Any], simulation_id: str) -> None:
    found = conn.execute(
        "SELECT 1 FROM simulations WHERE simulation_id = %s FOR UPDATE", (simulation_id,)
    ).fetchone()
    if found is None:
        raise NotFound(f"simulation {simulation_id!r} does not exist")


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


def grant_read_only(conn: psycopg.Connection[Any], role: str, schema: str) -> None:
    """Give an existing role SELECT on the schema's tables and views, now and later."""
    validate_role_name(role)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            raise NotFound(f"role {role!r} does not exist: create it first (CREATE ROLE ... LOGIN)")
        for stmt in grant_read_only_statements(role, schema):
            conn.execute(stmt)


def _grant_sql_path() -> Path:
    """`sim_schema/_sql` in a built wheel, the repository's `sql/` otherwise."""
    packaged = resources.files("sim_schema") / "_sql"
    if packaged.is_dir():
        base = Path(str(packaged))
    else:
        base = Path(__file__).resolve().parent.parent / "sql"
    return base / "roles" / "grant_read_only.sql"
