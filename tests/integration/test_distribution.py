"""The schema stays distributable by simulation_id, and sql/citus/distribute.sql stays valid.

Citus is not installed here, so these tests check, from the catalog of a migrated database,
the rules Citus enforces (docs/distributed.md cites them): primary keys, unique constraints
and unique indexes include the distribution column; foreign keys between distributed
tables pair it with itself, and any other foreign key points at a reference table; tables
are distributed after the tables they reference; identity columns are bigint; one
co-location group needs one distribution column type and collation. The script itself is
run against stand-ins of the two Citus functions that record the calls and refuse a
foreign key to a table not yet distributed, as Citus does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "sql" / "citus" / "distribute.sql"
# Two co-location groups: the readable tables by simulation_id, the compact bulk tables of
# migration 0006 (and their rollups) by sim_key; each group has its own anchor.
GROUPS = {"simulation_id": "agents", "sim_key": "agent_states_data"}
DIST_TYPES = {"simulation_id": ("text", "C"), "sim_key": ("integer", None)}
REFERENCE_TABLES = {"experiments", "simulations"}
LOCAL_TABLES = {"schema_migrations"}
_CALL = re.compile(
    r"create_(distributed|reference)_table\('(\w+)'(?:,\s*'(\w+)')?"
    r"(?:,\s*colocate_with\s*=>\s*'(\w+)')?\)"
)


def script_calls() -> list[tuple[str, str, str | None, str | None]]:
    """(kind, table, distribution column, colocate_with) in script order."""
    text = "\n".join(line for line in SCRIPT.read_text().splitlines()
                     if not line.lstrip().startswith("--"))
    return [(m[1], m[2], m[3], m[4]) for m in _CALL.finditer(text)]


def base_tables(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'sim'::regnamespace"
        " AND relkind IN ('r', 'p')"
    ).fetchall()
    return {r[0] for r in rows}


def distribution_columns(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Each table that is neither a reference nor a local table: its distribution column
    (simulation_id where it has one, else sim_key)."""
    rows = conn.execute(
        "SELECT c.relname, array_agg(a.attname::text) FROM pg_class c"
        " JOIN pg_attribute a ON a.attrelid = c.oid"
        " WHERE c.relnamespace = 'sim'::regnamespace AND c.relkind IN ('r', 'p')"
        " AND a.attname = ANY (%s) AND NOT a.attisdropped GROUP BY 1",
        (list(GROUPS),),
    ).fetchall()
    return {
        table: ("simulation_id" if "simulation_id" in cols else "sim_key")
        for table, cols in rows
        if table not in REFERENCE_TABLES | LOCAL_TABLES
    }


