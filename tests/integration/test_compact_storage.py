"""Migration 0006's compact storage keeps the integrity the foreign keys gave: an unknown
agent is refused naming it, a deleted simulation leaves no row, a delete waits for a batch
being written; raw SQL inserts through the views map, refuse and number; the rollups equal
the aggregates recomputed from the rows after every kind of write; a replayed run is
detected row by row."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from helpers import add_simulation

from sim_schema import discard_steps_from
from sim_schema import repositories as repo
from sim_schema.catalog import SPECS, Column, spec_of
from sim_schema.errors import IngestError, NotFound, ReplayConflict, ValidationError
from sim_schema.ids import replay_id
from sim_schema.ingest.logger import SimulationLogger
from sim_schema.ingest.resume import resume_step
from sim_schema.ingest.writer import BulkWriter
from sim_schema.models import AgentState
from sim_schema.store import Store

DATA_TABLES = (
    "agent_states_data",
    "agent_actions_data",
    "resource_states_data",
    "learning_experiences_data",
    "health_incidents_data",
    "population_rollup",
    "action_rollup",
)


def row(table: str, **values: Any) -> tuple[Any, ...]:
    """A writer row of `table`: the given values, every other column NULL."""
    return tuple(values.get(n) for n in spec_of(table).names)


async def rows(aconn: psycopg.AsyncConnection[Any], query: str, *params: Any) -> list[Any]:
    cur = await aconn.execute(query, params)
    return await cur.fetchall()


async def sim_key(aconn: psycopg.AsyncConnection[Any], simulation_id: str) -> int:
    found = await rows(aconn, "SELECT sim_key FROM simulations WHERE simulation_id = %s",
                       simulation_id)
    return int(found[0][0])


async def stored_counts(aconn: psycopg.AsyncConnection[Any], key: int) -> dict[str, int]:
    counts = {}
    for t in DATA_TABLES:
        counts[t] = (await rows(aconn, f"SELECT count(*) FROM {t} WHERE sim_key = %s", key))[0][0]
    return counts


async def log_run(store: Store, simulation_id: str, steps: int, agents: int = 3,
                  **options: Any) -> SimulationLogger:
    """Every per-step table of agents, values depending on (step, agent) only."""
    logger = SimulationLogger(store, simulation_id, flush_interval=3600, **options)
    async with logger:
        for i in range(agents):
            await logger.log_agent(f"a{i}", "prey" if i % 2 else "predator", birth_step=0)
        for step in range(steps):
            for i in range(agents):
                a = f"a{i}"
                await logger.log_agent_state(step, a, health=step + i / 10,
                                             resource_level=float(i), extras={"k": [step, i]})
                await logger.log_action(step, a, "move", reward=0.5 * i,
                                        resources_before=1.0, resources_after=1.0 + i)
                await logger.log_action(step, a, "eat", reward=None,
                                        resources_before=2.0, resources_after=1.5)
                await logger.log_learning_experience(step, a, "dqn", module_id="m1",
                                                     action_taken=1, reward=0.1 * i)
                await logger.log_health_incident(step, a, "hit", health_before=1.0,
                                                 health_after=0.5)
            await logger.log_resource_state(step, step % 2, amount=float(step))
            await logger.log_event(step, "tick", source_id="env")
    return logger


# --- refused rows --------------------------------------------------------------------------


async def test_bulk_writer_refuses_an_unknown_agent_naming_it(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    await add_simulation(aconn, "s", agents=2)
    good = row("agent_states", simulation_id="s", step=0, agent_id="a0", is_defending=False)
    ghost = row("agent_states", simulation_id="s", step=0, agent_id="ghost",
               is_defending=False)
    with pytest.raises(ValidationError, match=r"row 1 .*agent_id.*'ghost'") as info:
        await BulkWriter().write(aconn, "agent_states", "s", uuid.uuid4(), [good, ghost])
    assert info.value.row == 1
    assert await rows(aconn, "SELECT count(*) FROM agent_states_data") == [(0,)]
    assert await rows(aconn, "SELECT count(*) FROM ingest_batches") == [(0,)]


async def test_bulk_writer_refuses_a_row_without_its_ordinal(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    await add_simulation(aconn, "s", agents=1)
    action = row("agent_actions", simulation_id="s", step=0, agent_id="a0", action_type="move")
    with pytest.raises(ValidationError, match="row 0 field 'ordinal'"):
        await BulkWriter().write(aconn, "agent_actions", "s", uuid.uuid4(), [action])
    assert await rows(aconn, "SELECT count(*) FROM agent_actions_data") == [(0,)]


async def test_agent_keys_are_consecutive_per_simulation(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s1", agents=3)
    await add_simulation(aconn, "s2", agents=2)
    async with SimulationLogger(store, "s1") as logger:
        await logger.log_agent("late", "prey")
        await logger.log_agent("a0", "prey")  # registered again: a no-op
    keys = await rows(aconn, "SELECT simulation_id, agent_id, agent_key FROM agents"
                             " ORDER BY simulation_id, agent_key")
    assert [(s, k) for s, _, k in keys] == [("s1", 0), ("s1", 1), ("s1", 2), ("s1", 3),
                                            ("s2", 0), ("s2", 1)]
    assert keys[3][1] == "late"


# --- deletes -------------------------------------------------------------------------------


async def test_deleting_a_simulation_removes_all_of_its_rows(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "gone")
    await add_simulation(aconn, "kept")
    await log_run(store, "gone", steps=4)
    await log_run(store, "kept", steps=3)
    gone, kept = await sim_key(aconn, "gone"), await sim_key(aconn, "kept")
    kept_before = await stored_counts(aconn, kept)
    assert all(kept_before.values()) and all((await stored_counts(aconn, gone)).values())
    kept_states = await rows(aconn, "SELECT * FROM agent_states WHERE simulation_id = 'kept'"
                                    " ORDER BY step, agent_id")
    await repo.delete_simulation(aconn, "gone")
    assert set((await stored_counts(aconn, gone)).values()) == {0}
    assert await stored_counts(aconn, kept) == kept_before
    assert await rows(aconn, "SELECT * FROM agent_states WHERE simulation_id = 'kept'"
                             " ORDER BY step, agent_id") == kept_states


async def test_a_delete_waits_for_a_batch_being_written(
    dsn: str, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s", agents=1)
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options="-c search_path=sim"
    ) as writer_conn:
        async with writer_conn.transaction():  # the batch's transaction, still open
            await BulkWriter().write(writer_conn, "agent_states", "s", uuid.uuid4(),
                                     [row("agent_states", simulation_id="s", step=0, agent_id="a0", is_defending=False)])
            delete = asyncio.create_task(repo.delete_simulation(aconn, "s"))
            for _ in range(500):
                waiting = await rows(
                    writer_conn,
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                    " AND wait_event_type = 'Lock'",
                    aconn.info.backend_pid,
                )
                if waiting[0][0]:
                    break
                await asyncio.sleep(0.01)
            assert waiting[0][0] == 1, "the delete did not wait for the batch"
            assert not delete.done()
        await delete  # the batch committed, then the delete removed it
    assert await rows(aconn, "SELECT count(*) FROM agent_states_data") == [(0,)]


async def test_deleting_an_agent_removes_its_rows_and_its_rollups(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s")
    await log_run(store, "s", steps=3)
    await aconn.execute("DELETE FROM agents WHERE simulation_id = 's' AND agent_id = 'a1'")
    for view in ("agent_states", "agent_actions", "learning_experiences", "health_incidents"):
        assert await rows(aconn, f"SELECT count(*) FROM {view} WHERE agent_id = 'a1'") == [(0,)]
    orphans = await rows(
        aconn,
        "SELECT count(*) FROM agent_states_data d WHERE NOT EXISTS"
        " (SELECT FROM agents a JOIN simulations s USING (simulation_id)"
        "  WHERE s.sim_key = d.sim_key AND a.agent_key = d.agent_key)",
    )
    assert orphans == [(0,)]
    await assert_rollups_match(aconn, "s")


# --- raw SQL through the views -------------------------------------------------------------


async def test_raw_sql_inserts_through_the_views(aconn: psycopg.AsyncConnection[Any]) -> None:
    await add_simulation(aconn, "s", agents=2)
    await aconn.execute(
        "INSERT INTO agent_states (simulation_id, step, agent_id, health, extras)"
        " VALUES ('s', 0, 'a1', 0.75, '{\"x\": 1}')"
    )
    assert await rows(aconn, "SELECT agent_id, health, extras FROM agent_states") == [
        ("a1", 0.75, {"x": 1})
    ]
    numbered = []
    for kind in ("move", "eat", "move"):
        cur = await aconn.execute(
            "INSERT INTO agent_actions (simulation_id, step, agent_id, action_type)"
            " VALUES ('s', 0, 'a1', %s) RETURNING ordinal",
            (kind,),
        )
        numbered.append((await cur.fetchone() or [None])[0])
    assert numbered == [0, 1, 2]
    assert await rows(aconn, "SELECT ordinal, action_type FROM agent_actions ORDER BY 1") == [
        (0, "move"), (1, "eat"), (2, "move")
    ]
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="ghost"):
        await aconn.execute("INSERT INTO agent_states (simulation_id, step, agent_id)"
                            " VALUES ('s', 1, 'ghost')")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="nope"):
        await aconn.execute("INSERT INTO resource_states (simulation_id, step, resource_id,"
                            " amount) VALUES ('nope', 1, 7, 1)")
    for kind in ("trade", "fight"):
        await aconn.execute(
            "INSERT INTO interactions (simulation_id, step, source_type, source_id,"
            " target_type, target_id, interaction_type) VALUES ('s', 3, 'agent', 'a0',"
            " 'agent', 'a1', %s)",
            (kind,),
        )
    assert await rows(aconn, "SELECT ordinal, interaction_type FROM interactions"
                             " ORDER BY ordinal") == [(0, "trade"), (1, "fight")]
    await assert_rollups_match(aconn, "s")


# --- rollups -------------------------------------------------------------------------------


async def assert_rollups_match(aconn: psycopg.AsyncConnection[Any], simulation_id: str) -> None:
    """population_by_step and action_statistics equal the aggregates of the rows."""
    population = await rows(
        aconn,
        "SELECT step, agent_type, agents, average_health, total_resource_level"
        " FROM population_by_step WHERE simulation_id = %s ORDER BY 1, 2",
        simulation_id,
    )
    recomputed = await rows(
        aconn,
        "SELECT t.step, a.agent_type, count(*), avg(t.health), sum(t.resource_level)"
        " FROM agent_states t JOIN agents a USING (simulation_id, agent_id)"
        " WHERE t.simulation_id = %s GROUP BY 1, 2 ORDER BY 1, 2",
        simulation_id,
    )
    assert [r[:3] for r in population] == [r[:3] for r in recomputed]
    for got, want in zip(population, recomputed, strict=True):
        assert got[3:] == pytest.approx(want[3:], nan_ok=True), got[:2]
    actions = await rows(
        aconn,
        "SELECT action_type, actions, agents, mean_reward, total_reward, mean_resource_change"
        " FROM action_statistics WHERE simulation_id = %s ORDER BY 1",
        simulation_id,
    )
    recomputed = await rows(
        aconn,
        "SELECT action_type, count(*), count(DISTINCT agent_id), avg(reward), sum(reward),"
        " avg(resources_after - resources_before) FROM agent_actions"
        " WHERE simulation_id = %s GROUP BY 1 ORDER BY 1",
        simulation_id,
    )
    assert [r[:3] for r in actions] == [r[:3] for r in recomputed]
    for got, want in zip(actions, recomputed, strict=True):
        assert got[3:] == pytest.approx(want[3:], nan_ok=True), got[0]


async def test_rollups_follow_every_kind_of_write(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s")
    await log_run(store, "s", steps=4)
    population = await rows(aconn, "SELECT step, agent_type, agents FROM population_by_step"
                                   " WHERE simulation_id = 's' AND step = 0 ORDER BY 2")
    assert population == [(0, "predator", 2), (0, "prey", 1)]  # a0, a2 / a1
    await assert_rollups_match(aconn, "s")
    # a repository upsert replaces a state: the rollup moves by the difference
    await repo.save_agent_state(aconn, AgentState(simulation_id="s", step=2, agent_id="a0",
                                                  health=9.0, resource_level=5.0))
    await assert_rollups_match(aconn, "s")
    # raw SQL on the stored table: updates are followed, deletes need rebuild_rollups
    await aconn.execute("UPDATE agent_actions_data SET reward = 3 WHERE step = 1")
    await assert_rollups_match(aconn, "s")
    await aconn.execute("DELETE FROM agent_states_data WHERE step = 3")
    await aconn.execute("SELECT rebuild_rollups('s')")
    await assert_rollups_match(aconn, "s")
    # an agent changing its type moves its counts
    await aconn.execute("UPDATE agents SET agent_type = 'prey' WHERE agent_id = 'a0'")
    await assert_rollups_match(aconn, "s")
    assert await rows(aconn, "SELECT agent_type, agents FROM population_by_step"
                             " WHERE simulation_id = 's' AND step = 0 ORDER BY 1") == [
        ("predator", 1), ("prey", 2)
    ]


# --- replay --------------------------------------------------------------------------------


async def test_a_replayed_run_is_skipped_row_by_row_and_new_rows_are_written(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s")
    await log_run(store, "s", steps=3)
    states = await rows(aconn, "SELECT step, agent_id, health, resource_level, extras"
                               " FROM agent_states ORDER BY step, agent_id")
    assert states == [(step, f"a{i}", step + i / 10, float(i), {"k": [step, i]})
                      for step in range(3) for i in range(3)]
    before = {v: await rows(aconn, f"SELECT * FROM {v} ORDER BY 1, 2, 3")
              for v in ("agent_states", "agent_actions", "events")}
    assert await resume_step(store, "s") == 3
    again = await log_run(store, "s", steps=5)  # steps 0-2 again, then 3 and 4
    assert again.rows_skipped > 0
    assert again.rows_written > 0
    for view, stored in before.items():
        now = await rows(aconn, f"SELECT * FROM {view} WHERE step < 3 ORDER BY 1, 2, 3")
        assert now == stored, view
    assert await rows(aconn, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(5, 5)]
    ids = await rows(aconn, "SELECT step, event_id FROM events ORDER BY step")
    assert ids == [(step, replay_id("s", step, 0)) for step in range(5)]
    assert await resume_step(store, "s") == 5
    await assert_rollups_match(aconn, "s")


async def test_a_replayed_row_that_differs_is_refused_naming_key_and_column(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s", agents=1)
    async with SimulationLogger(store, "s") as logger:
        await logger.log_agent_state(0, "a0", health=1.0)
    logger = SimulationLogger(store, "s")
    await logger.log_agent_state(0, "a0", health=2.0)
    with pytest.raises(IngestError, match=r"step=0.*agent_id='a0'.*health = 1\.0") as info:
        await logger.close()
    cause = info.value.cause
    assert isinstance(cause, ReplayConflict) and cause.column == "health"
    assert await rows(aconn, "SELECT health FROM agent_states") == [(1.0,)]


async def test_discard_steps_from_lets_a_different_run_log_those_steps(
    store: Store, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await add_simulation(aconn, "s")
    await add_simulation(aconn, "other")
    await log_run(store, "s", steps=5)
    await log_run(store, "other", steps=5)
    other = {v: await rows(aconn, f"SELECT * FROM {v} WHERE simulation_id = 'other'"
                                  " ORDER BY 1, 2, 3") for v in ("agent_states", "events")}
    deleted = await discard_steps_from(store, "s", 3)
    assert deleted["agent_states"] == 2 * 3 and deleted["agent_actions"] == 2 * 3 * 2
    assert deleted["events"] == 2 and deleted["resource_states"] == 2
    for view in ("agent_states", "agent_actions", "resource_states", "learning_experiences",
                 "health_incidents", "events"):
        steps = await rows(aconn, f"SELECT DISTINCT step FROM {view}"
                                  " WHERE simulation_id = 's' ORDER BY 1")
        assert steps == [(0,), (1,), (2,)], view
    assert await resume_step(store, "s") == 3
    await assert_rollups_match(aconn, "s")
    async with SimulationLogger(store, "s") as logger:  # a different model from step 3
        await logger.log_agent_state(3, "a0", health=42.0)
        await logger.log_action(3, "a0", "flee")
    assert await rows(aconn, "SELECT health FROM agent_states WHERE simulation_id = 's'"
                             " AND step = 3") == [(42.0,)]
    assert await rows(aconn, "SELECT ordinal, action_type FROM agent_actions"
                             " WHERE simulation_id = 's' AND step = 3") == [(0, "flee")]
    for view, stored in other.items():
        assert await rows(aconn, f"SELECT * FROM {view} WHERE simulation_id = 'other'"
                                 " ORDER BY 1, 2, 3") == stored
    with pytest.raises(NotFound):
        await discard_steps_from(store, "nope", 0)


STORED = [t for t in SPECS.values() if t.storage is not None]


def distinct_value(column: Column, n: int) -> Any:
    """A value of the column's kind that no other column of the row holds."""
    return {
        "text": f"text-{n}", "int2": n, "int4": 100 + n, "int8": 10_000 + n,
        "float8": n + 0.25, "bool": True, "jsonb": {"column": n, "nested": [None, {"x": None}]},
    }[column.kind]  # fmt: skip


