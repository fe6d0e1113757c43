"""Every writer puts every value in its own column: each `log_*` method of the logger and
each repository writer writes a row whose columns all hold different values, and the
row read back must match column by column. Swapping two columns anywhere on the way
(a tuple position, a keyword, a column list) makes one of these tests fail.
"""

from __future__ import annotations

import inspect
import uuid
from typing import Any

import psycopg
import pytest
from helpers import add_simulation
from psycopg import sql
from psycopg.rows import dict_row

from sim_schema import catalog
from sim_schema import repositories as repo
from sim_schema import models
from sim_schema.ingest.logger import SimulationLogger, SyncSimulationLogger
from sim_schema.settings import Settings
from sim_schema.store import Store

SIM = "rt"
AGENTS = ("agent-0", "agent-1")  # agent-1 is the one the rows belong to, agent-0 a target
EVENT = uuid.UUID(int=7)

# The one-row method of each logged table; its positional parameters are taken from the
# row by name, every other column goes by keyword.
ONE_ROW = {
    "agents": "log_agent",
    "agent_states": "log_agent_state",
    "agent_actions": "log_action",
    "resource_states": "log_resource_state",
    "simulation_steps": "log_step",
    "learning_experiences": "log_learning_experience",
    "health_incidents": "log_health_incident",
    "interactions": "log_interaction",
    "events": "log_event",
    "agent_decisions": "log_decision",
}
MANY_ROWS = {
    "agents": "log_agents",
    "agent_states": "log_agent_states",
    "agent_actions": "log_actions",
    "resource_states": "log_resource_states",
    "simulation_steps": "log_steps",
    "learning_experiences": "log_learning_experiences",
    "health_incidents": "log_health_incidents",
    "interactions": "log_interactions",
    "events": "log_events",
    "agent_decisions": "log_decisions",
}


def distinct_row(table: str, seed: int) -> dict[str, Any]:
    """A value for every written column of `table`, no two columns alike (ints, floats and
    strings each count up from `seed`, so that even two columns of one type differ)."""
    row: dict[str, Any] = {}
    n = seed
    for column in catalog.table(table).columns:
        if not column.written or column.identity:
            continue
        n += 1
        kind = column.kind
        if column.name == "simulation_id":
            value: Any = SIM
        elif column.name in ("agent_id", "source_id"):
            value = AGENTS[1] if table != "agents" else f"agent-{n}"
        elif column.name in ("action_target_id", "target_id"):
            value = AGENTS[0]
        elif column.name == "event_id":
            value = uuid.UUID(int=1000 + n) if table == "events" else EVENT
        elif column.name == "death_step":
            value = n + 10_000  # after the birth step
        elif kind in ("int2", "int4", "int8"):
            value = n
        elif kind == "float8":
            value = n + 0.25
        elif kind == "bool":
            value = True  # the default is False: True proves the value went through
        elif kind == "text":
            value = f"{column.name}-{n}"
        elif kind == "jsonb":
            value = {"column": column.name, "n": n}
        elif kind == "uuid":
            value = uuid.UUID(int=n)
        elif kind == "text[]":
            value = [f"{column.name}-{n}", "second"]
        else:
            raise AssertionError(f"no distinct value for {table}.{column.name} ({kind})")
        row[column.name] = value
    return row


async def setup(aconn: psycopg.AsyncConnection[Any]) -> None:
    await add_simulation(aconn, SIM)
    await repo.register_agents(
        aconn,
        [models.AgentCreate(simulation_id=SIM, agent_id=a, agent_type="t") for a in AGENTS],
    )
    await repo.create_event(
        aconn, models.EventCreate(simulation_id=SIM, event_id=EVENT, step=0, event_type="e")
    )


async def stored(aconn: psycopg.AsyncConnection[Any], table: str, where: dict[str, Any]) -> list[dict[str, Any]]:
    names = [c.name for c in catalog.table(table).columns if c.written and not c.identity]
    conditions = sql.SQL(" AND ").join(
        sql.SQL("{} = %s").format(sql.Identifier(k)) for k in where
    )
    query = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(table), conditions
    )
    async with aconn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, list(where.values()))
        return await cur.fetchall()


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in row.items()}


def key_of(table: str, row: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in catalog.table(table).key if not catalog.table(table).column(k).identity]
    return {k: row[k] for k in keys} if len(keys) > 1 else {"simulation_id": SIM,
                                                            **{k: row[k] for k in keys}}