def key_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """Every key of a distributed table that Citus could not enforce per shard."""
    problems: list[str] = []
    reference = {t for kind, t, _, _ in script_calls() if kind == "reference"}
    dist = distribution_columns(conn)
    rows = conn.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, c.contype,
               ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                     ORDER BY k.i),
               c.confrelid::regclass::text,
               ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                     ORDER BY k.i)
        FROM pg_constraint c
        WHERE c.connamespace = 'sim'::regnamespace AND c.contype IN ('p', 'u', 'f')
        ORDER BY 1, 2
        """
    ).fetchall()
    for table, name, kind, cols, ref_table, ref_cols in rows:
        table = table.removeprefix("sim.")
        column = dist.get(table)
        if column is None:
            continue
        if kind in ("p", "u"):
            if column not in cols:
                problems.append(f"{table}: {name} ({', '.join(cols)}) lacks {column}")
            continue
        ref_table = ref_table.removeprefix("sim.")
        if ref_table not in dist:
            if ref_table not in reference:
                problems.append(
                    f"{table}: foreign key {name} references {ref_table}, which is neither"
                    " distributed nor a reference table in distribute.sql"
                )
            continue
        pairs = dict(zip(cols, ref_cols, strict=True))
        if dist[ref_table] != column or pairs.get(column) != column:
            problems.append(
                f"{table}: foreign key {name} ({', '.join(cols)}) -> {ref_table}"
                f" ({', '.join(ref_cols)}) does not pair {column} with {column}"
            )
    rows = conn.execute(
        """
        SELECT t.relname, i.relname,
               ARRAY(SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = t.oid AND a.attnum = ANY (x.indkey))
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        WHERE t.relnamespace = 'sim'::regnamespace AND x.indisunique
          AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = x.indexrelid)
        ORDER BY 1, 2
        """
    ).fetchall()
    problems += [
        f"{t}: unique index {i} lacks {dist[t]}"
        for t, i, cols in rows
        if t in dist and dist[t] not in cols
    ]
    return problems


def test_every_key_includes_the_distribution_column(conn: psycopg.Connection[Any]) -> None:
    problems = key_problems(conn)
    assert not problems, "not distributable:\n" + "\n".join(problems)


def test_key_check_names_a_key_without_the_distribution_column(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("ALTER TABLE agents ADD CONSTRAINT agents_name_key UNIQUE (name)")
    conn.execute(
        "CREATE UNIQUE INDEX agent_actions_bad ON agent_actions_data (agent_key, step, ordinal)"
    )
    conn.execute(
        "CREATE TABLE bad_links (simulation_id text COLLATE \"C\" NOT NULL,"
        " other_sim text COLLATE \"C\", agent_id text COLLATE \"C\","
        " FOREIGN KEY (other_sim, agent_id) REFERENCES agents (simulation_id, agent_id))"
    )
    assert key_problems(conn) == [
        "agents: agents_name_key (name) lacks simulation_id",
        "bad_links: foreign key bad_links_other_sim_agent_id_fkey (other_sim, agent_id)"
        " -> agents (simulation_id, agent_id) does not pair simulation_id with simulation_id",
        "agent_actions_data: unique index agent_actions_bad lacks sim_key",
    ]


def test_script_names_every_table(conn: psycopg.Connection[Any]) -> None:
    calls = script_calls()
    named = [t for _, t, _, _ in calls]
    assert len(named) == len(set(named)), f"a table is named twice: {named}"
    existing = base_tables(conn)
    assert not set(named) - existing, f"distribute.sql names missing tables {set(named) - existing}"
    expected = distribution_columns(conn)
    distributed = {t: c for kind, t, c, _ in calls if kind == "distributed"}
    assert distributed == expected, (
        f"distribute.sql: {sorted(distributed.items())}, expected {sorted(expected.items())}"
    )
    assert {t for kind, t, _, _ in calls if kind == "reference"} == REFERENCE_TABLES
    unplaced = existing - set(named) - LOCAL_TABLES
    assert not unplaced, f"tables neither distributed, reference nor local: {sorted(unplaced)}"
    assert not LOCAL_TABLES & set(named), "schema_migrations must stay local to the coordinator"
    for kind, table, column, colocate in calls:
        if kind == "distributed":
            assert column is not None
            anchor = GROUPS[column]
            assert colocate == ("none" if table == anchor else anchor), (
                f"{table}: colocate_with {colocate!r}"
            )


def test_script_distributes_referenced_tables_first(conn: psycopg.Connection[Any]) -> None:
    position = {t: i for i, (_, t, _, _) in enumerate(script_calls())}
    anchors = [position[a] for a in GROUPS.values()]
    for column, anchor in GROUPS.items():
        group = [t for _, t, c, _ in script_calls() if c == column]
        assert group[0] == anchor, f"{anchor} must come first in its group, not {group[0]}"
    assert all(position[r] < min(anchors) for r in REFERENCE_TABLES)
    rows = conn.execute(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
        " WHERE contype = 'f' AND connamespace = 'sim'::regnamespace AND conrelid <> confrelid"
    ).fetchall()
    late = [
        f"{t} (line {position[t]}) before {r} (line {position[r]}) it references"
        for t, r in ((a.removeprefix("sim."), b.removeprefix("sim.")) for a, b in rows)
        if position[r] > position[t]
    ]
    assert not late, "distribute.sql order: " + "; ".join(late)


def test_identity_columns_of_distributed_tables_are_bigint(
    conn: psycopg.Connection[Any],
) -> None:
    """Citus supports identity columns on distributed tables only as bigint."""
    rows = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relnamespace = 'sim'::regnamespace AND c.relkind IN ('r', 'p')"
        " AND (a.attidentity <> '' OR EXISTS (SELECT FROM pg_attrdef d WHERE d.adrelid = c.oid"
        "      AND d.adnum = a.attnum AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%'))"
        " AND a.atttypid <> 'bigint'::regtype"
    ).fetchall()
    outside_reference = [r for r in rows if r[0] not in REFERENCE_TABLES]
    assert not outside_reference, f"identity/serial columns that are not bigint: {rows}"
    assert ("simulations", "sim_key", "integer") in rows  # the query does see identities


def test_distribution_columns_share_type_and_collation(conn: psycopg.Connection[Any]) -> None:
    """A co-location group has one distribution column type and collation."""
    dist = distribution_columns(conn)
    rows = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), co.collname,"
        " a.attnotnull FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0"
        " WHERE c.relnamespace = 'sim'::regnamespace AND c.relkind IN ('r', 'p')"
        " AND a.attname = ANY (%s)",
        (list(GROUPS),),
    ).fetchall()
    found = {(column, kind, coll, notnull) for table, column, kind, coll, notnull in rows
             if dist.get(table) == column}
    expected = {(c, *DIST_TYPES[c], True) for c in GROUPS}
    assert found == expected, f"distribution columns differ: {sorted(found)}"


_STAND_INS = """
CREATE SCHEMA citus_stand_in;
CREATE TABLE citus_stand_in.pg_dist_partition (
    seq serial, logicalrelid regclass PRIMARY KEY, kind text, partkey text, colocate_with text);
