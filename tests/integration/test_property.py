"""Property-based tests: every bulk record kind and the repository writers round-trip any
valid value exactly, and refuse any invalid one by table, row and field, writing nothing
of its batch.

One migrated database per test function; each example uses a fresh simulation id.
No writer takes a client timestamp (every timestamptz column is filled by the server),
so timestamps are not generated here.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from sim_schema import repositories as repo
from sim_schema.ingest.writer import copy_rows
from sim_schema.errors import IngestError, ValidationError
from sim_schema.ingest.logger import RetryPolicy, SimulationLogger
from sim_schema.models import AgentCreate, AgentDecisionCreate, EventCreate
from sim_schema.settings import Settings
from sim_schema.catalog import SPECS, WRITTEN_AFTER, Column
from sim_schema.store import Store

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'`

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_ids = itertools.count()

# --- strategies ------------------------------------------------------------------------

TEXT_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
TEXT = st.one_of(
    st.text(TEXT_CHARS, max_size=40),
    st.sampled_from(["", "ω" * 20_000, "'; DROP TABLE sim.agents; --", "\U0001f600\u200b"]),
)
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(-1e15, 1e15, allow_nan=False),
    st.text(TEXT_CHARS, max_size=20),
)
JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(TEXT_CHARS, max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
FLOAT = st.one_of(
    st.floats(allow_nan=False), st.sampled_from([-0.0, 0.0, 5e-324, 1.7976931348623157e308])
)


INT_MAX = {"int2": 2**15 - 1, "int4": 2**31 - 1, "int8": 2**63 - 1}


def valid_value(col: Column) -> st.SearchStrategy[Any]:
    kind = col.kind
    if kind == "text":
        base: st.SearchStrategy[Any] = TEXT
    elif kind in ("int2", "int4", "int8"):
        hi = INT_MAX[kind]
        lo = col.minimum if col.minimum is not None else -hi - 1
        base = st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi]))
    elif kind == "float8":
        low = col.minimum
        base = FLOAT if low is None else st.floats(min_value=low, allow_nan=False)
    elif kind == "bool":
        base = st.booleans()
    elif kind == "jsonb":
        base = JSON if col.nullable else st.dictionaries(st.text(TEXT_CHARS, max_size=8), JSON)
    elif kind == "uuid":
        base = st.uuids()
    else:
        base = st.lists(st.text(TEXT_CHARS, max_size=10), max_size=4)
    return st.one_of(st.none(), base) if col.nullable else base


def invalid_value(col: Column) -> st.SearchStrategy[Any]:
    kind = col.kind
    wrong_type: list[Any] = [object(), b"bytes"]
    if kind == "text":
        options = [*wrong_type, 1, "nul\x00inside"]
    elif kind in ("int2", "int4", "int8"):
        hi = INT_MAX[kind]
        options = [*wrong_type, "1", 1.5, True, hi + 1, -hi - 2]
        if col.minimum is not None:
            options.append(col.minimum - 1)
    elif kind == "float8":
        options = [*wrong_type, "1.0", True, 2**80]
        if col.minimum is not None:
            options.append(col.minimum - 0.5)
    elif kind == "bool":
        options = [*wrong_type, 1, "true"]
    elif kind == "jsonb":
        options = [
            object(),
            float("nan"),
            {"x": float("inf")},
            [float("-inf")],
            {"k": "nul\x00"},
            {"nul\x00key": 1},
        ]
    elif kind == "uuid":
        options = [*wrong_type, "not-a-uuid", 1]
    else:
        options = [*wrong_type, "abc", [1], ["nul\x00"]]
    if not col.nullable:
        options.append(None)
    return st.sampled_from(options)


def fix_keys(table: str, rows: list[list[Any]]) -> None:
    """Unique keys and existing references, so that only the values under test vary."""
    names = SPECS[table].names[1:]  # rows here lack simulation_id
    for i, r in enumerate(rows):
        if "step" in names:
            r[names.index("step")] = i
        if "ordinal" in names:  # one row per step: its first
            r[names.index("ordinal")] = 0
        if table == "agents":
            r[names.index("agent_id")] = f"{i}:{r[names.index('agent_id')]}"
            r[names.index("birth_step")] = 0
            r[names.index("death_step")] = None
        if "agents" in WRITTEN_AFTER[table]:
            r[names.index("agent_id")] = "a1"
        if "events" in WRITTEN_AFTER[table]:
            r[names.index("event_id")] = None  # no event to refer to


def rows_for(table: str) -> st.SearchStrategy[list[list[Any]]]:
    row = st.tuples(*[valid_value(c) for c in SPECS[table].columns[1:]]).map(list)
    return st.lists(row, min_size=1, max_size=4)


# --- comparison ------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equality that also tells -0.0 from 0.0 for float columns."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def jsonb_number(value: Any) -> Any:
    """What jsonb gives back: its numbers are `numeric`, which has no negative zero."""
    if isinstance(value, float) and value == 0.0:
        return 0.0
    if isinstance(value, dict):
        return {k: jsonb_number(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonb_number(v) for v in value]
    return value


def read_back(conn: psycopg.Connection[Any], table: str, sim: str) -> list[tuple[Any, ...]]:
    spec = SPECS[table]
    query = sql.SQL("SELECT {} FROM {} WHERE simulation_id = %s").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in spec.names), sql.Identifier(table)
    )
    return [tuple(r) for r in conn.execute(query, (sim,)).fetchall()]


def sort_key(table: str, row: Any) -> str:
    names = SPECS[table].names
    key = "agent_id" if table == "agents" else "event_id" if table == "events" else "step"
    return str(row[names.index(key)])


def new_simulation(conn: psycopg.Connection[Any]) -> str:
    sim = f"p-{next(_ids)}"
    conn.execute("INSERT INTO simulations (simulation_id) VALUES (%s)", (sim,))
    conn.execute(
        "INSERT INTO agents (simulation_id, agent_id, agent_type) VALUES (%s, 'a1', 't')", (sim,)
    )
    return sim


async def _copy(dsn: str, table: str, sim: str, rows: list[tuple[Any, ...]]) -> int:
    async with Store(Settings(dsn=dsn, pool_min_size=0)) as store, store.connection() as conn:
        return await copy_rows(conn, table, sim, rows)


# --- bulk record kinds -----------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(SPECS))
def test_bulk_valid_values_round_trip_exactly(table: str, dsn: str, conn: Any) -> None:
    import asyncio

    @SETTINGS
    @given(rows=rows_for(table))
    def check(rows: list[list[Any]]) -> None:
        sim = new_simulation(conn)
        fix_keys(table, rows)
        full = [(sim, *r) for r in rows]
        assert asyncio.run(_copy(dsn, table, sim, full)) == len(full)
        stored = read_back(conn, table, sim)
        if table == "agents":
            stored = [r for r in stored if r[1] != "a1"]
        want = sorted(full, key=lambda r: sort_key(table, r))
        got = sorted(stored, key=lambda r: sort_key(table, r))
        if table == "agents":  # text[] comes back as a list
            want = [(*r[:14], list(r[14]), *r[15:]) for r in want]
        kinds = [c.kind for c in SPECS[table].columns]
        want = [
            tuple(jsonb_number(v) if k == "jsonb" else v for v, k in zip(r, kinds, strict=True))
            for r in want
        ]
        assert same(got, want), (got, want)

    check()


@pytest.mark.parametrize("table", sorted(SPECS))
def test_bulk_invalid_value_refused_by_row_and_field_nothing_written(
    table: str, dsn: str, conn: Any
) -> None:
    import asyncio

    columns = SPECS[table].columns[1:]

    @SETTINGS
    @given(rows=rows_for(table), data=st.data())
    def check(rows: list[list[Any]], data: st.DataObject) -> None:
        sim = new_simulation(conn)
        fix_keys(table, rows)
        bad_row = data.draw(st.integers(0, len(rows) - 1), label="row")
        position = data.draw(st.integers(0, len(columns) - 1), label="column")
        col = columns[position]
        rows[bad_row][position] = data.draw(invalid_value(col), label="value")
        full = [(sim, *r) for r in rows]
        with pytest.raises(ValidationError) as info:
            asyncio.run(_copy(dsn, table, sim, full))
        err = info.value
        assert (err.table, err.row, err.field) == (table, bad_row, col.name), str(err)
        assert f"row {bad_row}" in str(err) and repr(col.name) in str(err)
        extra = [r for r in read_back(conn, table, sim) if not (table == "agents" and r[1] == "a1")]
        assert extra == []
        ledger = conn.execute(
            "SELECT count(*) FROM ingest_batches WHERE simulation_id = %s", (sim,)
        )
        assert ledger.fetchone() == (0,)

    check()


@SETTINGS
@given(data=st.data())
async def test_unknown_agent_or_simulation_refused_with_row_and_field(
    data: st.DataObject, dsn: str, conn: Any
) -> None:
    """Foreign keys: the logger reports the row index and field of the unknown reference."""
    sim = new_simulation(conn)
    n = data.draw(st.integers(1, 20))
    bad = data.draw(st.integers(0, n - 1))
    unknown_sim = data.draw(st.booleans())
    logged_sim = f"missing-{sim}" if unknown_sim else sim
    policy = RetryPolicy(attempts=1)
    async with Store(Settings(dsn=dsn, pool_min_size=0)) as store:
        logger = SimulationLogger(store, logged_sim, buffer_size=100, retry=policy)
        for i in range(n):
            await logger.log_agent_state(i, "ghost" if i == bad else "a1", health=1.0)
        with pytest.raises(IngestError) as info:
            await logger.close()
    cause = info.value.cause
    assert isinstance(cause, ValidationError), repr(cause)
    if unknown_sim:
        assert cause.field == "simulation_id" and cause.row == 0
    else:
        assert (cause.row, cause.field) == (bad, "agent_id")
    count = conn.execute("SELECT count(*) FROM agent_states WHERE simulation_id = %s", (sim,))
    assert count.fetchone() == (0,)


# --- repository writers ----------------------------------------------------------------

JSON_OBJECT = st.dictionaries(st.text(TEXT_CHARS, max_size=8), JSON, max_size=5)


@SETTINGS
@given(
    name=st.one_of(st.none(), TEXT), description=st.one_of(st.none(), TEXT), parameters=JSON_OBJECT
)
async def test_repository_simulation_round_trip(
    name: str | None, description: str | None, parameters: dict[str, Any], dsn: str
) -> None:
    sim = f"rs-{next(_ids)}"
    async with Store(Settings(dsn=dsn, pool_min_size=0)) as store, store.connection() as conn:
        await repo.create_simulation(
            conn, sim, name=name, description=description, parameters=parameters
        )
        got = await repo.get_simulation(conn, sim)
    assert (got.name, got.description) == (name, description)
    assert same(got.parameters, parameters) or got.parameters == parameters


@SETTINGS
@given(
    agent=st.builds(
        AgentCreate,
        simulation_id=st.just("x"),
        agent_id=st.text(TEXT_CHARS, min_size=1, max_size=30),
        agent_type=TEXT,
        name=st.one_of(st.none(), TEXT),
        birth_step=st.integers(0, 2**31 - 1),
        death_step=st.none(),
        position_x=st.one_of(st.none(), FLOAT),
        starvation_threshold=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
        generation=st.integers(0, 2**31 - 1),
        parent_ids=st.lists(st.text(TEXT_CHARS, max_size=10), max_size=3),
        profile=JSON_OBJECT,
    )
)
async def test_repository_agent_round_trip(agent: AgentCreate, dsn: str, conn: Any) -> None:
    sim = new_simulation(conn)
    agent = agent.model_copy(update={"simulation_id": sim})
    async with Store(Settings(dsn=dsn, pool_min_size=0)) as store, store.connection() as aconn:
        await repo.register_agent(aconn, agent)
        got = await repo.get_agent(aconn, sim, agent.agent_id)
    want = agent.model_dump()
    have = got.model_dump(exclude={"created_at", "agent_key"})
    assert set(want) == set(have)
    for key, value in want.items():
        assert same(have[key], value) or have[key] == value, key


@SETTINGS
@given(
    prompt=st.one_of(st.none(), TEXT),
    output=st.one_of(st.none(), TEXT),
    context=JSON_OBJECT,
    action=JSON,
    payload=JSON_OBJECT,
    event_type=TEXT,
    priority=st.integers(-(2**31), 2**31 - 1),
    step=st.integers(0, 2**31 - 1),
)
async def test_repository_event_and_decision_round_trip(
    prompt: str | None, output: str | None, context: dict[str, Any], action: Any,
    payload: dict[str, Any], event_type: str, priority: int, step: int, dsn: str, conn: Any,
) -> None:  # fmt: skip
    sim = new_simulation(conn)
    event = EventCreate(
        simulation_id=sim, step=step, event_type=event_type, priority=priority, payload=payload
    )
    decision = AgentDecisionCreate(
        simulation_id=sim, event_id=event.event_id, step=step, agent_id="a1",
        prompt=prompt, output=output, context=context, action=action,
    )  # fmt: skip
    async with Store(Settings(dsn=dsn, pool_min_size=0)) as store, store.connection() as aconn:
        await repo.create_event(aconn, event)
        await repo.record_decision(aconn, decision)
        got_event = await repo.get_event(aconn, sim, event.event_id)
        got = await repo.get_decision(aconn, sim, decision.decision_id)
    assert (got_event.event_type, got_event.priority, got_event.step) == (
        event_type,
        priority,
        step,
    )
    assert got_event.payload == payload
    assert (got.prompt, got.output, got.event_id) == (prompt, output, event.event_id)
    assert got.context == context and got.action == action


@SETTINGS
@given(
    field=st.sampled_from(["prompt", "output", "context"]),
    value=st.sampled_from(["nul\x00", {"k": float("nan")}, {"k": "\x00"}]),
)
async def test_repository_decision_invalid_value_refused_nothing_written(
    field: str, value: Any, dsn: str, conn: Any
) -> None:
    if field in ("prompt", "output") and not isinstance(value, str):
        value = "nul\x00"
    if field == "context" and isinstance(value, str):
        value = {"k": value}
    sim = new_simulation(conn)
    decision = AgentDecisionCreate(simulation_id=sim, step=0, agent_id="a1", **{field: value})
    async with Store(Settings(dsn=dsn, pool_min_size=0)) as store, store.connection() as aconn:
        with pytest.raises((ValidationError, psycopg.DataError, ValueError)) as info:
            await repo.record_decision(aconn, decision)
    assert not isinstance(info.value, ValidationError) or info.value.field == field
    count = conn.execute("SELECT count(*) FROM agent_decisions WHERE simulation_id = %s", (sim,))
    assert count.fetchone() == (0,)
