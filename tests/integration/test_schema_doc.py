"""docs/schema.md describes exactly the tables of a migrated database.

Each `### name` section under `## Tables` holds a markdown table `column | type | meaning`;
its columns must match what a reader sees: the base tables and the views over the stored
tables (`models.Storage`), in order, with the types `format_type` prints. The sections
under `## Storage` must match the stored tables and the rollups the same way. The analyst
views are not compared (they are documented in docs/analytics.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sim_schema.catalog import TABLES

SCHEMA_DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
_ROW = re.compile(r"^\|(.*)\|\s*$")

Columns = list[tuple[str, str]]


def parse_schema_doc(text: str, section: str = "Tables") -> dict[str, Columns]:
    """Table name -> documented (column, type) pairs, from one `## ` section."""
    tables: dict[str, Columns] = {}
    in_tables = False
    current: str | None = None
    in_grid = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            in_tables = line.strip() == f"## {section}"
            current = None
            continue
        if not in_tables:
            continue
        if line.startswith("### "):
            current = line[4:].strip().strip("`")
            if " " in current:  # a prose subsection, not a table
                current = None
                continue
            if current in tables:
                raise AssertionError(f"schema.md:{lineno}: table {current} documented twice")
            tables[current] = []
            in_grid = False
            continue
        row = _ROW.match(line)
        if current is None or row is None:
            in_grid = False
            continue
        cells = [c.strip().strip("`") for c in row[1].split("|")]
        if cells[:2] == ["column", "type"]:
            if tables[current]:
                raise AssertionError(f"schema.md:{lineno}: second column table for {current}")
            in_grid = True
        elif in_grid and not set(cells[0]) <= {"-", ":"}:
            if len(cells) != 3 or not all(cells):
                raise AssertionError(
                    f"schema.md:{lineno}: row of {current} must be `column | type | meaning`,"
                    f" got {line!r}"
                )
            tables[current].append((cells[0], cells[1]))
    return tables


def relations(conn: psycopg.Connection[Any], schema: str, kind: str) -> dict[str, Columns]:
    rows = conn.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = %s AND c.relkind = %s
        ORDER BY c.relname, a.attnum
        """,
        (schema, kind),
    ).fetchall()
    tables: dict[str, Columns] = {}
    for table, column, type_ in rows:
        tables.setdefault(table, []).append((column, type_))
    return tables


STORED = {t.stored.table: t.name for t in TABLES.values() if t.stored}
ROLLUPS = {"population_rollup", "action_rollup"}


def catalog_tables(conn: psycopg.Connection[Any], schema: str) -> dict[str, Columns]:
    """What a reader sees as tables: the base tables, the stored ones as their views."""
    tables = relations(conn, schema, "r")
    views = relations(conn, schema, "v")
    for stored, view in STORED.items():
        if stored in tables:
            del tables[stored]
            tables[view] = views[view]
    for name in ROLLUPS:
        tables.pop(name, None)
    return tables


def storage_tables(conn: psycopg.Connection[Any], schema: str) -> dict[str, Columns]:
    tables = relations(conn, schema, "r")
    return {n: c for n, c in tables.items() if n in STORED or n in ROLLUPS}


def column_differences(table: str, documented: Columns, actual: Columns) -> list[str]:
    """Every way `documented` differs from `actual`, one sentence each."""
    problems: list[str] = []
    doc_types = dict(documented)
    db_types = dict(actual)
    for name, type_ in actual:
        if name not in doc_types:
            problems.append(f"{table}.{name} ({type_}) is in the database but not documented")
        elif doc_types[name] != type_:
            problems.append(
                f"{table}.{name}: documented type {doc_types[name]!r}, database has {type_!r}"
            )
    for name, _ in documented:
        if name not in db_types:
            problems.append(f"{table}.{name} is documented but not in the database")
    if not problems and [c for c, _ in documented] != [c for c, _ in actual]:
        problems.append(
            f"{table}: column order differs: documented {[c for c, _ in documented]},"
            f" database {[c for c, _ in actual]}"
        )
    seen: set[str] = set()
    for name, _ in documented:
        if name in seen:
            problems.append(f"{table}.{name} is documented twice")
        seen.add(name)
    return problems


