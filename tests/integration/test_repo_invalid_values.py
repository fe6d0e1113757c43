"""Single-row repository writers refuse values PostgreSQL cannot store, inside our hierarchy."""

from __future__ import annotations

import math
from typing import Any

import psycopg
import pytest

from sim_schema import repositories as repo
from sim_schema.errors import ValidationError
from sim_schema.models import AgentCreate, SimulationStep


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("name", "nul\x00inside", "NUL"),
        ("profile", {"x": math.nan}, "json"),
        ("profile", {"x": "nul\x00inside"}, "NUL"),
        ("starvation_threshold", 2**40, "out of range"),
    ],
)
async def test_agent_with_unstorable_value_is_refused_and_nothing_written(
    aconn: psycopg.AsyncConnection[Any], field: str, value: object, reason: str
) -> None:
    await repo.create_simulation(aconn, "s1")
    agent = AgentCreate(simulation_id="s1", agent_id="a1", agent_type="t", **{field: value})
    with pytest.raises(ValidationError) as caught:
        await repo.register_agent(aconn, agent)
    assert reason.lower() in str(caught.value).lower()
    assert (caught.value.table, caught.value.row, caught.value.field) == ("agents", 0, field)
    assert await repo.find_agent(aconn, "s1", "a1") is None


async def test_step_metric_out_of_range_names_the_table(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    await repo.create_simulation(aconn, "s1")
    with pytest.raises(ValidationError) as caught:
        await repo.save_step_metrics(
            aconn, SimulationStep(simulation_id="s1", step=0, total_agents=2**31)
        )
    assert "out of range" in str(caught.value)
    assert (caught.value.table, caught.value.field) == ("simulation_steps", "total_agents")
    assert await repo.list_step_metrics(aconn, "s1") == []
