"""Read path: typed, parameterized queries over one simulation or across many.

Every function takes an `AsyncConnection` whose search_path is the module schema (what
`Store.connection()` gives) and filters by simulation (or by a set of simulations / an
experiment for the cross-simulation ones). Results are small frozen dataclasses built by
psycopg's `class_row`; the large ones (agent history, step snapshot, actions, metric
comparison) are async iterators over `cursor.stream()`, so memory stays flat whatever the
size. A metric name is checked against the catalog before it becomes an identifier.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, LiteralString, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from ..errors import ConfigurationError, NotFound

Conn = psycopg.AsyncConnection[Any]
T = TypeVar("T")

_NUMERIC_TYPES = ("int2", "int4", "int8", "float4", "float8", "numeric")


# --- result types ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentState:
    simulation_id: str
    step: int
    agent_id: str
    position_x: float | None
    position_y: float | None
    position_z: float | None
    resource_level: float | None
    health: float | None
    is_defending: bool
    total_reward: float | None
    age: int | None


@dataclass(frozen=True, slots=True)
class Action:
    simulation_id: str
    step: int
    action_id: int
    agent_id: str
    action_type: str
    action_target_id: str | None
    resources_before: float | None
    resources_after: float | None
    reward: float | None
    details: Any


@dataclass(frozen=True, slots=True)
class PopulationPoint:
    step: int
    agent_type: str
    agents: int


@dataclass(frozen=True, slots=True)
class BirthsDeaths:
    step: int
    births: int
    deaths: int


@dataclass(frozen=True, slots=True)
class Lifespan:
    agent_id: str
    agent_type: str
    birth_step: int
    death_step: int | None
    lifespan: int | None


@dataclass(frozen=True, slots=True)
class ResourceTotal:
    step: int
    total_amount: float
    resource_sites: int


@dataclass(frozen=True, slots=True)
class LearningPoint:
    module_type: str
    bucket_start: int
    experiences: int
    mean_reward: float | None


@dataclass(frozen=True, slots=True)
class HealthCause:
    cause: str
    incidents: int
    agents: int
    mean_health_change: float | None


@dataclass(frozen=True, slots=True)
class DecisionStats:
    """Counts for the whole simulation, one agent (`agent_id`) or one step (`step`)."""

    agent_id: str | None
    step: int | None
    decisions: int
    mean_processing_time: float | None
    rated: int
    mean_rating: float | None


@dataclass(frozen=True, slots=True)
class EnvironmentState:
    simulation_id: str
    step: int
    state: Any
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EnvironmentDiff:
    """Changes from one state to another; keys are dotted paths into nested objects."""

    from_step: int
    to_step: int
    added: dict[str, Any] = field(default_factory=dict)
    removed: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricPoint:
    simulation_id: str
    step: int
    value: float | None


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    simulation_id: str
    experiment_id: str | None
    name: str | None
    status: str
    parameters: Any
    step_count: int | None
    agents: int
    initial_agents: int
    births: int
    deaths: int
    final_step: int | None
    final_total_agents: int | None
    final_total_resources: float | None
    final_average_agent_health: float | None
    final_average_reward: float | None


@dataclass(frozen=True, slots=True)
class ParameterAggregate:
    value: str | None
    simulations: int
    mean: float | None
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    experiment_id: str
    name: str
    status: str
    description: str | None
    simulations: int
    created_at: datetime
    completed_at: datetime | None


# --- helpers -----------------------------------------------------------------------

Query = LiteralString | sql.Composed


async def _all(conn: Conn, cls: type[T], query: Query, params: Sequence[Any]) -> list[T]:
    async with conn.cursor(row_factory=class_row(cls)) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _stream(
    conn: Conn, cls: type[T], query: Query, params: Sequence[Any]
) -> AsyncGenerator[T, None]:
    async with conn.cursor(row_factory=class_row(cls)) as cur:
        async for row in cur.stream(query, params):
            yield row


def _step_range(start_step: int | None, end_step: int | None) -> tuple[sql.Composed, list[Any]]:
    """Only the bounds given appear in the WHERE clause, so each shape plans on its index."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    if start_step is not None:
        parts.append(sql.SQL(" AND step >= %s"))
        params.append(start_step)
    if end_step is not None:
        parts.append(sql.SQL(" AND step <= %s"))
        params.append(end_step)
    return sql.Composed(parts), params


