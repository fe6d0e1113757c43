"""The table catalog (sim_schema.catalog, declared in sim_schema.models) against a migrated
database and against docs/schema.md: same tables, same columns in the same order, same
types, same nullability, same keys, foreign keys and lower bounds. Adding a column to a
migration without its catalog line or its doc row fails here, naming the column.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from test_schema_doc import SCHEMA_DOC, parse_schema_doc

from sim_schema import catalog, models
from sim_schema.catalog import TABLES

LOCAL = {"schema_migrations"}  # the runner's tracking table is not simulation data
# Rows derived at ingest by triggers (migration 0006), read through the analyst views.
DERIVED = {"population_rollup", "action_rollup"}
ANALYST_VIEWS = {
    "simulation_summary", "population_by_step", "agent_lifespans", "action_statistics",
    "decision_training_rows",
}
Columns = dict[str, list[tuple[str, str, bool]]]


def relation_columns(conn: psycopg.Connection[Any], kinds: list[str]) -> Columns:
    rows = conn.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = 'sim'::regnamespace AND c.relkind = ANY(%s)
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
        """,
        (kinds,),
    ).fetchall()
    tables: Columns = {}
    for table, column, type_, nullable in rows:
        tables.setdefault(table, []).append((column, type_, nullable))
    return tables


def live_columns(conn: psycopg.Connection[Any]) -> Columns:
    """Each catalog table as a reader sees it: a base table, or the view over a stored
    table, whose columns' nullability is the stored column's (a view has none)."""
    tables = relation_columns(conn, ["r", "p"])
    views = relation_columns(conn, ["v"])
    for name in LOCAL | DERIVED:
        tables.pop(name, None)
    for t in TABLES.values():
        if t.stored is None or t.name not in views:
            continue
        stored = {c[0]: c for c in tables.pop(t.stored.table)}
        tables[t.name] = [
            (name, type_, stored[t.stored.column(name)][2]) for name, type_, _ in views[t.name]
        ]
    return tables


def constraints(conn: psycopg.Connection[Any], kind: str) -> dict[str, list[str]]:
    rows = conn.execute(
        "SELECT c.relname, pg_get_constraintdef(k.oid) FROM pg_constraint k"
        " JOIN pg_class c ON c.oid = k.conrelid"
        " WHERE c.relnamespace = 'sim'::regnamespace AND k.contype = %s ORDER BY 1, 2",
        (kind,),
    ).fetchall()
    found: dict[str, list[str]] = {}
    for table, definition in rows:
        found.setdefault(table, []).append(definition)
    return found


def catalog_columns() -> dict[str, list[tuple[str, str, bool]]]:
    return {t.name: [(c.name, c.type, c.nullable) for c in t.columns] for t in TABLES.values()}


def differences(
    expected: dict[str, list[tuple[str, str, bool]]], actual: dict[str, list[tuple[str, str, bool]]]
) -> list[str]:
    problems = [f"table {t} is in the database but not in the catalog"
                for t in sorted(actual.keys() - expected.keys())]
    problems += [f"table {t} is in the catalog but not in the database"
                 for t in sorted(expected.keys() - actual.keys())]
    for table in sorted(actual.keys() & expected.keys()):
        want = {c[0]: c for c in expected[table]}
        have = {c[0]: c for c in actual[table]}
        for name in have.keys() - want.keys():
            problems.append(f"{table}.{name} is in the database but not in the catalog")
        for name in want.keys() - have.keys():
            problems.append(f"{table}.{name} is in the catalog but not in the database")
        for name in have.keys() & want.keys():
            if have[name] != want[name]:
                problems.append(f"{table}.{name}: catalog {want[name]}, database {have[name]}")
        if not problems and [c[0] for c in expected[table]] != [c[0] for c in actual[table]]:
            problems.append(f"{table}: column order differs")
    return problems


def test_catalog_matches_the_migrated_database(conn: psycopg.Connection[Any]) -> None:
    problems = differences(catalog_columns(), live_columns(conn))
    assert not problems, "the catalog is out of date:\n" + "\n".join(problems)


