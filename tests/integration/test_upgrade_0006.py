"""Migration 0006 upgrades a database that holds data at version 5 in place: every row of
the five bulk tables and of interactions reads back through the views with the same values,
the identity ids become ordinals in id order, agent keys follow registration order, the
rollups equal the aggregates they replace, and the module writes on after the upgrade."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import sim_schema
from sim_schema.ingest.logger import SimulationLogger
from sim_schema.settings import Settings
from sim_schema.store import Store

# Rows made at version 5 by raw SQL, NULLs, JSON and repeated (step, agent) ids included.
_V5_DATA = """
INSERT INTO simulations (simulation_id, parameters) VALUES ('s1', '{}'), ('s2', '{"n": 2}');
INSERT INTO agents (simulation_id, agent_id, agent_type, birth_step, created_at)
SELECT s, 'a' || i, CASE WHEN i % 3 = 0 THEN 'predator' ELSE 'prey' END, 0,
       '2026-01-01'::timestamptz + (10 - i) * interval '1 minute'
FROM unnest(ARRAY['s1', 's2']) s, generate_series(0, 9) i;
INSERT INTO agent_states (simulation_id, step, agent_id, position_x, resource_level, health,
                          is_defending, age, extras)
SELECT a.simulation_id, st, a.agent_id, st * 0.5, CASE WHEN st % 4 = 0 THEN NULL ELSE st END,
       1.0 / (st + 1), st % 2 = 0, st, CASE WHEN st % 5 = 0 THEN jsonb_build_object('k', st) END
FROM agents a, generate_series(0, 7) st;
INSERT INTO agent_actions (simulation_id, step, agent_id, action_type, resources_before,
                           resources_after, reward, details, state_before_step)
SELECT a.simulation_id, st, a.agent_id, k, st, st + length(k), CASE WHEN k = 'eat' THEN NULL
       ELSE 0.25 * st END, jsonb_build_object('k', k), st
FROM agents a, generate_series(0, 7) st, unnest(ARRAY['move', 'eat', 'move']) k
ORDER BY random();
INSERT INTO resource_states (simulation_id, step, resource_id, amount, position_x)
SELECT s, st, r, r * st, r FROM unnest(ARRAY['s1', 's2']) s, generate_series(0, 7) st,
       generate_series(0, 2) r;
INSERT INTO learning_experiences (simulation_id, step, agent_id, module_type, action_taken,
                                  reward)
SELECT a.simulation_id, st, a.agent_id, m, st, 0.1 * st
FROM agents a, generate_series(0, 3) st, unnest(ARRAY['dqn', 'ppo']) m ORDER BY random();
INSERT INTO health_incidents (simulation_id, step, agent_id, health_before, health_after, cause)
SELECT a.simulation_id, st, a.agent_id, 1, 0.5, c
FROM agents a, generate_series(0, 3) st, unnest(ARRAY['hit', 'starve']) c ORDER BY random();
INSERT INTO interactions (simulation_id, step, source_type, source_id, target_type, target_id,
                          interaction_type)
