"""The shipped migrations work with the host backend's runner, unchanged.

`tests/host_double.py` re-implements the host backend's runner from its documented
semantics: a `migrations` table in the connection's search path, the last applied version
read once, then for each pending migration `with conn.transaction(): migration.up(conn);
insert row`, and one final commit, on a NON-autocommit connection, where
`conn.transaction()` is a savepoint of one outer transaction. Applying our list that way
must give the same schema as our runner.
"""

from __future__ import annotations

import inspect
from typing import Any

import psycopg
from psycopg import sql

from sim_schema.migrations.migration import Migration, load_migrations

from host_double import host_run_migrations, host_run_migrations_async, host_validate

SCHEMA = "sim"

# --- catalog dump -----------------------------------------------------------------------

_EXCLUDE = "schema_migrations"  # our tracking table; the host keeps its own elsewhere

_DUMP_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relname NOT LIKE %(exclude)s || '%%'
        ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), co.collname, a.attidentity,
               a.attgenerated
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE n.nspname = %(schema)s AND a.attnum > 0 AND NOT a.attisdropped
          AND c.relkind IN ('r', 'v', 'm', 'p') AND c.relname <> %(exclude)s
        ORDER BY 1, 2""",
    "constraints": """
        SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relname <> %(exclude)s
        ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = %(schema)s AND tablename <> %(exclude)s ORDER BY 1, 2""",
    "index_validity": """
        SELECT c.relname, i.indisvalid FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND c.relname NOT LIKE %(exclude)s || '%%'
        ORDER BY 1""",
    "views": """
        SELECT viewname, definition FROM pg_views
        WHERE schemaname = %(schema)s ORDER BY 1""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = %(schema)s ORDER BY 1, 2""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s AND NOT t.tgisinternal ORDER BY 1, 2""",
}


def catalog_dump(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        params = {"schema": SCHEMA, "exclude": _EXCLUDE}
        return {
            name: conn.execute(query, params).fetchall()  # type: ignore[call-overload]
            for name, query in _DUMP_QUERIES.items()
        }


def assert_same_schema(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["relations"], "our runner created nothing in schema sim"
    for part in _DUMP_QUERIES:
        assert theirs[part] == ours[part], f"{part} differ"


def host_table(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT version, description FROM public.migrations ORDER BY 1"
        ).fetchall()


# --- the contract -----------------------------------------------------------------------


def test_shipped_list_has_the_host_shape() -> None:
    migrations = load_migrations(SCHEMA)
    assert migrations, "no migrations shipped"
    host_validate(migrations)
    assert [m.version() for m in migrations] == list(range(len(migrations)))
    for m in migrations:
        assert isinstance(m, Migration)
        assert isinstance(m.version(), int) and isinstance(m.description(), str)
        assert m.description().strip()
        assert list(inspect.signature(m.up).parameters) == ["conn"]
        assert list(inspect.signature(m.up_async).parameters) == ["conn"]
        assert inspect.iscoroutinefunction(m.up_async)
        # The host runs everything inside one transaction: a CONCURRENTLY build would fail.
        assert m.transactional, f"migration {m.version()} is non-transactional"


def test_host_runner_builds_the_same_schema_as_ours(blank_dsn: str, dsn: str) -> None:
    migrations = load_migrations(SCHEMA)
    with psycopg.connect(blank_dsn) as conn:  # NOT autocommit, as the host's pool gives
        before = conn.execute("SHOW search_path").fetchone()
        conn.commit()
        host_run_migrations(conn, migrations)
        assert conn.execute("SHOW search_path").fetchone() == before  # restored
        conn.commit()
        host_run_migrations(conn, migrations)  # a re-run is a no-op for the host too
    assert host_table(blank_dsn) == [(m.version(), m.description()) for m in migrations]
    assert_same_schema(catalog_dump(dsn), catalog_dump(blank_dsn))


async def test_host_async_runner_builds_the_same_schema_as_ours(blank_dsn: str, dsn: str) -> None:
    migrations = load_migrations(SCHEMA)
    async with await psycopg.AsyncConnection.connect(blank_dsn) as conn:
        await host_run_migrations_async(conn, migrations)
    assert host_table(blank_dsn) == [(m.version(), m.description()) for m in migrations]
    assert_same_schema(catalog_dump(dsn), catalog_dump(blank_dsn))


def test_the_dump_would_notice_a_difference(blank_dsn: str, dsn: str) -> None:
    """Guard against a comparison that cannot fail: drop one index, the dumps differ."""
    with psycopg.connect(blank_dsn) as conn:
        host_run_migrations(conn, load_migrations(SCHEMA))
    with psycopg.connect(blank_dsn, autocommit=True) as conn:
        index = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relnamespace = %s::regnamespace"
            " AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
            " ORDER BY 1 LIMIT 1",
            (SCHEMA,),
        ).fetchone()
        assert index is not None
        conn.execute(
            sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(index[0]))
        )
    ours, theirs = catalog_dump(dsn), catalog_dump(blank_dsn)
    assert ours["indexes"] != theirs["indexes"]