def _scope(
    simulation_ids: Sequence[str] | None, experiment_id: str | None, alias: LiteralString = "s"
) -> tuple[sql.Composed, list[Any]]:
    """A filter on simulations: a set of ids, an experiment, both, or (neither) all."""
    parts: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    col = sql.Identifier(alias)
    if simulation_ids is not None:
        parts.append(sql.SQL(" AND {}.simulation_id = ANY(%s)").format(col))
        params.append(list(simulation_ids))
    if experiment_id is not None:
        parts.append(sql.SQL(" AND {}.experiment_id = %s").format(col))
        params.append(experiment_id)
    return sql.Composed(parts), params


_STATE_COLUMNS: LiteralString = (
    "simulation_id, step, agent_id, position_x, position_y, position_z, resource_level, "
    "health, is_defending, total_reward, age"
)


# --- one simulation ----------------------------------------------------------------


def agent_history(
    conn: Conn,
    simulation_id: str,
    agent_id: str,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
) -> AsyncGenerator[AgentState, None]:
    """An agent's states in step order (index agent_states_by_agent_idx), streamed."""
    bounds, extra = _step_range(start_step, end_step)
    query = sql.SQL(
        "SELECT " + _STATE_COLUMNS + " FROM agent_states"
        " WHERE simulation_id = %s AND agent_id = %s{} ORDER BY step"
    ).format(bounds)
    return _stream(conn, AgentState, query, [simulation_id, agent_id, *extra])


def step_snapshot(conn: Conn, simulation_id: str, step: int) -> AsyncGenerator[AgentState, None]:
    """Every agent's state at one step (a primary-key range scan), streamed."""
    query: LiteralString = (
        "SELECT " + _STATE_COLUMNS + " FROM agent_states"
        " WHERE simulation_id = %s AND step = %s ORDER BY agent_id"
    )
    return _stream(conn, AgentState, query, [simulation_id, step])


def actions(
    conn: Conn,
    simulation_id: str,
    *,
    agent_id: str | None = None,
    step: int | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    action_type: str | None = None,
) -> AsyncGenerator[Action, None]:
    """Actions in (step, action_id) order, filtered by any mix of agent, step(s) and type."""
    conditions: list[sql.Composable] = []
    params: list[Any] = [simulation_id]
    for column, value in (("agent_id", agent_id), ("step", step), ("action_type", action_type)):
        if value is not None:
            conditions.append(sql.SQL(" AND {} = %s").format(sql.Identifier(column)))
            params.append(value)
    bounds, extra = _step_range(start_step, end_step)
    query = sql.SQL(
        "SELECT simulation_id, step, action_id, agent_id, action_type, action_target_id,"
        " resources_before, resources_after, reward, details FROM agent_actions"
        " WHERE simulation_id = %s{}{} ORDER BY step, action_id"
    ).format(sql.Composed(conditions), bounds)
    return _stream(conn, Action, query, [*params, *extra])


async def population_over_time(conn: Conn, simulation_id: str) -> list[PopulationPoint]:
    """Agents alive (state rows) per step and agent type."""
    return await _all(
        conn,
        PopulationPoint,
        "SELECT step, agent_type, agents FROM population_by_step"
        " WHERE simulation_id = %s ORDER BY step, agent_type",
        [simulation_id],
    )


async def births_and_deaths(conn: Conn, simulation_id: str) -> list[BirthsDeaths]:
    """Steps where agents were born (birth_step > 0) or died, with both counts."""
    return await _all(
        conn,
        BirthsDeaths,
        """
        SELECT step, count(*) FILTER (WHERE kind = 'birth') AS births,
               count(*) FILTER (WHERE kind = 'death') AS deaths
        FROM (
            SELECT birth_step AS step, 'birth' AS kind FROM agents
            WHERE simulation_id = %s AND birth_step > 0
            UNION ALL
            SELECT death_step, 'death' FROM agents
            WHERE simulation_id = %s AND death_step IS NOT NULL
        ) e
        GROUP BY step ORDER BY step
        """,
        [simulation_id, simulation_id],
    )


