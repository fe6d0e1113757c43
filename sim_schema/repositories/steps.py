"""Per-step records, one row at a time: step metrics, resource states, learning
experiences, health incidents, interactions (bulk ingest goes through the COPY writer).

Step metrics and resource states have natural keys and are upserts; the other three are
event logs whose rows are numbered (`ordinal`: the n-th of the agent, or for interactions
of the step, at that step; the next one unless given) and are plain inserts.
"""

from __future__ import annotations

from ..errors import NotFound
from ..models import HealthIncident, Interaction, LearningExperience, ResourceState, SimulationStep
from ..paging import Cursor
from ._sql import Conn, R, insert_record, select_rows, upsert_clause, upsert_stored

_STEP_UPSERT = upsert_clause(("simulation_id", "step"), tuple(SimulationStep.model_fields))


def _returned(row: R | None) -> R:
    assert row is not None  # an INSERT (or upsert) ... RETURNING always returns its row
    return row


async def save_step_metrics(conn: Conn, metrics: SimulationStep) -> SimulationStep:
    """Write a step's metrics, replacing stored ones; `NotFound` if no simulation."""
    return _returned(await insert_record(conn, metrics, SimulationStep, on_conflict=_STEP_UPSERT))


async def get_step_metrics(conn: Conn, simulation_id: str, step: int) -> SimulationStep:
    """The metrics of `step`; `NotFound` if none were stored."""
    rows = await select_rows(
        conn, SimulationStep, {"simulation_id": simulation_id, "step": step}, order=("step",)
    )
    if not rows:
        raise NotFound(f"no step metrics at step {step} in simulation {simulation_id!r}")
    return rows[0]


async def list_step_metrics(
    conn: Conn,
    simulation_id: str,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[SimulationStep]:
    """Step metrics in step order, optionally within steps [start_step, end_step]; at most
    `limit`, those after `after`."""
    return await select_rows(
        conn,
        SimulationStep,
        {"simulation_id": simulation_id},
        order=("step",),
        start_step=start_step,
        end_step=end_step,
        limit=limit,
        after=after,
    )


async def save_resource_state(conn: Conn, state: ResourceState) -> ResourceState:
    """Write a resource's state at a step, replacing a stored one."""
    await upsert_stored(conn, state)
    return state


async def list_resource_states(
    conn: Conn,
    simulation_id: str,
    *,
    step: int | None = None,
    resource_id: int | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[ResourceState]:
    """Resource states in (step, resource_id) order: one step's snapshot or one resource's
    history; at most `limit`, those after `after`."""
    return await select_rows(
        conn,
        ResourceState,
        {"simulation_id": simulation_id, "step": step, "resource_id": resource_id},
        order=("step", "resource_id"),
        start_step=start_step,
        end_step=end_step,
        limit=limit,
        after=after,
    )


async def record_learning_experience(
    conn: Conn, experience: LearningExperience
) -> LearningExperience:
    """Insert one learning experience; the returned record carries its ordinal."""
    return _returned(
        await insert_record(conn, experience, LearningExperience, generated="ordinal")
    )


async def list_learning_experiences(
    conn: Conn,
    simulation_id: str,
    *,
    agent_id: str | None = None,
    module_type: str | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[LearningExperience]:
    """Learning experiences in (step, agent_id, ordinal) order, of one agent and/or module
    type if given; at most `limit`, those after `after`."""
    return await select_rows(
        conn,
        LearningExperience,
        {"simulation_id": simulation_id, "agent_id": agent_id, "module_type": module_type},
        order=("step", "agent_id", "ordinal"),
        start_step=start_step,
        end_step=end_step,
        limit=limit,
        after=after,
    )


async def record_health_incident(conn: Conn, incident: HealthIncident) -> HealthIncident:
    """Insert one health incident; the returned record carries its ordinal."""
    return _returned(await insert_record(conn, incident, HealthIncident, generated="ordinal"))


async def list_health_incidents(
    conn: Conn,
    simulation_id: str,
    *,
    agent_id: str | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[HealthIncident]:
    """Health incidents in (step, agent_id, ordinal) order, of one agent if given; at most
    `limit`, those after `after`."""
    return await select_rows(
        conn,
        HealthIncident,
        {"simulation_id": simulation_id, "agent_id": agent_id},
        order=("step", "agent_id", "ordinal"),
        start_step=start_step,
        end_step=end_step,
        limit=limit,
        after=after,
    )


async def record_interaction(conn: Conn, interaction: Interaction) -> Interaction:
    """Insert one interaction; the returned record carries its ordinal."""
    return _returned(
        await insert_record(conn, interaction, Interaction, generated="ordinal")
    )


async def list_interactions(
    conn: Conn,
    simulation_id: str,
    *,
    source_id: str | None = None,
    target_id: str | None = None,
    interaction_type: str | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[Interaction]:
    """Interactions in (step, ordinal) order, filtered by the arguments given; at most
    `limit`, those after `after`."""
    filters = {
        "simulation_id": simulation_id,
        "source_id": source_id,
        "target_id": target_id,
        "interaction_type": interaction_type,
    }
    return await select_rows(
        conn,
        Interaction,
        filters,
        order=("step", "ordinal"),
        start_step=start_step,
        end_step=end_step,
        limit=limit,
        after=after,
    )
