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


def live_columns(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[str, str, bool]]]:
    rows = conn.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = 'sim'::regnamespace AND c.relkind IN ('r', 'p')
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
        """
    ).fetchall()
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, type_, nullable in rows:
        if table not in LOCAL:
            tables.setdefault(table, []).append((column, type_, nullable))
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
        assert primary[t.name] == [f"PRIMARY KEY ({', '.join(t.key)})"], t.name
        declared = sorted(
            f"FOREIGN KEY ({', '.join(p.columns)}) REFERENCES {p.table}" for p in t.parents
        )
        live = sorted(re.sub(r"\(([^)]*)\) ON DELETE CASCADE$", "", d).rstrip()
                      for d in foreign.get(t.name, []))
        assert [re.sub(r"\s+", " ", d) for d in live] == declared, t.name
        live_bounds = {}
        for definition in checks.get(t.name, []):
            found = _BOUND.fullmatch(definition)
            if found:
                live_bounds[found["column"]] = int(found["n"])
        declared_bounds = {c.name: c.minimum for c in t.columns if c.minimum is not None}
        assert live_bounds == declared_bounds, t.name


_BOUND = re.compile(r"CHECK \(\((?P<column>\w+) >= \(?(?P<n>-?\d+)\)?(::double precision)?\)\)")


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
    assert catalog.AGENT_DEPENDENT == {
        "agent_states", "agent_actions", "learning_experiences", "health_incidents",
    }  # fmt: skip


def test_a_column_added_by_a_migration_is_reported(conn: psycopg.Connection[Any]) -> None:
    """What forgetting the catalog line does: the comparison names the column."""
    conn.execute("ALTER TABLE agent_states ADD COLUMN mood text")
    problems = differences(catalog_columns(), live_columns(conn))
    assert problems == ["agent_states.mood is in the database but not in the catalog"]


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(Exception, match="no table 'agent_state' .*agent_states"):
        catalog.table("agent_state")
    with pytest.raises(Exception, match="not a table the logger writes .*agent_states"):
        catalog.spec_of("simulations")