def test_catalog_matches_docs_schema_md() -> None:
    documented = parse_schema_doc(SCHEMA_DOC.read_text())
    documented.pop("schema_migrations", None)
    declared = {t.name: [(c.name, c.type) for c in t.columns] for t in TABLES.values()}
    assert declared == documented


def test_keys_parents_and_bounds_match_the_database(conn: psycopg.Connection[Any]) -> None:
    primary = constraints(conn, "p")
    foreign = constraints(conn, "f")
    checks = constraints(conn, "c")
    for t in TABLES.values():
        stored = t.stored.table if t.stored else t.name
        column = t.stored.column if t.stored else str
        key = ", ".join(column(k) for k in t.key)
        assert primary[stored] == [f"PRIMARY KEY ({key})"], t.name
        declared = sorted(
            f"FOREIGN KEY ({', '.join(p.columns)}) REFERENCES {p.table}" for p in t.parents
        )
        live = sorted(re.sub(r"\(([^)]*)\) ON DELETE CASCADE$", "", d).rstrip()
                      for d in foreign.get(stored, []))
        # A stored table has no foreign keys: its writers check its parents (writer.py).
        assert [re.sub(r"\s+", " ", d) for d in live] == ([] if t.stored else declared), t.name
        live_bounds = {}
        for definition in checks.get(stored, []):
            found = _BOUND.fullmatch(definition)
            if found:
                live_bounds[found["column"]] = int(found["n"])
        declared_bounds = {column(c.name): c.minimum for c in t.columns if c.minimum is not None}
        assert live_bounds == declared_bounds, t.name


def test_stored_tables_hold_the_view_columns_with_integer_keys(
    conn: psycopg.Connection[Any],
) -> None:
    """Every column a view shows is stored (ids as integer keys); nothing else is."""
    tables = relation_columns(conn, ["r"])
    for t in TABLES.values():
        if t.stored is None:
            continue
        want = {
            (t.stored.column(c.name), "integer" if t.stored.column(c.name) != c.name else c.type)
            for c in t.columns
        }
        assert {(name, type_) for name, type_, _ in tables[t.stored.table]} == want, t.name


def test_only_known_relations_are_in_the_schema(conn: psycopg.Connection[Any]) -> None:
    relations = {r[0] for r in conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'sim'::regnamespace"
        " AND relkind IN ('r', 'p', 'v')"
    )}
    stored = {t.stored.table for t in TABLES.values() if t.stored}
    assert relations == set(TABLES) | stored | LOCAL | DERIVED | ANALYST_VIEWS


_BOUND = re.compile(
    r"CHECK \(\((?P<column>\w+) >= \(?'?(?P<n>-?\d+)'?\)?(::(double precision|integer))?\)\)"
)


def test_write_models_are_the_written_columns() -> None:
    """A `*Create` record holds exactly the columns an insert writes, in table order."""
    for create, table in [
        (models.AgentCreate, "agents"),
        (models.EventCreate, "events"),
        (models.AgentDecisionCreate, "agent_decisions"),
    ]:
        written = [c.name for c in TABLES[table].columns if c.written]
        assert list(create.model_fields) == written, table


def test_copy_specs_follow_the_catalog() -> None:
    for name, spec in catalog.SPECS.items():
        expected = [c.name for c in TABLES[name].columns if c.written and not c.identity]
        assert list(spec.names) == expected
        assert spec.names[0] == "simulation_id"
    assert {t: p for t, p in catalog.WRITTEN_AFTER.items() if p} == {
        "agent_states": ("agents",), "agent_actions": ("agents",),
        "learning_experiences": ("agents",), "health_incidents": ("agents",),
        "agent_decisions": ("agents", "events"),
    }  # fmt: skip


def test_a_column_added_by_a_migration_is_reported(conn: psycopg.Connection[Any]) -> None:
    """What forgetting the catalog line does: the comparison names the column."""
    conn.execute("ALTER TABLE simulation_steps ADD COLUMN mood text")
    problems = differences(catalog_columns(), live_columns(conn))
    assert problems == ["simulation_steps.mood is in the database but not in the catalog"]


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(Exception, match="no table 'agent_state' .*agent_states"):
        catalog.table("agent_state")
    with pytest.raises(Exception, match="not a table the logger writes .*agent_states"):
        catalog.spec_of("simulations")