async def call_one(logger: Any, table: str, row: dict[str, Any]) -> Any:
    method = getattr(logger, ONE_ROW[table])
    positional = [
        p.name for p in inspect.signature(method).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    args = [row[name] for name in positional]
    rest = {k: v for k, v in row.items() if k not in positional and k != "simulation_id"}
    result = method(*args, **rest)
    return await result if inspect.isawaitable(result) else result


def test_every_logged_table_has_a_one_row_and_a_many_rows_method() -> None:
    assert set(ONE_ROW) == set(catalog.SPECS) == set(MANY_ROWS)


@pytest.mark.parametrize("table", sorted(catalog.SPECS))
@pytest.mark.parametrize("how", ["one row", "log_rows", "many rows"])
async def test_logger_writes_each_value_in_its_column(
    table: str, how: str, aconn: psycopg.AsyncConnection[Any], store: Store
) -> None:
    await setup(aconn)
    rows = [distinct_row(table, 100), distinct_row(table, 200)]
    if table == "agent_states" or table == "resource_states" or table == "simulation_steps":
        rows[1]["step"] += 1  # a second key
    async with SimulationLogger(store, SIM) as logger:
        if how == "one row":
            for row in rows:
                await call_one(logger, table, row)
        elif how == "log_rows":
            await logger.log_rows(table, rows)
        else:
            await getattr(logger, MANY_ROWS[table])(rows)
    for row in rows:
        found = await stored(aconn, table, key_of(table, row))
        assert [comparable(f) for f in found] == [comparable(row)], table


def test_sync_logger_writes_each_value_in_its_column(dsn: str, conn: psycopg.Connection[Any]) -> None:
    import asyncio

    async def prepare() -> None:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, options="-c search_path=sim"
        ) as aconn:
            await setup(aconn)

    asyncio.run(prepare())
    rows = {t: distinct_row(t, 300) for t in catalog.SPECS if t != "agents"}
    with SyncSimulationLogger(SIM, settings=Settings(dsn=dsn)) as log:
        for table, row in rows.items():
            method = getattr(log, ONE_ROW[table])
            positional = [
                p.name for p in inspect.signature(method).parameters.values()
                if p.kind is p.POSITIONAL_OR_KEYWORD
            ]
            method(*[row[n] for n in positional],
                   **{k: v for k, v in row.items() if k not in positional and k != "simulation_id"})
    for table, row in rows.items():
        names = [c.name for c in catalog.table(table).columns if c.written and not c.identity]
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT {} FROM {} WHERE simulation_id = %s").format(
                    sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(table)
                ),
                [SIM],
            )
            found = [comparable(r) for r in cur.fetchall()]
        assert comparable(row) in found, table


# --- repository writers ---------------------------------------------------------------


def record(model: type[models.Record], seed: int) -> Any:
    row = distinct_row(model.table, seed)
    return model(**{k: v for k, v in row.items() if k in model.model_fields})


WRITERS = {
    "register_agent": (models.AgentCreate, repo.register_agent),
    "save_agent_state": (models.AgentState, repo.save_agent_state),
    "record_agent_action": (models.AgentAction, repo.record_agent_action),
    "save_resource_state": (models.ResourceState, repo.save_resource_state),
    "save_step_metrics": (models.SimulationStep, repo.save_step_metrics),
    "record_learning_experience": (models.LearningExperience, repo.record_learning_experience),
    "record_health_incident": (models.HealthIncident, repo.record_health_incident),
    "record_interaction": (models.Interaction, repo.record_interaction),
    "create_event": (models.EventCreate, repo.create_event),
    "record_decision": (models.AgentDecisionCreate, repo.record_decision),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
async def test_repository_writer_puts_each_value_in_its_column(
    writer: str, aconn: psycopg.AsyncConnection[Any]
) -> None:
    await setup(aconn)
    model, write = WRITERS[writer]
    given = record(model, 500)
    returned = await write(aconn, given)
    expected = comparable(given.model_dump())
    expected.pop("action_id", None), expected.pop("experience_id", None)
    expected.pop("incident_id", None), expected.pop("interaction_id", None)
    back = comparable({k: getattr(returned, k) for k in expected})
    assert back == expected  # what RETURNING gave back
    found = await stored(aconn, model.table, key_of(model.table, given.model_dump()))
    assert [comparable({k: f[k] for k in expected}) for f in found] == [expected]


async def test_register_agents_puts_each_value_in_its_column(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    await setup(aconn)
    agents = [record(models.AgentCreate, 600), record(models.AgentCreate, 700)]
    assert await repo.register_agents(aconn, agents) == 2
    for agent in agents:
        found = await stored(aconn, "agents", {"simulation_id": SIM, "agent_id": agent.agent_id})
        assert [comparable(f) for f in found] == [comparable(agent.model_dump())]


async def test_experiment_simulation_config_and_environment_writers(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    e = await repo.create_experiment(
        aconn, "e-rt", "name-1", description="description-2", hypothesis="hypothesis-3",
        variables={"v": 4}, tags={"t": 5}, metadata={"m": 6}, folder_path="folder-7",
    )  # fmt: skip
    assert (e.name, e.description, e.hypothesis, e.variables, e.tags, e.metadata,
            e.folder_path) == ("name-1", "description-2", "hypothesis-3", {"v": 4}, {"t": 5},
                               {"m": 6}, "folder-7")  # fmt: skip
    assert await repo.get_experiment(aconn, "e-rt") == e
    s = await repo.create_simulation(
        aconn, "s-rt", experiment_id="e-rt", name="name-8", description="description-9",
        parameters={"p": 10}, metadata={"m": 11},
    )  # fmt: skip
    assert (s.experiment_id, s.name, s.description, s.parameters, s.metadata) == (
        "e-rt", "name-8", "description-9", {"p": 10}, {"m": 11},
    )  # fmt: skip
    assert await repo.get_simulation(aconn, "s-rt") == s
    u = await repo.update_simulation(
        aconn, "s-rt", name="name-12", description="description-13", parameters={"q": 14},
        metadata={"n": 15}, results_summary={"r": 16},
    )  # fmt: skip
    assert (u.name, u.description, u.parameters, u.metadata, u.results_summary) == (
        "name-12", "description-13", {"p": 10, "q": 14}, {"m": 11, "n": 15}, {"r": 16},
    )  # fmt: skip
    config = await repo.save_simulation_config(aconn, "s-rt", {"c": 17})
    assert (config.config_id, config.config) == (0, {"c": 17})
    env = await repo.save_environment_state(aconn, "s-rt", 18, {"w": 19})
    assert (env.step, env.state) == (18, {"w": 19})
    assert (await repo.get_environment_state(aconn, "s-rt", 18)).state == {"w": 19}