@pytest.mark.parametrize("table", [t.name for t in STORED])
async def test_a_raw_sql_insert_through_a_view_keeps_every_column(
    table: str, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """Every column of the catalog, each with its own value, inserted by raw SQL into the
    view and read back: a column added to a stored table but not to its view (or to the
    view but not stored) fails here."""
    await add_simulation(aconn, "s", agents=1)
    spec = SPECS[table]
    values = {c.name: distinct_value(c, n) for n, c in enumerate(spec.columns)}
    values.update(simulation_id="s", step=3)
    if "agent_id" in values:
        values["agent_id"] = "a0"
    names = list(values)
    await aconn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        ),
        [Jsonb(v) if isinstance(v, dict) else v for v in values.values()],
    )
    stored = await rows(aconn, sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(table)).as_string(aconn))
    assert stored == [tuple(values.values())]


async def test_raw_sql_on_schema_qualified_names_works_from_any_search_path(
    dsn: str, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """A host connection on `public` writing `sim.` names: the triggers resolve the
    module's tables whatever the caller's search path."""
    await add_simulation(aconn, "s", agents=1)
    key = await sim_key(aconn, "s")
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options="-c search_path=public"
    ) as host:
        await host.execute("INSERT INTO sim.agents (simulation_id, agent_id, agent_type)"
                           " VALUES ('s', 'raw', 'prey')")  # its key from the trigger
        await host.execute("INSERT INTO sim.agent_states (simulation_id, step, agent_id,"
                           " health) VALUES ('s', 0, 'raw', 0.5)")
        await host.execute("INSERT INTO sim.agent_actions (simulation_id, step, agent_id,"
                           " action_type, reward) VALUES ('s', 0, 'raw', 'move', 1)")
        async with host.cursor() as cur:
            async with cur.copy("COPY sim.agent_states_data (sim_key, step, agent_key, health)"
                                " FROM STDIN") as copy:
                await copy.write_row((key, 1, 1, 0.75))
        assert await rows(host, "SELECT step, agent_id, health FROM sim.agent_states"
                                " ORDER BY step") == [(0, "raw", 0.5), (1, "raw", 0.75)]
        assert await rows(host, "SELECT agents FROM sim.population_by_step ORDER BY step") == [
            (1,), (1,)]
        await host.execute("DELETE FROM sim.simulations WHERE simulation_id = 's'")
    assert set((await stored_counts(aconn, key)).values()) == {0}


