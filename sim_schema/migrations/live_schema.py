"""The live catalog of a schema, and what a list of migrations would make of an empty one.

`sim-schema baseline` adopts a schema installed without our tracking rows only after
comparing, object by object, what is there with what the migrations create: the expected
catalog is built by applying them to a scratch schema inside a transaction that is rolled
back, on the same server, so types, defaults and view definitions print the same way.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from .. import ops
from .migration import TRACKING_TABLE, SqlMigration

Catalog = dict[str, dict[str, str]]

# Each query yields (key, description) pairs of one kind of object; the search path is the
# dumped schema, so names inside definitions come out unqualified for both sides (index,
# trigger and function definitions always name their schema: it is cut out).
_QUERIES: dict[str, str] = {
    "relation": """
        SELECT c.relname,
               CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                              WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                              ELSE 'sequence' END
               || CASE c.relpersistence WHEN 'u' THEN ' (unlogged)' ELSE '' END
        FROM pg_class c WHERE c.relnamespace = %(schema)s::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND c.relname <> %(tracking)s""",
    "column": """
        SELECT c.relname || '.' || a.attname,
               'position ' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum)
               || ': ' || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
               || coalesce(' COLLATE ' || co.collname, '')
               || CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS'
                                     WHEN 'd' THEN ' IDENTITY BY DEFAULT' ELSE '' END
               || CASE WHEN a.attgenerated <> '' THEN ' GENERATED' ELSE '' END
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
        WHERE c.relnamespace = %(schema)s::regnamespace AND a.attnum > 0
          AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm')
          AND c.relname <> %(tracking)s""",
    "constraint": """
        SELECT c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        WHERE c.relnamespace = %(schema)s::regnamespace AND c.relname <> %(tracking)s""",
    "index": """
        SELECT c.relname,
               replace(pg_get_indexdef(c.oid), ' ON ' || quote_ident(%(schema)s) || '.', ' ON ')
               || CASE WHEN i.indisvalid THEN '' ELSE ' (INVALID)' END
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        WHERE c.relnamespace = %(schema)s::regnamespace AND t.relname <> %(tracking)s""",
    "view": """
        SELECT c.relname, pg_get_viewdef(c.oid)
        FROM pg_class c WHERE c.relnamespace = %(schema)s::regnamespace
          AND c.relkind IN ('v', 'm')""",
    "function": """
        SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               regexp_replace(replace(pg_get_functiondef(p.oid), quote_ident(%(schema)s) || '.',
                                      ''),
                              '^ SET search_path TO .*$', ' SET search_path TO <module schema>',
                              'n')
        FROM pg_proc p WHERE p.pronamespace = %(schema)s::regnamespace""",
    "trigger": """
        SELECT c.relname || '.' || t.tgname,
               replace(pg_get_triggerdef(t.oid), ' ON ' || quote_ident(%(schema)s) || '.', ' ON ')
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %(schema)s::regnamespace AND NOT t.tgisinternal""",
}


def _dump(schema: str) -> ops.Work:
    """The catalog of `schema`; the caller has made it the search path."""
    catalog: Catalog = {}
    params = {"schema": schema, "tracking": TRACKING_TABLE}
    for kind, query in _QUERIES.items():
        rows = yield ops.Query(query, params)
        catalog[kind] = dict(rows)
    return catalog


def catalog(schema: str) -> ops.Work:
    """The live catalog of `schema` (read in a transaction that changes nothing)."""
    return ops.transaction(_dump(schema), begin="BEGIN READ ONLY", schema=schema, keep=False)


def expected_catalog(migrations: Sequence[SqlMigration]) -> ops.Work:
    """What `migrations` create in an empty schema: applied to a scratch schema, dumped,
    then rolled back (nothing of it remains)."""
    scratch = f"sim_baseline_{secrets.token_hex(6)}"

    def build() -> ops.Work:
        for migration in migrations:
            yield from migration.bound_to(scratch).work(in_transaction=True)
        yield ops.Query(ops.SET_PATH_SCOPED, (ops.quoted_path(scratch), True))
        result: Catalog = yield from _dump(scratch)
        return result

    result: Catalog = yield from ops.transaction(build(), keep=False)
    return result


_KINDS = {
    "relation": "relation",
    "column": "column",
    "constraint": "constraint",
    "index": "index",
    "view": "view definition",
    "function": "function",
    "trigger": "trigger",
}


def first_difference(actual: Catalog, expected: Catalog) -> str | None:
    """The first object that differs, in words, or None when the catalogs are equal."""
    for kind, label in _KINDS.items():
        have, want = actual.get(kind, {}), expected.get(kind, {})
        for key in sorted(have.keys() | want.keys()):
            if key not in have:
                return f"{label} {key} is missing (expected: {want[key]})"
            if key not in want:
                return f"{label} {key} is not created by these migrations ({have[key]})"
            if have[key] != want[key]:
                return f"{label} {key} is {have[key]!r}, expected {want[key]!r}"
    return None
