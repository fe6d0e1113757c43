"""The bulk writer: round trips of every column type and edge-case JSONB; rejections."""

from __future__ import annotations

import enum
import math
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sim_schema.ingest.writer import BulkWriter, CopyBatch, copy_rows
from sim_schema.errors import NotFound, SimSchemaError, ValidationError
from sim_schema.catalog import SPECS
from sim_schema.values import VALIDATION_STEP, validate

SIM = "sim-copy"


@pytest.fixture
async def sim(aconn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncConnection[Any]:
    await aconn.execute("INSERT INTO simulations (simulation_id) VALUES (%s)", (SIM,))
    agents = [
        SPECS["agents"].row(SIM, {"agent_id": f"a{i}", "agent_type": "prey"}) for i in range(3)
    ]
    assert await copy_rows(aconn, "agents", SIM, agents) == 3
    return aconn


EDGE_JSON: list[Any] = [
    {"text": "héllo wörld — 日本語 😀🚀 שלום مرحبا", "rtl": "\u202eabc"},
    {"nested": {"a": [1, [2, [3, {"b": None}]]], "t": True, "f": False}},
    {},
    [],
    {"neg_zero": -0.0, "big": 2**80, "neg_big": -(2**70), "small": 1e-300, "f": 0.1},
    "a plain string",
    12345678901234567890,
    {"escaped_backslash": "\\u0000 is not a NUL", "quote": '"', "newline": "a\nb"},
    {"large": ["x" * 1000 for _ in range(1000)]},  # ~1 MB
]


async def test_jsonb_round_trip(sim: psycopg.AsyncConnection[Any]) -> None:
    rows = [
        SPECS["agent_states"].row(SIM, {"step": i, "agent_id": "a0", "memory": doc})
        for i, doc in enumerate(EDGE_JSON)
    ]
    assert await copy_rows(sim, "agent_states", SIM, rows) == len(rows)
    cur = await sim.execute("SELECT step, memory FROM agent_states ORDER BY step")
    got = await cur.fetchall()
    assert [doc for _, doc in got] == EDGE_JSON
    # jsonb stores numbers as numeric: -0.0 comes back as 0 (equal, sign lost; documented)
    assert got[4][1]["big"] == 2**80


async def test_every_column_type_round_trips(sim: psycopg.AsyncConnection[Any]) -> None:
    event_id = uuid.uuid4()
    await copy_rows(
        sim,
        "agents",
        SIM,
        [
            SPECS["agents"].row(
                SIM,
                {
                    "agent_id": "b1",
                    "agent_type": "predator",
                    "name": "Ünïcode",
                    "birth_step": 3,
                    "death_step": 2**31 - 1,
                    "position_x": -0.0,
                    "position_y": 1e308,
                    "position_z": float("inf"),
                    "initial_resources": float("nan"),
                    "starting_health": 7,
                    "starvation_threshold": -(2**31),
                    "genome_id": "g:1",
                    "generation": 4,
                    "parent_ids": ["a0", "a1"],
                    "profile": {"k": [1, 2]},
                },
            )
        ],
    )
    cur = await sim.execute("SELECT * FROM agents WHERE agent_id = 'b1'")
    row = await cur.fetchone()
    assert row is not None
    assert row[2:9] == ("predator", "Ünïcode", 3, 2**31 - 1, -0.0, 1e308, math.inf)
    assert math.copysign(1, row[6]) == -1.0  # float8 keeps the sign of zero
    assert math.isnan(row[9])  # float8 columns accept NaN (documented)
    assert row[10:17] == (7.0, -(2**31), "g:1", 4, ["a0", "a1"], {"k": [1, 2]}, {})
    await copy_rows(
        sim,
        "events",
        SIM,
        [SPECS["events"].row(SIM, {"event_id": event_id, "step": 1, "event_type": "birth"})],
    )
    cur = await sim.execute("SELECT event_id, priority, payload, processed FROM events")
    assert await cur.fetchall() == [(event_id, 0, {}, False)]
    for table in ("agent_actions", "learning_experiences", "health_incidents"):
        values = {"step": 1, "agent_id": "a1", "ordinal": 0, "details": {"x": 1}}
        values.update(REQUIRED[table])
        assert await copy_rows(sim, table, SIM, [SPECS[table].row(SIM, values)]) == 1
    await copy_rows(sim, "resource_states", SIM, [(SIM, 0, 1, 2.5, None, 1.0)])
    await copy_rows(
        sim, "simulation_steps", SIM, [SPECS["simulation_steps"].row(SIM, {"step": 0, "births": 2})]
    )
    await copy_rows(
        sim, "interactions", SIM, [(SIM, 0, 0, "agent", "a0", "agent", "a1", "attack", None, [])]
    )
    for table in ("agent_actions", "resource_states", "simulation_steps", "interactions"):
        cur = await sim.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        assert await cur.fetchone() == (1,)


REQUIRED: dict[str, dict[str, Any]] = {
    "agent_actions": {"action_type": "move"},
    "learning_experiences": {"module_type": "dqn"},
    "health_incidents": {"cause": "starvation"},
}

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("agent_states", {"agent_id": "a\x00b"}, "agent_id", "NUL"),
    ("agent_states", {"memory": {"k": "v\x00"}}, "memory", "NUL"),
    ("agent_states", {"memory": {"k\x00": 1}}, "memory", "NUL"),
    ("agent_states", {"extras": [float("nan")]}, "extras", "JSON"),
    ("agent_states", {"extras": {"x": float("inf")}}, "extras", "JSON"),
    ("agent_states", {"extras": {"x": object()}}, "extras", "serializable"),
    ("agent_states", {"age": 2**31}, "age", "out of range"),
    ("agent_states", {"age": -1}, "age", ">= 0"),
    ("agent_states", {"step": -(2**40)}, "step", "out of range"),
    ("agent_states", {"health": "1.0"}, "health", "expected a float"),
    ("agent_states", {"health": 2**60}, "health", "too large"),
    ("agent_states", {"age": 1.5}, "age", "expected an integer"),
    ("agent_states", {"age": True}, "age", "expected an integer"),
    ("agent_states", {"is_defending": 1}, "is_defending", "expected a bool"),
    ("agent_states", {"is_defending": None}, "is_defending", "NULL"),
    ("agent_states", {"agent_id": None}, "agent_id", "NULL"),
    ("agent_states", {"simulation_id": "other"}, "simulation_id", "batch"),
]