def schema_doc_differences(documented: dict[str, Columns], actual: dict[str, Columns]) -> list[str]:
    problems = [f"table {t} is in the database but has no `### {t}` section in docs/schema.md"
                for t in sorted(actual.keys() - documented.keys())]
    problems += [f"table {t} is documented in docs/schema.md but not in the database"
                 for t in sorted(documented.keys() - actual.keys())]
    for table in sorted(actual.keys() & documented.keys()):
        if not documented[table]:
            problems.append(f"table {table}: no `column | type | meaning` table under its heading")
            continue
        problems += column_differences(table, documented[table], actual[table])
    return problems


def test_schema_doc_matches_catalog(conn: psycopg.Connection[Any]) -> None:
    documented = parse_schema_doc(SCHEMA_DOC.read_text())
    actual = catalog_tables(conn, "sim")
    assert actual, "the migrated database has no tables in schema sim"
    problems = schema_doc_differences(documented, actual)
    assert not problems, "docs/schema.md is out of date:\n" + "\n".join(problems)


def test_schema_doc_storage_section_matches_the_stored_tables(
    conn: psycopg.Connection[Any],
) -> None:
    documented = parse_schema_doc(SCHEMA_DOC.read_text(), "Storage")
    problems = schema_doc_differences(documented, storage_tables(conn, "sim"))
    assert not problems, "docs/schema.md (Storage) is out of date:\n" + "\n".join(problems)


def test_undocumented_column_and_table_are_reported(conn: psycopg.Connection[Any]) -> None:
    """What a new migration would do: the comparison must name the new table and column."""
    conn.execute("ALTER TABLE agents ADD COLUMN mood text")
    conn.execute("CREATE TABLE weather (simulation_id text, step integer)")
    problems = schema_doc_differences(
        parse_schema_doc(SCHEMA_DOC.read_text()), catalog_tables(conn, "sim")
    )
    assert "agents.mood (text) is in the database but not documented" in problems
    assert any(p.startswith("table weather is in the database") for p in problems)
    assert len(problems) == 2, problems


def test_type_order_and_stale_entries_are_reported() -> None:
    actual = {"t": [("a", "integer"), ("b", "text")]}
    assert schema_doc_differences({"t": [("a", "bigint"), ("b", "text")]}, actual) == [
        "t.a: documented type 'bigint', database has 'integer'"
    ]
    assert schema_doc_differences({"t": [("b", "text"), ("a", "integer")]}, actual) == [
        "t: column order differs: documented ['b', 'a'], database ['a', 'b']"
    ]
    assert schema_doc_differences({"t": [*actual["t"], ("c", "jsonb")], "u": [("x", "uuid")]},
                                  actual) == [
        "table u is documented in docs/schema.md but not in the database",
        "t.c is documented but not in the database",
    ]


def test_parser_reads_only_the_tables_section() -> None:
    text = (
        "## Conventions\n### not_a_table\n| column | type | meaning |\n| --- | --- | --- |\n"
        "| x | text | ignored |\n## Tables\n### t\nintro\n\n| column | type | meaning |\n"
        "| --- | --- | --- |\n| a | timestamp with time zone | when |\n| b | text[] | tags |\n\n"
        "- Primary key: `(a)`.\n## Views\n### v\n| column | type | meaning |\n"
        "| --- | --- | --- |\n| y | text | view column |\n"
    )
    assert parse_schema_doc(text) == {"t": [("a", "timestamp with time zone"), ("b", "text[]")]}
    with pytest.raises(AssertionError, match=re.escape("must be `column | type | meaning`")):
        parse_schema_doc("## Tables\n### t\n| column | type | meaning |\n| --- | --- | --- |\n"
                         "| a | text |\n")
