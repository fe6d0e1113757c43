"""Read path: typed, parameterized queries over one simulation or across many.

Every function takes an `AsyncConnection` from `Store.connection()` and filters by
simulation (or by a set of simulations / an experiment for the cross-simulation ones).
The SQL lives once, in the library `sql/` (`sim_schema.read.sqllib`): each function here
runs its named file. Rows of a table come back as that table's records
(`sim_schema.models`: `AgentState`, `AgentAction`, `EnvironmentState`, every column,
JSONB included); aggregates as small frozen dataclasses. The large results (agent
history, step snapshot, actions, metric comparison) are async iterators that fetch in
chunks, so memory stays flat whatever the size. The two queries over a metric chosen at
run time (`compare_metric`, `aggregate_by_parameter`) are built here, from a name checked
against the catalog before it becomes an identifier.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from .. import catalog
from ..errors import ConfigurationError, NotFound
from ..models import AgentAction, AgentState, EnvironmentState, Record, record_rows
from ..paging import Cursor, check_limit, cursor_values
from . import sqllib

Conn = psycopg.AsyncConnection[Any]
T = TypeVar("T")
R = TypeVar("R", bound=Record)

# --- result types of the aggregates --------------------------------------------------


@dataclass(frozen=True, slots=True)
class PopulationPoint:
    step: int
    agent_type: str
    agents: int
    average_health: float | None


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

    decisions: int
    mean_processing_time: float | None
    rated: int
    mean_rating: float | None
    agent_id: str | None = None
    step: int | None = None


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
    value: int | float | None  # an integer column's value stays an int


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
    value: Any  # the parameter's value as stored (JSON): 1, 0.5, "fast", None if absent
    simulations: int
    mean: float | None
    minimum: int | float | None  # of the metric's own type
    maximum: int | float | None


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    experiment_id: str
    name: str
    status: str
    description: str | None
    simulations: int
    created_at: datetime
    completed_at: datetime | None


# --- running the library ---------------------------------------------------------------

_library = sqllib.bound
_fetch = sqllib.fetch_async
_stream = sqllib.stream_async


async def _run(conn: Conn, cls: type[T], name: str, **params: Any) -> list[T]:
    return await _fetch(conn, class_row(cls), *_library(name, params))


def _records(conn: Conn, model: type[R], name: str, **params: Any) -> AsyncGenerator[R, None]:
    return _stream(conn, record_rows(model), *_library(name, params))


ACTION_ORDER = ("step", "agent_id", "ordinal")


def _after(order: Sequence[str], after: Cursor | None, limit: int | None) -> list[Any]:
    """The page parameters of a library query: the cursor's values (None: from the start)."""
    check_limit(limit)
    return [None] * len(order) if after is None else cursor_values(order, after)


# --- one simulation ----------------------------------------------------------------