@pytest.mark.parametrize(("table", "change", "field", "reason"), BAD)
async def test_bad_value_rejected_and_nothing_written(
    sim: psycopg.AsyncConnection[Any], table: str, change: dict[str, Any], field: str, reason: str
) -> None:
    rows = [SPECS[table].row(SIM, {"step": i, "agent_id": "a1"}) for i in range(5)]
    rows[3] = SPECS[table].row(SIM, {"step": 3, "agent_id": "a1", **change})
    with pytest.raises(ValidationError) as info:
        await copy_rows(sim, table, SIM, rows)
    assert (info.value.table, info.value.row, info.value.field) == (table, 3, field)
    assert reason in info.value.reason
    cur = await sim.execute(
        "SELECT (SELECT count(*) FROM agent_states),"
        " (SELECT count(*) FROM ingest_batches WHERE table_name = 'agent_states')"
    )
    assert await cur.fetchone() == (0, 0)


async def test_events_uuid_and_text_array_rejections() -> None:
    events = [SPECS["events"].row(SIM, {"event_id": "not-a-uuid", "step": 0, "event_type": "x"})]
    with pytest.raises(ValidationError, match="uuid"):
        validate("events", SIM, events)
    agents = [
        SPECS["agents"].row(SIM, {"agent_id": "a", "agent_type": "t", "parent_ids": ["p\x00"]})
    ]
    with pytest.raises(ValidationError) as info:
        validate("agents", SIM, agents)
    assert info.value.field == "parent_ids"
    with pytest.raises(ValidationError, match="no such column"):
        SPECS["agents"].row(SIM, {"agent_id": "a", "agent_type": "t", "colour": "red"})
    with pytest.raises(ValidationError, match="takes"):
        validate("resource_states", SIM, [(SIM, 0, 1)])


async def test_replayed_batch_is_skipped(sim: psycopg.AsyncConnection[Any]) -> None:
    batch_id = uuid.uuid4()
    rows = [SPECS["agent_states"].row(SIM, {"step": 0, "agent_id": f"a{i}"}) for i in range(3)]
    assert await copy_rows(sim, "agent_states", SIM, rows, batch_id=batch_id) == 3
    assert await copy_rows(sim, "agent_states", SIM, rows, batch_id=batch_id) == 0
    cur = await sim.execute("SELECT count(*) FROM agent_states")
    assert await cur.fetchone() == (3,)
    cur = await sim.execute(
        "SELECT table_name, row_count FROM ingest_batches WHERE batch_id = %s", (batch_id,)
    )
    assert await cur.fetchone() == ("agent_states", 3)


async def test_numpy_and_enum_values_are_made_native(sim: psycopg.AsyncConnection[Any]) -> None:
    np = pytest.importorskip("numpy")

    class Level(enum.IntEnum):
        HIGH = 3

    row = SPECS["agent_states"].row(
        SIM,
        {
            "step": np.int64(5),
            "agent_id": "a1",
            "health": np.float32(0.5),
            "position_x": np.float64(1.25),
            "age": Level.HIGH,
            "is_defending": np.bool_(True),
            "memory": {"v": np.arange(3), "s": np.int32(7)},
        },
    )
    assert await copy_rows(sim, "agent_states", SIM, [row]) == 1
    cur = await sim.execute(
        "SELECT step, health, position_x, age, is_defending, memory FROM agent_states"
    )
    assert await cur.fetchone() == (5, 0.5, 1.25, 3, True, {"v": [0, 1, 2], "s": 7})
    bad = SPECS["agent_states"].row(
        SIM, {"step": 0, "agent_id": "a1", "extras": np.array([np.nan])}
    )
    with pytest.raises(ValidationError, match="JSON"):
        validate("agent_states", SIM, [bad])