async def test_importing_sim_schema_leaves_psycopg_jsonb_copy_to_the_host(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    """The module's jsonb dumper is for its own wire-format values only: a host's binary
    COPY of dicts into a jsonb column (`set_types`) still uses psycopg's own."""
    await aconn.execute("CREATE TABLE public.host_docs (doc jsonb)")
    try:
        async with aconn.cursor() as cur:
            async with cur.copy("COPY public.host_docs (doc) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["jsonb"])
                await copy.write_row([{"host": [1, "two"]}])
        assert await rows(aconn, "SELECT doc FROM public.host_docs") == [({"host": [1, "two"]},)]
    finally:
        await aconn.execute("DROP TABLE public.host_docs")


async def test_the_writers_bytea_dumper_stays_on_its_own_cursor(
    store: Store, aconn: psycopg.AsyncConnection[Any], citizens: str
) -> None:
    """The bulk writer sends jsonb payloads with psycopg's C bytes dumper, set on its COPY's
    cursor only: after a write on a host's connection, a binary COPY of `psycopg.Binary`
    values (which only the DB-API dumper of the bytea oid takes) still works there."""
    rows_in = [(citizens, 0, "a1", 0, "move", None, None, None, None, None, 0.5, {"k": 1})]
    await BulkWriter().write(aconn, "agent_actions", citizens, uuid.uuid4(), rows_in)
    assert await rows(aconn, "SELECT details FROM agent_actions") == [({"k": 1},)]
    await aconn.execute("CREATE TABLE public.host_blobs (blob bytea)")
    try:
        async with aconn.cursor() as cur:
            async with cur.copy("COPY public.host_blobs (blob) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["bytea"])
                await copy.write_row([psycopg.Binary(b"\x00host")])
        assert await rows(aconn, "SELECT blob FROM public.host_blobs") == [(b"\x00host",)]
    finally:
        await aconn.execute("DROP TABLE public.host_blobs")