def agent_history(
    conn: Conn,
    simulation_id: str,
    agent_id: str,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> AsyncGenerator[AgentState, None]:
    """An agent's states in step order, every column, streamed (`sql/agent_history.sql`);
    at most `limit`, those after `after` (a state, or a mapping with its `step`)."""
    [after_step] = _after(("step",), after, limit)
    return _records(
        conn, AgentState, "agent_history", simulation_id=simulation_id, agent_id=agent_id,
        start_step=start_step, end_step=end_step, after_step=after_step, limit=limit,
    )  # fmt: skip


def step_snapshot(
    conn: Conn,
    simulation_id: str,
    step: int,
    *,
    limit: int | None = None,
    after: Cursor | None = None,
) -> AsyncGenerator[AgentState, None]:
    """Every agent's state at one step, in agent_id order, streamed
    (`sql/step_snapshot.sql`); at most `limit`, those after `after` (its `agent_id`)."""
    [after_agent_id] = _after(("agent_id",), after, limit)
    return _records(
        conn, AgentState, "step_snapshot", simulation_id=simulation_id, step=step,
        after_agent_id=after_agent_id, limit=limit,
    )  # fmt: skip


def actions(
    conn: Conn,
    simulation_id: str,
    *,
    agent_id: str | None = None,
    step: int | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    action_type: str | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> AsyncGenerator[AgentAction, None]:
    """Actions in (step, agent_id, ordinal) order, filtered by any mix of agent, step(s)
    and type (`sql/agent_actions.sql`); at most `limit`, those after `after`."""
    after_step, after_agent_id, after_ordinal = _after(ACTION_ORDER, after, limit)
    return _records(
        conn, AgentAction, "agent_actions", simulation_id=simulation_id, agent_id=agent_id,
        action_type=action_type, step=step, start_step=start_step, end_step=end_step,
        after_step=after_step, after_agent_id=after_agent_id, after_ordinal=after_ordinal,
        limit=limit,
    )  # fmt: skip


async def population_over_time(conn: Conn, simulation_id: str) -> list[PopulationPoint]:
    """Agents alive (state rows) per step and agent type, with their mean health."""
    return await _run(conn, PopulationPoint, "population_by_type", simulation_id=simulation_id)


async def births_and_deaths(conn: Conn, simulation_id: str) -> list[BirthsDeaths]:
    """Steps where agents were born (birth_step > 0) or died, with both counts."""
    return await _run(conn, BirthsDeaths, "births_and_deaths", simulation_id=simulation_id)


async def agent_lifespans(conn: Conn, simulation_id: str) -> list[Lifespan]:
    """Every agent's birth, death and lifespan (None while alive)."""
    return await _run(conn, Lifespan, "agent_lifespans", simulation_id=simulation_id)


async def resource_totals(conn: Conn, simulation_id: str) -> list[ResourceTotal]:
    """Sum of resource_states.amount and number of resource sites per step."""
    return await _run(conn, ResourceTotal, "resource_totals", simulation_id=simulation_id)


async def learning_progress(
    conn: Conn, simulation_id: str, *, bucket_size: int = 100
) -> list[LearningPoint]:
    """Mean reward per module type per bucket of `bucket_size` steps."""
    if bucket_size < 1:
        raise ConfigurationError(f"bucket_size must be at least 1, got {bucket_size}")
    return await _run(
        conn, LearningPoint, "learning_progress", simulation_id=simulation_id,
        bucket_size=bucket_size,
    )  # fmt: skip


async def health_incidents_by_cause(conn: Conn, simulation_id: str) -> list[HealthCause]:
    """Incidents, distinct agents and mean health change per cause, most frequent first."""
    return await _run(conn, HealthCause, "health_by_cause", simulation_id=simulation_id)


_DECISION_QUERIES = {
    "simulation": "decision_totals",
    "agent": "decision_statistics",
    "step": "decision_statistics_by_step",
}


async def decision_statistics(
    conn: Conn, simulation_id: str, *, by: Literal["simulation", "agent", "step"] = "simulation"
) -> list[DecisionStats]:
    """Decision count, mean processing time and ratings, overall or per agent / per step."""
    if by not in _DECISION_QUERIES:
        raise ConfigurationError(
            f"decision statistics by {by!r}: use one of {', '.join(_DECISION_QUERIES)}"
        )
    return await _run(conn, DecisionStats, _DECISION_QUERIES[by], simulation_id=simulation_id)


async def environment_diff(
    conn: Conn, simulation_id: str, from_step: int, to_step: int
) -> EnvironmentDiff:
    """What changed between the environment states of two steps (recursive into objects)."""
    states: dict[int, Any] = {}
    for step in (from_step, to_step):
        rows = await _fetch(
            conn,
            record_rows(EnvironmentState),
            *_library("environment_at", {"simulation_id": simulation_id, "step": step}),
        )
        if not rows:
            raise NotFound(f"simulation {simulation_id!r} has no environment state at step {step}")
        states[step] = rows[0].state
    diff = EnvironmentDiff(from_step, to_step)
    _diff_into(diff, states[from_step], states[to_step], "")
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


def step_metric_columns() -> list[str]:
    """The numeric columns of simulation_steps (from the catalog): the valid metric names."""
    numeric = {"integer", "bigint", "double precision"}
    return [
        c.name
        for c in catalog.table("simulation_steps").columns
        if c.type in numeric and c.name != "step"
    ]


def _scope(
    simulation_ids: Sequence[str] | None, experiment_id: str | None
) -> tuple[sql.Composed, list[Any]]:
    """A filter on simulations `s`: a set of ids, an experiment, both, or (neither) all."""
    parts: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if simulation_ids is not None:
        parts.append(sql.SQL(" AND s.simulation_id = ANY(%s)"))
        params.append(list(simulation_ids))
    if experiment_id is not None:
        parts.append(sql.SQL(" AND s.experiment_id = %s"))
        params.append(experiment_id)
    return sql.Composed(parts), params


async def _metric_keys(
    conn: Conn, simulation_ids: Sequence[str] | None, experiment_id: str | None
) -> list[str]:
    """Keys of the metrics JSON in the selected simulations (sampled from their first rows)."""
    scope, params = _scope(simulation_ids, experiment_id)
    query = sql.SQL(
        "SELECT DISTINCT k FROM (SELECT st.metrics FROM simulation_steps st"
        " JOIN simulations s USING (simulation_id) WHERE {} AND jsonb_typeof(st.metrics) = 'object'"
        " LIMIT 1000) m, jsonb_object_keys(m.metrics) k ORDER BY k"
    ).format(scope)
    return [r[0] for r in await _fetch(conn, _tuples, query, params)]


async def _has_metric_key(
    conn: Conn, key: str, simulation_ids: Sequence[str] | None, experiment_id: str | None
) -> bool:
    """The exact check behind the sample: does any selected step have this metrics key?"""
    scope, params = _scope(simulation_ids, experiment_id)
    query = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM simulation_steps st JOIN simulations s"
        " USING (simulation_id) WHERE {} AND st.metrics ? %s)"
    ).format(scope)
    rows = await _fetch(conn, _tuples, query, [*params, key])
    return bool(rows[0][0])


def _tuples(cursor: Any) -> Any:
    return tuple


async def metric_expression(
    conn: Conn,
    metric: str,
    *,
    simulation_ids: Sequence[str] | None = None,
    experiment_id: str | None = None,
) -> tuple[sql.Composable, list[Any]]:
    """The SQL for a step metric: a catalog column, or a numeric key of `metrics` jsonb,
    written `name` or `metrics.name`. Any other name raises ConfigurationError quoting it
    as given and listing every valid name.

    Values keep their type: an integer column's are integers, a `metrics` key's are the
    JSON numbers as logged (jsonb; `::float8` where an average is taken)."""
    columns = step_metric_columns()
    name = metric.removeprefix("metrics.")
    if metric in columns:
        return sql.SQL("st.{}").format(sql.Identifier(metric)), []
    keys = await _metric_keys(conn, simulation_ids, experiment_id)
    if name in keys or await _has_metric_key(conn, name, simulation_ids, experiment_id):
        # a non-numeric value reads as NULL instead of failing the whole query
        return sql.SQL(
            "CASE WHEN jsonb_typeof(st.metrics -> %s) = 'number' THEN st.metrics -> %s END"
        ), [name, name]
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
    limit: int | None = None,
    after: Cursor | None = None,
) -> AsyncGenerator[MetricPoint, None]:
    """A step metric over time for each selected simulation, streamed in (simulation_id,
    step) order; at most `limit` points, those after `after` (a `MetricPoint`).

    `metric` is a numeric column of simulation_steps or a key of its `metrics` JSON
    (optionally written `metrics.<key>`); it is validated before the query is built.
    """
    after_sim, after_step = _after(("simulation_id", "step"), after, limit)
    expr, expr_params = await metric_expression(
        conn, metric, simulation_ids=simulation_ids, experiment_id=experiment_id
    )
    scope, params = _scope(simulation_ids, experiment_id)
    bounds: list[sql.Composable] = []
    if start_step is not None:
        bounds.append(sql.SQL(" AND st.step >= %s"))
        params.append(start_step)
    if end_step is not None:
        bounds.append(sql.SQL(" AND st.step <= %s"))
        params.append(end_step)
    if after is not None:
        bounds.append(sql.SQL(" AND (st.simulation_id, st.step) > (%s, %s)"))
        params += [after_sim, after_step]
    query = sql.SQL(
        "SELECT st.simulation_id, st.step, {} AS value FROM simulation_steps st"
        " JOIN simulations s USING (simulation_id) WHERE {}{} ORDER BY st.simulation_id, st.step"
    ).format(expr, scope, sql.Composed(bounds))
    if limit is not None:
        query += sql.SQL(" LIMIT %s")
        params.append(limit)
    stream = _stream(conn, class_row(MetricPoint), query, [*expr_params, *params])
    async with aclosing(stream):  # a caller that stops early frees the connection at once
        async for point in stream:
            yield point