async def test_bad_row_in_a_later_validation_step_names_its_row_and_writes_nothing(
    sim: psycopg.AsyncConnection[Any],
) -> None:
    """Validation streams with the COPY: earlier steps are already sent when a later one
    fails; the transaction is rolled back and the row index counts from the batch start."""
    n = 3 * VALIDATION_STEP + 7
    rows = [SPECS["agent_states"].row(SIM, {"step": i, "agent_id": "a1"}) for i in range(n)]
    bad = 2 * VALIDATION_STEP + 5
    rows[bad] = SPECS["agent_states"].row(SIM, {"step": bad, "agent_id": "a1", "age": -3})
    with pytest.raises(ValidationError) as info:
        await copy_rows(sim, "agent_states", SIM, rows)
    assert (info.value.row, info.value.field) == (bad, "age")
    cur = await sim.execute(
        "SELECT (SELECT count(*) FROM agent_states), (SELECT count(*) FROM ingest_batches"
        " WHERE table_name = 'agent_states')"
    )
    assert await cur.fetchone() == (0, 0)
    with pytest.raises(ValidationError) as info:
        validate("agent_states", SIM, rows[VALIDATION_STEP:], start=VALIDATION_STEP)
    assert info.value.row == bad


async def test_write_many_one_transaction_each_batch_in_the_ledger(
    sim: psycopg.AsyncConnection[Any],
) -> None:
    def batch(first: int) -> list[tuple[Any, ...]]:
        return [
            SPECS["agent_states"].row(SIM, {"step": first + i, "agent_id": "a0", "extras": {}})
            for i in range(4)
        ]

    ids = [uuid.uuid4() for _ in range(3)]
    first = [
        CopyBatch(ids[0], batch(0)),
        CopyBatch(ids[1], batch(4)),
    ]
    assert await BulkWriter().write_many(sim, "agent_states", SIM, first) == [True, True]
    # a replay of the first transaction together with a new batch: only the new one is written
    again = [*first, CopyBatch(ids[2], batch(8))]
    assert await BulkWriter().write_many(sim, "agent_states", SIM, again) == [False, False, True]
    cur = await sim.execute(
        "SELECT count(*), count(DISTINCT xmin::text), min(step), max(step)"
        " FROM agent_states_data"
    )
    assert await cur.fetchone() == (12, 2, 0, 11)
    cur = await sim.execute(
        "SELECT batch_id, row_count FROM ingest_batches WHERE table_name = 'agent_states'"
        " ORDER BY committed_at, batch_id"
    )
    assert sorted(await cur.fetchall()) == sorted((i, 4) for i in ids)
    with pytest.raises(SimSchemaError, match="share a batch_id"):
        await BulkWriter().write_many(sim, "agent_states", SIM, [first[0], first[0]])


async def test_write_many_without_the_ledger(sim: psycopg.AsyncConnection[Any]) -> None:
    """`ledger=False` (the importers): rows written, no ledger row; a re-run recognises the
    rows by content (`check_stored`), and a missing simulation is still refused."""
    rows = [SPECS["agent_states"].row(SIM, {"step": s, "agent_id": "a1", "health": 1.0 + s})
            for s in range(3)]  # fmt: skip
    writer = BulkWriter()
    batch = [CopyBatch(uuid.uuid4(), rows)]
    assert await writer.write_many(sim, "agent_states", SIM, batch, ledger=False) == [True]
    again = [CopyBatch(uuid.uuid4(), rows)]
    assert await writer.write_many(
        sim, "agent_states", SIM, again, ledger=False, check_stored=True
    ) == [True]
    assert writer.rows_skipped == 3
    cur = await sim.execute("SELECT step, health FROM agent_states ORDER BY step")
    assert await cur.fetchall() == [(0, 1.0), (1, 2.0), (2, 3.0)]
    cur = await sim.execute("SELECT count(*) FROM ingest_batches WHERE table_name = 'agent_states'")
    assert await cur.fetchone() == (0,)
    with pytest.raises(NotFound, match="'nowhere' does not exist"):
        await writer.write_many(
            sim, "resource_states", "nowhere",
            [CopyBatch(uuid.uuid4(), [SPECS["resource_states"].row("nowhere", {"step": 0,
             "resource_id": 1, "amount": 1.0})])], ledger=False,
        )  # fmt: skip