async def agent_lifespans(conn: Conn, simulation_id: str) -> list[Lifespan]:
    """Every agent's birth, death and lifespan (None while alive)."""
    return await _all(
        conn,
        Lifespan,
        "SELECT agent_id, agent_type, birth_step, death_step, lifespan FROM agent_lifespans"
        " WHERE simulation_id = %s ORDER BY agent_id",
        [simulation_id],
    )


async def resource_totals(conn: Conn, simulation_id: str) -> list[ResourceTotal]:
    """Sum of resource_states.amount and number of resource sites per step."""
    return await _all(
        conn,
        ResourceTotal,
        "SELECT step, sum(amount) AS total_amount, count(*)::int AS resource_sites"
        " FROM resource_states WHERE simulation_id = %s GROUP BY step ORDER BY step",
        [simulation_id],
    )


async def learning_progress(
    conn: Conn, simulation_id: str, *, bucket_size: int = 100
) -> list[LearningPoint]:
    """Mean reward per module type per bucket of `bucket_size` steps."""
    if bucket_size < 1:
        raise ConfigurationError(f"bucket_size must be at least 1, got {bucket_size}")
    return await _all(
        conn,
        LearningPoint,
        """
        SELECT module_type, (step / %s) * %s AS bucket_start, count(*) AS experiences,
               avg(reward) AS mean_reward
        FROM learning_experiences WHERE simulation_id = %s
        GROUP BY module_type, bucket_start ORDER BY module_type, bucket_start
        """,
        [bucket_size, bucket_size, simulation_id],
    )


async def health_incidents_by_cause(conn: Conn, simulation_id: str) -> list[HealthCause]:
    """Incidents, distinct agents and mean health change per cause, most frequent first."""
    return await _all(
        conn,
        HealthCause,
        """
        SELECT cause, count(*) AS incidents, count(DISTINCT agent_id) AS agents,
               avg(health_after - health_before) AS mean_health_change
        FROM health_incidents WHERE simulation_id = %s
        GROUP BY cause ORDER BY incidents DESC, cause
        """,
        [simulation_id],
    )


async def decision_statistics(
    conn: Conn, simulation_id: str, *, by: Literal["simulation", "agent", "step"] = "simulation"
) -> list[DecisionStats]:
    """Decision count, mean processing time and ratings, overall or per agent / per step."""
    keys: dict[str, tuple[LiteralString, LiteralString]] = {
        "simulation": ("NULL::text AS agent_id, NULL::int AS step", ""),
        "agent": ("agent_id, NULL::int AS step", "GROUP BY agent_id ORDER BY agent_id"),
        "step": ("NULL::text AS agent_id, step", "GROUP BY step ORDER BY step"),
    }
    if by not in keys:
        raise ConfigurationError(f"decision statistics by {by!r}: use one of {', '.join(keys)}")
    select, group = keys[by]
    query: LiteralString = (
        "SELECT " + select + ", count(*) AS decisions,"
        " avg(processing_time) AS mean_processing_time, count(rating) AS rated,"
        " avg(rating) AS mean_rating FROM agent_decisions WHERE simulation_id = %s " + group
    )
    return await _all(conn, DecisionStats, query, [simulation_id])


async def latest_environment_state(conn: Conn, simulation_id: str) -> EnvironmentState | None:
    rows = await _all(
        conn,
        EnvironmentState,
        "SELECT simulation_id, step, state, created_at FROM environment_states"
        " WHERE simulation_id = %s ORDER BY step DESC LIMIT 1",
        [simulation_id],
    )
    return rows[0] if rows else None


async def environment_diff(
    conn: Conn, simulation_id: str, from_step: int, to_step: int
) -> EnvironmentDiff:
    """What changed between the environment states of two steps (recursive into objects)."""
    rows = await _all(
        conn,
        EnvironmentState,
        "SELECT simulation_id, step, state, created_at FROM environment_states"
        " WHERE simulation_id = %s AND step = ANY(%s)",
        [simulation_id, [from_step, to_step]],
    )
    by_step = {r.step: r.state for r in rows}
    for step in (from_step, to_step):
        if step not in by_step:
            raise NotFound(f"simulation {simulation_id!r} has no environment state at step {step}")
    diff = EnvironmentDiff(from_step, to_step)
    _diff_into(diff, by_step[from_step], by_step[to_step], "")
    return diff