async def simulation_summaries(
    conn: Conn, *, simulation_ids: Sequence[str] | None = None, experiment_id: str | None = None
) -> list[SimulationSummary]:
    """One row of the simulation_summary view per selected simulation (final-step summary)."""
    return await _run(
        conn, SimulationSummary, "simulation_summaries",
        simulation_ids=None if simulation_ids is None else list(simulation_ids),
        experiment_id=experiment_id,
    )  # fmt: skip


final_summary = simulation_summaries


async def aggregate_by_parameter(
    conn: Conn,
    parameter: str,
    metric: str,
    *,
    simulation_ids: Sequence[str] | None = None,
    experiment_id: str | None = None,
) -> list[ParameterAggregate]:
    """The final-step value of `metric`, aggregated over simulations grouped by a parameter
    (its value as stored: a number stays a number, and numbers sort as numbers)."""
    scope, params = _scope(simulation_ids, experiment_id)
    keys_query = sql.SQL(
        "SELECT DISTINCT k FROM simulations s, jsonb_object_keys(s.parameters) k"
        " WHERE {} AND jsonb_typeof(s.parameters) = 'object' ORDER BY k"
    ).format(scope)
    keys = [r[0] for r in await _fetch(conn, _tuples, keys_query, params)]
    if parameter not in keys:
        raise ConfigurationError(
            f"unknown simulation parameter {parameter!r}; valid: {', '.join(keys) or '(none)'}"
        )
    expr, expr_params = await metric_expression(
        conn, metric, simulation_ids=simulation_ids, experiment_id=experiment_id
    )
    query = sql.SQL(
        """
        SELECT f.value, count(*)::int AS simulations, avg(f.metric::float8) AS mean,
               -- min and max that keep the type (jsonb has an order but no min/max)
               (array_agg(f.metric ORDER BY f.metric) FILTER (WHERE f.metric IS NOT NULL))[1]
                   AS minimum,
               (array_agg(f.metric ORDER BY f.metric DESC)
                   FILTER (WHERE f.metric IS NOT NULL))[1] AS maximum
        FROM (
            SELECT s.parameters -> %s AS value, last.metric
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
    return await _fetch(
        conn, class_row(ParameterAggregate), query, [parameter, *expr_params, *params]
    )


async def experiments(conn: Conn, experiment_id: str | None = None) -> list[ExperimentInfo]:
    """Experiments (or one) with their number of simulations."""
    rows = await _run(conn, ExperimentInfo, "experiments", experiment_id=experiment_id)
    if experiment_id is not None and not rows:
        raise NotFound(f"experiment {experiment_id!r} not found")
    return rows
