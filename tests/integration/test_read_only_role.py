"""The read-only analyst role: reads work, including on tables and views created after the
grant; every write and every DDL is refused. Roles are server-wide, so each test makes a
uniquely named one and drops it (DROP OWNED BY first: it also removes default privileges).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sim_schema import admin, cli
from sim_schema.errors import ConfigurationError, NotFound


def revoke_public_temp(conn: psycopg.Connection[Any]) -> None:
    """What the grant asks a database owner to do (this test's database only)."""
    database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    conn.execute(
        sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database))
    )


@pytest.fixture
def role(conn: psycopg.Connection[Any]) -> Iterator[str]:
    name = f"sim_ro_{uuid.uuid4().hex[:12]}"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    revoke_public_temp(conn)
    try:
        yield name
    finally:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_read_only_role_reads_everything_and_writes_nothing(
    conn: psycopg.Connection[Any], dsn: str, role: str
) -> None:
    conn.execute("INSERT INTO simulations (simulation_id) VALUES ('s1')")
    conn.execute("INSERT INTO agents (simulation_id, agent_id, agent_type) VALUES ('s1', 'a', 't')")
    conn.execute("CREATE VIEW view_before AS SELECT simulation_id, agent_id FROM agents")

    assert cli.main(["--dsn", dsn, "grant-read-only", role]) == 0

    # Objects the owner creates after the grant are covered by the default privileges.
    conn.execute("CREATE TABLE table_after (simulation_id text, n int)")
    conn.execute("INSERT INTO table_after VALUES ('s1', 42)")
    conn.execute("CREATE VIEW view_after AS SELECT n FROM table_after")

    with psycopg.connect(dsn, autocommit=True, options="-c search_path=sim") as analyst:
        analyst.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        assert analyst.execute("SELECT current_user").fetchone() == (role,)
        assert analyst.execute("SELECT agent_id FROM agents").fetchall() == [("a",)]
        assert analyst.execute("SELECT count(*) FROM agent_states").fetchone() == (0,)
        assert analyst.execute("SELECT agent_id FROM view_before").fetchall() == [("a",)]
        assert analyst.execute("SELECT n FROM table_after").fetchall() == [(42,)]
        assert analyst.execute("SELECT n FROM view_after").fetchall() == [(42,)]
        assert analyst.execute("SELECT count(*) FROM schema_migrations").fetchone() != (0,)

        refused = [
            "INSERT INTO simulations (simulation_id) VALUES ('evil')",
            "INSERT INTO table_after VALUES ('x', 1)",
            "UPDATE agents SET agent_type = 'x'",
            "UPDATE table_after SET n = 0",
            "DELETE FROM simulations",
            "DELETE FROM table_after",
            "TRUNCATE agents",
            "TRUNCATE table_after",
            "CREATE TABLE sim.evil (x int)",
            "CREATE VIEW sim.evil_view AS SELECT 1",
            "DROP VIEW agent_states",
            "DROP TABLE agent_states_data",
            "INSERT INTO agent_states (simulation_id, step, agent_id) VALUES ('s', 0, 'a')",
            "DELETE FROM agent_states_data",
            "DROP TABLE table_after",
            "DROP VIEW view_before",
            "ALTER TABLE agents ADD COLUMN evil int",
            "CREATE INDEX evil_idx ON agents (agent_type)",
            "COPY agents FROM STDIN",
            "SELECT * FROM agents FOR UPDATE",
            "CREATE TEMPORARY TABLE scratch (x int)",
        ]
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"permission|owner"):
                analyst.execute(statement)
        for statement in ("UPDATE agent_states SET health = 0", "DELETE FROM agent_actions"):
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="view"):
                analyst.execute(statement)
    assert conn.execute("SELECT count(*) FROM simulations").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM table_after").fetchone() == (1,)


def test_grant_statements_come_from_the_sql_file(role: str) -> None:
    statements = [s.as_string() for s in admin.grant_read_only_statements(role, "sim")]
    assert statements[0].endswith(f'GRANT USAGE ON SCHEMA "sim" TO "{role}"')
    assert f'GRANT SELECT ON ALL TABLES IN SCHEMA "sim" TO "{role}"' in statements[1]
    assert statements[2].endswith(
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA "sim" GRANT SELECT ON TABLES TO "{role}"'
    )


def test_grant_needs_an_existing_valid_role(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(NotFound, match="role 'no_such_role_x' does not exist"):
        admin.grant_read_only(conn, "no_such_role_x", "sim")
    for bad in ['x"; DROP SCHEMA sim CASCADE; --', "pg_read_all_data", "public", "", "a" * 64]:
        with pytest.raises(ConfigurationError, match="invalid role name"):
            admin.grant_read_only(conn, bad, "sim")
    assert cli.main(["--dsn", dsn, "grant-read-only", "no_such_role_x"]) == 7
    assert cli.main(["--dsn", dsn, "grant-read-only", "x; DROP SCHEMA sim"]) == 2
    err = capsys.readouterr().err
    assert "no_such_role_x" in err and "invalid role name" in err
    schema = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'sim'")
    assert schema.fetchone() == (1,)


def test_grant_is_refused_while_the_role_could_create_temporary_tables(
    conn: psycopg.Connection[Any], dsn: str, role: str
) -> None:
    database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO PUBLIC").format(
        sql.Identifier(database)))
    with pytest.raises(ConfigurationError, match="could still create temporary tables") as info:
        admin.grant_read_only(conn, role, "sim")
    assert f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC' in str(info.value)
    privileges = conn.execute("SELECT has_table_privilege(%s, 'sim.agents', 'SELECT')", (role,))
    assert privileges.fetchone() == (False,)  # nothing was granted
    assert cli.main(["--dsn", dsn, "grant-read-only", role]) == 2  # a configuration error
    assert cli.main(["--dsn", dsn, "grant-read-only", role, "--allow-temp"]) == 0
    with psycopg.connect(dsn, autocommit=True, options="-c search_path=sim") as analyst:
        analyst.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        analyst.execute("CREATE TEMPORARY TABLE allowed (x int)")  # asked for
        assert analyst.execute("SELECT count(*) FROM agents").fetchone() == (0,)