CREATE FUNCTION citus_stand_in.require_referenced(t regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE missing regclass;
BEGIN
    SELECT confrelid::regclass INTO missing FROM pg_constraint
    WHERE conrelid = t AND contype = 'f' AND confrelid <> t
      AND confrelid NOT IN (SELECT logicalrelid FROM citus_stand_in.pg_dist_partition)
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'cannot create foreign key constraint: % references %, which is not'
            ' a distributed table or a reference table', t, missing;
    END IF;
END $$;
CREATE FUNCTION citus_stand_in.create_reference_table(table_name regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM citus_stand_in.require_referenced(table_name);
    INSERT INTO citus_stand_in.pg_dist_partition (logicalrelid, kind)
    VALUES (table_name, 'reference');
END $$;
CREATE FUNCTION citus_stand_in.create_distributed_table(
    table_name regclass, distribution_column text, colocate_with text DEFAULT 'default')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM citus_stand_in.require_referenced(table_name);
    IF colocate_with NOT IN ('default', 'none') AND colocate_with::regclass NOT IN
       (SELECT logicalrelid FROM citus_stand_in.pg_dist_partition) THEN
        RAISE EXCEPTION 'cannot colocate % with %: not distributed', table_name, colocate_with;
    END IF;
    INSERT INTO citus_stand_in.pg_dist_partition (logicalrelid, kind, partkey, colocate_with)
    VALUES (table_name, 'distributed', distribution_column, colocate_with);
END $$;
"""


@pytest.fixture
def stand_in_conn(dsn: str) -> Any:
    """search_path = sim, then the stand-ins of the Citus catalog table and functions."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(_STAND_INS)
    with psycopg.connect(
        dsn, autocommit=True, options="-c search_path=sim,citus_stand_in"
    ) as c:
        yield c


def test_script_runs_in_order_and_is_idempotent(stand_in_conn: psycopg.Connection[Any]) -> None:
    stand_in_conn.execute(SCRIPT.read_text())
    recorded = stand_in_conn.execute(
        "SELECT logicalrelid::text, kind, partkey, colocate_with FROM pg_dist_partition"
        " ORDER BY seq"
    ).fetchall()
    assert [(t, k, p, c) for t, k, p, c in recorded] == [
        (t, kind, col, colocate) for kind, t, col, colocate in script_calls()
    ]
    stand_in_conn.execute(SCRIPT.read_text())  # every table is known now: nothing to do
    again = stand_in_conn.execute("SELECT count(*) FROM pg_dist_partition").fetchone()
    assert again == (len(recorded),)


def test_script_refuses_a_schema_that_is_not_migrated(dsn: str) -> None:
    with (
        psycopg.connect(dsn, autocommit=True) as c,  # search_path without sim
        pytest.raises(psycopg.errors.RaiseException, match="no migrated sim_schema"),
    ):
        c.execute(SCRIPT.read_text())
