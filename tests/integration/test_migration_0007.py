"""Migration 0007 (the event queue's columns) applied to a database that holds events."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from helpers import SCHEMA

from sim_schema import repositories as repo
from sim_schema.migrations.migration import load_migrations
from sim_schema.migrations.runner import MigrationRunner

WAITING, DONE = uuid.uuid4(), uuid.uuid4()


def _at_version_6_with_events(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        MigrationRunner(load_migrations(None), schema=SCHEMA).migrate(conn, 6)
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={SCHEMA}") as conn:
        conn.execute("INSERT INTO simulations (simulation_id) VALUES ('old')")
        conn.execute(
            "INSERT INTO agents (simulation_id, agent_id, agent_type) VALUES ('old', 'a1', 't')"
        )
        conn.execute(
            "INSERT INTO events (simulation_id, event_id, step, event_type, priority, payload)"
            " VALUES ('old', %s, 3, 'ask', 2, '{\"q\": 1}'), ('old', %s, 1, 'ask', 0, '{}')",
            (WAITING, DONE),
        )
        conn.execute(
            "UPDATE events SET processed = true, processed_at = now(),"
            " processing_result = '\"fine\"' WHERE event_id = %s",
            (DONE,),
        )
        conn.execute(
            "INSERT INTO agent_decisions (simulation_id, event_id, step, agent_id, output)"
            " VALUES ('old', %s, 1, 'a1', 'yes')",
            (DONE,),
        )


async def test_0007_keeps_events_and_makes_the_waiting_ones_claimable(blank_dsn: str) -> None:
    _at_version_6_with_events(blank_dsn)
    with psycopg.connect(blank_dsn) as conn:
        applied = MigrationRunner(load_migrations(None), schema=SCHEMA).migrate(conn)
    assert [r.version for r in applied.applied] == [7]

    async with await psycopg.AsyncConnection.connect(
        blank_dsn, autocommit=True, options=f"-c search_path={SCHEMA}"
    ) as aconn:
        done = await repo.get_event(aconn, "old", DONE)
        assert (done.processed, done.processing_result, done.step) == (True, "fine", 1)
        waiting = await repo.get_event(aconn, "old", WAITING)
        assert (waiting.processed, waiting.priority, waiting.payload) == (False, 2, {"q": 1})
        for e in (done, waiting):
            assert (e.claimed_by, e.claimed_until, e.attempts, e.last_error,
                    e.dead_lettered_at) == (None, None, 0, None, None)
        [claimed] = await repo.claim_events(aconn, "old", worker="w", limit=5)
        assert (claimed.event_id, claimed.attempts, claimed.claimed_by) == (WAITING, 1, "w")
        [decision] = await repo.list_decisions(aconn, "old")
        assert (decision.event_id, decision.output) == (DONE, "yes")
        cur = await aconn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'events'"
            " ORDER BY 1",
            (SCHEMA,),
        )
        assert [r[0] for r in await cur.fetchall()] == [
            "events_claim_idx", "events_pkey", "events_source_idx", "events_target_idx",
            "events_type_idx",
        ]


def test_0007_refuses_an_event_both_processed_and_dead(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO simulations (simulation_id) VALUES ('s')")
    conn.execute("INSERT INTO events (simulation_id, step, event_type) VALUES ('s', 0, 'x')")
    try:
        conn.execute(
            "UPDATE events SET processed = true, processed_at = now(), dead_lettered_at = now()"
        )
    except psycopg.errors.CheckViolation as exc:
        assert exc.diag.constraint_name == "events_processed_or_dead_check"
    else:
        raise AssertionError("the check let a processed dead letter in")