def _diff_into(diff: EnvironmentDiff, old: Any, new: Any, path: str) -> None:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        if old != new:
            diff.changed[path or "."] = (old, new)
        return
    prefix = f"{path}." if path else ""
    for key in sorted(old.keys() - new.keys()):
        diff.removed[prefix + key] = old[key]
    for key in sorted(new.keys() - old.keys()):
        diff.added[prefix + key] = new[key]
    for key in sorted(old.keys() & new.keys()):
        _diff_into(diff, old[key], new[key], prefix + key)


# --- across simulations -------------------------------------------------------------


async def step_metric_columns(conn: Conn) -> list[str]:
    """Numeric columns of simulation_steps (from the catalog), the valid metric names."""
    cur = await conn.execute(
        """
        SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = to_regclass('simulation_steps') AND a.attnum > 0
          AND NOT a.attisdropped AND t.typname = ANY(%s) AND a.attname <> 'step'
        ORDER BY a.attnum
        """,
        [list(_NUMERIC_TYPES)],
    )
    return [r[0] for r in await cur.fetchall()]


async def _metric_keys(conn: Conn, simulation_ids: Sequence[str] | None,
                       experiment_id: str | None) -> list[str]:
    """Keys of the metrics JSON in the selected simulations (sampled from their first rows)."""
    scope, params = _scope(simulation_ids, experiment_id)
    query = sql.SQL(
        "SELECT DISTINCT k FROM (SELECT st.metrics FROM simulation_steps st"
        " JOIN simulations s USING (simulation_id) WHERE {} AND jsonb_typeof(st.metrics) = 'object'"
        " LIMIT 1000) m, jsonb_object_keys(m.metrics) k ORDER BY k"
    ).format(scope)
    cur = await conn.execute(query, params)
    return [r[0] for r in await cur.fetchall()]


async def _has_metric_key(conn: Conn, key: str, simulation_ids: Sequence[str] | None,
                          experiment_id: str | None) -> bool:
    """The exact check behind the sample: does any selected step have this metrics key?"""
    scope, params = _scope(simulation_ids, experiment_id)
    query = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM simulation_steps st JOIN simulations s"
        " USING (simulation_id) WHERE {} AND st.metrics ? %s)"
    ).format(scope)
    cur = await conn.execute(query, [*params, key])
    row = await cur.fetchone()
    return bool(row and row[0])


async def metric_expression(
    conn: Conn,
    metric: str,
    *,
    simulation_ids: Sequence[str] | None = None,
    experiment_id: str | None = None,
) -> tuple[sql.Composable, list[Any]]:
    """The SQL for a step metric: a validated column, or a numeric key of `metrics` jsonb.

    A name that is neither raises ConfigurationError listing every valid name.
    """
    columns = await step_metric_columns(conn)
    if not columns:
        raise NotFound("table simulation_steps not found: is the database migrated?")
    if metric in columns:
        return sql.SQL("st.{}::float8").format(sql.Identifier(metric)), []
    keys = await _metric_keys(conn, simulation_ids, experiment_id)
    if metric in keys or await _has_metric_key(conn, metric, simulation_ids, experiment_id):
        # a non-numeric value reads as NULL instead of failing the whole query
        return sql.SQL(
            "CASE WHEN jsonb_typeof(st.metrics -> %s) = 'number'"
            " THEN (st.metrics ->> %s)::float8 END"
        ), [metric, metric]
    valid = ", ".join([*columns, *(f"metrics.{k}" for k in keys)])
    raise ConfigurationError(f"unknown step metric {metric!r}; valid: {valid}")


