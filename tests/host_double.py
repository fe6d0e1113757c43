"""A test double of the host backend's migration runner, written from its documented
semantics (never from its code):

- one unqualified `migrations(version, description, applied_at)` table, created with
  `CREATE TABLE IF NOT EXISTS` and committed at once;
- the list must satisfy index == version;
- the last applied version is read;
- each later migration runs `up()` inside `conn.transaction()` on the caller's default
  (non-autocommit) connection, together with the INSERT of its row; one commit at the
  end. On a non-autocommit connection `conn.transaction()` is a savepoint of one outer
  transaction: an exception that escapes leaves that transaction open and failed, and the
  caller's rollback takes every migration of the run with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

DDL = sql.SQL(
    "CREATE TABLE IF NOT EXISTS migrations ("
    " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
    " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)
LAST = sql.SQL("SELECT version, description, applied_at FROM migrations ORDER BY version DESC LIMIT 1")
INSERT = sql.SQL("INSERT INTO migrations (version, description, applied_at) VALUES (%s, %s, %s)")


def host_validate(migrations: Sequence[Any]) -> None:
    for i, migration in enumerate(migrations):
        if migration.version() != i:
            raise ValueError(f"Migration {i} has version {migration.version()}")


def host_run_migrations(conn: psycopg.Connection[Any], migrations: Sequence[Any]) -> None:
    host_validate(migrations)
    with conn.cursor() as cursor:
        cursor.execute(DDL)
        conn.commit()
    with conn.cursor() as cursor:
        cursor.execute(LAST)
        row = cursor.fetchone()
    last = row[0] if row else -1
    for migration in migrations[last + 1 :]:
        with conn.transaction():
            migration.up(conn)
            with conn.cursor() as cursor:
                cursor.execute(INSERT, (migration.version(), migration.description(), datetime.now()))
    conn.commit()


async def host_run_migrations_async(
    conn: psycopg.AsyncConnection[Any], migrations: Sequence[Any]
) -> None:
    host_validate(migrations)
    async with conn.cursor() as cursor:
        await cursor.execute(DDL)
        await conn.commit()
    async with conn.cursor() as cursor:
        await cursor.execute(LAST)
        row = await cursor.fetchone()
    last = row[0] if row else -1
    for migration in migrations[last + 1 :]:
        async with conn.transaction():
            await migration.up_async(conn)
            async with conn.cursor() as cursor:
                await cursor.execute(
                    INSERT, (migration.version(), migration.description(), datetime.now())
                )
    await conn.commit()


class HostMigration:
    """One of the host's own migrations: plain SQL run by `up()`, nothing recorded by us."""

    def __init__(self, version: int, statement: str, description: str | None = None) -> None:
        self._version = version
        self._statement = statement
        self._description = description or f"host migration {version}"

    def version(self) -> int:
        return self._version

    def description(self) -> str:
        return self._description

    def up(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(sql.SQL(self._statement))  # type: ignore[arg-type]

    async def up_async(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(sql.SQL(self._statement))  # type: ignore[arg-type]


def host_table_rows(conn: psycopg.Connection[Any], table: str = "migrations") -> list[tuple[Any, ...]]:
    return conn.execute(
        sql.SQL("SELECT version, description FROM {} ORDER BY 1").format(sql.SQL(table))
    ).fetchall()