SELECT s, st, 'agent', 'a' || i, 'agent', 'a' || (i + 1), 'trade'
FROM unnest(ARRAY['s1', 's2']) s, generate_series(0, 3) st, generate_series(0, 4) i
ORDER BY random();
"""

# Per table: the columns compared, and how version 5's identity id becomes the ordinal.
_COMPARED = {
    "agent_states": ("simulation_id, step, agent_id, position_x, position_y, position_z,"
                     " resource_level, health, is_defending, total_reward, age, profile,"
                     " memory, relationships, extras", None),
    "agent_actions": ("simulation_id, step, agent_id, action_type, action_target_id,"
                      " state_before_step, state_after_step, resources_before,"
                      " resources_after, reward, details", ("action_id", "agent_id")),
    "resource_states": ("simulation_id, step, resource_id, amount, position_x, position_y",
                        None),
    "learning_experiences": ("simulation_id, step, agent_id, module_type, module_id,"
                             " action_taken, action_taken_mapped, reward, details",
                             ("experience_id", "agent_id")),
    "health_incidents": ("simulation_id, step, agent_id, health_before, health_after, cause,"
                         " details", ("incident_id", "agent_id")),
    "interactions": ("simulation_id, step, source_type, source_id, target_type, target_id,"
                     " interaction_type, action_type, details", ("interaction_id", None)),
}


def snapshot(conn: psycopg.Connection[Any], table: str, upgraded: bool) -> list[Any]:
    columns, numbered = _COMPARED[table]
    if numbered is None:
        query = f"SELECT {columns} FROM {table}"
    elif upgraded:
        query = f"SELECT {columns}, ordinal FROM {table}"
    else:
        by = "simulation_id, step" + (f", {numbered[1]}" if numbered[1] else "")
        query = (f"SELECT {columns}, row_number() OVER (PARTITION BY {by}"
                 f" ORDER BY {numbered[0]}) - 1 FROM {table}")
    return sorted(conn.execute(query).fetchall(), key=repr)


def analyst_views(conn: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    return {
        "population_by_step": conn.execute(
            "SELECT * FROM population_by_step ORDER BY 1, 2, 3").fetchall(),
        "action_statistics": conn.execute(
            "SELECT * FROM action_statistics ORDER BY 1, 2").fetchall(),
    }


async def test_upgrade_keeps_every_row_and_writes_on(blank_dsn: str) -> None:
    with psycopg.connect(blank_dsn) as conn:
        sim_schema.migrate(conn, to=5)
        conn.execute("SET search_path = sim")
        conn.execute(_V5_DATA)
        conn.commit()
        before = {t: snapshot(conn, t, upgraded=False) for t in _COMPARED}
        views_before = analyst_views(conn)
        conn.rollback()
        assert all(len(rows) >= 40 for rows in before.values())
        report = sim_schema.migrate(conn, to=6)
        assert [r.version for r in report.applied] == [6]
        conn.execute("SET search_path = sim")
        for table, rows in before.items():
            assert snapshot(conn, table, upgraded=True) == rows, table
        views_after = analyst_views(conn)
        assert views_after.keys() == views_before.keys()
        for name, rows in views_before.items():
            after = views_after[name]
            assert [r[:3] for r in after] == [r[:3] for r in rows], name
            for got, want in zip(after, rows, strict=True):
                assert got == pytest.approx(want, nan_ok=True), name
        keys = conn.execute(
            "SELECT agent_id, agent_key FROM agents WHERE simulation_id = 's1'"
            " ORDER BY agent_key").fetchall()
        assert keys == [(f"a{i}", 9 - i) for i in range(9, -1, -1)]  # registration order
        assert conn.execute("SELECT simulation_id, next_agent_key, stored_through_step"
                            " FROM simulations ORDER BY 1").fetchall() == [
            ("s1", 10, None), ("s2", 10, None)
        ]
        conn.rollback()
        sim_schema.migrate(conn)  # the later migrations too, for the code below
    settings = Settings(dsn=blank_dsn)
    async with Store(settings) as store, SimulationLogger(store, "s1") as logger:
        await logger.log_agent("new", "prey", birth_step=8)
        await logger.log_agent_state(8, "new", health=0.5)
        await logger.log_action(8, "a3", "move", reward=1.0)
    with psycopg.connect(blank_dsn, options="-c search_path=sim") as conn:
        assert conn.execute("SELECT agent_key FROM agents WHERE agent_id = 'new'"
                            " AND simulation_id = 's1'").fetchone() == (10,)
        assert conn.execute("SELECT step, agent_id, health FROM agent_states WHERE step = 8"
                            ).fetchall() == [(8, "new", 0.5)]
        assert conn.execute("SELECT agents FROM population_by_step WHERE simulation_id = 's1'"
                            " AND step = 8").fetchall() == [(1,)]
        assert conn.execute("SELECT actions FROM action_statistics WHERE simulation_id = 's1'"
                            " AND action_type = 'move'").fetchone() == (2 * 8 * 10 + 1,)