async def compare_metric(
    conn: Conn,
    metric: str,
    *,
    simulation_ids: Sequence[str] | None = None,
    experiment_id: str | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
) -> AsyncGenerator[MetricPoint, None]:
    """A step metric over time for each selected simulation, streamed in (simulation, step) order.

    `metric` is a numeric column of simulation_steps or a key of its `metrics` JSON
    (optionally written `metrics.<key>`); it is validated before the query is built.
    """
    name = metric.removeprefix("metrics.")
    expr, expr_params = await metric_expression(
        conn, name, simulation_ids=simulation_ids, experiment_id=experiment_id
    )
    scope, params = _scope(simulation_ids, experiment_id)
    bounds, extra = _step_range(start_step, end_step)
    query = sql.SQL(
        "SELECT st.simulation_id, st.step, {} AS value FROM simulation_steps st"
        " JOIN simulations s USING (simulation_id) WHERE {}{} ORDER BY st.simulation_id, st.step"
    ).format(expr, scope, bounds)
    async for point in _stream(conn, MetricPoint, query, [*expr_params, *params, *extra]):
        yield point


async def simulation_summaries(
    conn: Conn, *, simulation_ids: Sequence[str] | None = None, experiment_id: str | None = None
) -> list[SimulationSummary]:
    """One row of the simulation_summary view per selected simulation (final-step summary)."""
    scope, params = _scope(simulation_ids, experiment_id)
    query = sql.SQL(
        "SELECT simulation_id, experiment_id, name, status, parameters, step_count, agents,"
        " initial_agents, births, deaths, final_step, final_total_agents,"
        " final_total_resources, final_average_agent_health, final_average_reward"
        " FROM simulation_summary s WHERE {} ORDER BY simulation_id"
    ).format(scope)
    return await _all(conn, SimulationSummary, query, params)


final_summary = simulation_summaries


async def aggregate_by_parameter(
    conn: Conn,
    parameter: str,
    metric: str,
    *,
    simulation_ids: Sequence[str] | None = None,
    experiment_id: str | None = None,
) -> list[ParameterAggregate]:
    """The final-step value of `metric`, aggregated over simulations grouped by a parameter."""
    scope, params = _scope(simulation_ids, experiment_id)
    keys_query = sql.SQL(
        "SELECT DISTINCT k FROM simulations s, jsonb_object_keys(s.parameters) k"
        " WHERE {} AND jsonb_typeof(s.parameters) = 'object' ORDER BY k"
    ).format(scope)
    cur = await conn.execute(keys_query, params)
    keys = [r[0] for r in await cur.fetchall()]
    if parameter not in keys:
        raise ConfigurationError(
            f"unknown simulation parameter {parameter!r}; valid: {', '.join(keys) or '(none)'}"
        )
    name = metric.removeprefix("metrics.")
    expr, expr_params = await metric_expression(
        conn, name, simulation_ids=simulation_ids, experiment_id=experiment_id
    )
    query = sql.SQL(
        """
        SELECT f.value, count(*)::int AS simulations, avg(f.metric) AS mean,
               min(f.metric) AS minimum, max(f.metric) AS maximum
        FROM (
            SELECT s.parameters ->> %s AS value, last.metric
            FROM simulations s
            LEFT JOIN LATERAL (
                SELECT {} AS metric FROM simulation_steps st
                WHERE st.simulation_id = s.simulation_id ORDER BY st.step DESC LIMIT 1
            ) last ON true
            WHERE {}
        ) f
        GROUP BY f.value ORDER BY f.value
        """
    ).format(expr, scope)
    return await _all(conn, ParameterAggregate, query, [parameter, *expr_params, *params])


async def experiments(conn: Conn, experiment_id: str | None = None) -> list[ExperimentInfo]:
    """Experiments (or one) with their number of simulations."""
    where: LiteralString = "WHERE e.experiment_id = %s" if experiment_id is not None else ""
    rows = await _all(
        conn,
        ExperimentInfo,
        "SELECT e.experiment_id, e.name, e.status, e.description,"
        " (SELECT count(*)::int FROM simulations s WHERE s.experiment_id = e.experiment_id)"
        " AS simulations, e.created_at, e.completed_at FROM experiments e "
        + where + " ORDER BY e.experiment_id",
        [experiment_id] if experiment_id is not None else [],
    )
    if experiment_id is not None and not rows:
        raise NotFound(f"experiment {experiment_id!r} not found")
    return rows
