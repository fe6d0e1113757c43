"""The AgentFarm experiment layer, synchronous as the farm is:

    from sim_schema.compat.farm import DatabaseFactory, ExperimentManager

instead of `from farm.database.experiment_integration import ...`. `ExperimentManager`
(a context manager: `create_simulation(simulation_id, parameters=...)`,
`complete_simulation(simulation_id, results_summary=...)`), `DatabaseFactory.create(...)`
(honouring `USE_EXPERIMENT_DB` and `EXPERIMENT_ID`) and `ExperimentDatabase(path,
experiment_id).create_simulation_context(simulation_id)` hand out contexts whose
`.logger` has the farm `DataLogger`'s calls: `log_step(step_number, agent_states,
resource_states, metrics)`, `log_agent`, `log_agent_action`, `log_health_incident`,
`log_learning_experience`, `log_resource`, `flush_all_buffers`.

Each call delegates to this module's `ExperimentManager` and `SimulationLogger`, run on
the shared runner of the settings (`SIM_SCHEMA_DSN`; `sim_schema.compat.close()`). The
database is the one `SIM_SCHEMA_DSN` names: the farm's file paths (`db_path`) are
accepted and ignored.

Durability: the farm's `log_step` writes its step when it is called; so does this one
(`flush_every_step=True`, the default: the call returns once the step is committed). With
`flush_every_step=False` a step is buffered like every other row here (committed within
`flush_interval`, 1 s, or at 1,000 rows), which is much faster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from .. import repositories as repo
from ..catalog import table
from ..importers.mapping import farm_state_step
from ..ingest.experiment import ExperimentManager as _Manager
from ..ingest.experiment import SimulationContext as _Context
from ..ingest.logger import SimulationLogger
from ..settings import Settings
from ._runner import Runner, runner

__all__ = ["DatabaseFactory", "ExperimentDatabase", "ExperimentManager", "SimulationContext"]

# The farm's tuple layouts: its tables' columns (seed 001) after step_number.
AGENT_STATE_FIELDS = (
    "agent_id", "position_x", "position_y", "position_z", "resource_level", "current_health",
    "is_defending", "total_reward", "age",
)  # fmt: skip
RESOURCE_STATE_FIELDS = ("resource_id", "amount", "position_x", "position_y")
_RENAMED = {"current_health": "health", "step_number": "step"}
_STATE_COLUMNS = frozenset(table("agent_states").names)
_STEP_COLUMNS = frozenset(table("simulation_steps").names) - {"simulation_id", "step", "metrics"}


_State = Sequence[Any] | Mapping[str, Any]


def _by_name(fields: tuple[str, ...], state: _State) -> Mapping[str, Any]:
    """A farm state tuple (in `fields` order) or mapping, as a mapping."""
    return state if isinstance(state, Mapping) else dict(zip(fields, state, strict=True))


def _agent_state(step: int, state: _State) -> dict[str, Any]:
    given = _by_name(AGENT_STATE_FIELDS, state)
    row: dict[str, Any] = {"step": step}
    extras: dict[str, Any] = {}
    for name, value in given.items():
        ours = _RENAMED.get(name, name)
        if ours in _STATE_COLUMNS:
            row[ours] = bool(value) if ours == "is_defending" else value
        else:
            extras[name] = value  # e.g. the farm code's starting_health, starvation_counter
    if extras:
        row["extras"] = extras
    return row


def _resource_state(step: int, state: _State) -> dict[str, Any]:
    return {"step": step, **_by_name(RESOURCE_STATE_FIELDS, state)}


class DataLogger:
    """The farm `DataLogger`'s calls for one simulation, over this module's logger."""

    def __init__(
        self, run: Runner, logger: SimulationLogger, *, flush_every_step: bool = True
    ) -> None:
        self._runner = run
        self._logger = logger
        self.simulation_id = logger.simulation_id
        self.flush_every_step = flush_every_step

    def log_step(
        self,
        step_number: int,
        agent_states: Iterable[_State],
        resource_states: Iterable[_State],
        metrics: Mapping[str, Any],
    ) -> None:
        """A whole step: the states of its agents and resources, as tuples in the farm's
        column order (`AGENT_STATE_FIELDS`, `RESOURCE_STATE_FIELDS`) or as mappings of the
        farm's column names, and its metrics (the simulation_steps columns by name; other
        keys go into `metrics`). Stored when it returns, unless `flush_every_step=False`."""
        states = [_agent_state(step_number, s) for s in agent_states]
        resources = [_resource_state(step_number, r) for r in resource_states]
        typed = {k: v for k, v in metrics.items() if k in _STEP_COLUMNS}
        rest = {k: v for k, v in metrics.items() if k not in _STEP_COLUMNS}
        log = self._logger

        async def step() -> None:
            await log.log_agent_states(states)
            await log.log_resource_states(resources)
            await log.log_step(step_number, metrics=rest or None, **typed)
            if self.flush_every_step:
                await log.flush()

        self._runner.run(step)

    def log_agent(
        self,
        agent_id: str,
        birth_time: int,
        agent_type: str,
        position: Sequence[float] | None = None,
        initial_resources: float | None = None,
        starting_health: float | None = None,
        starvation_threshold: int | None = None,
        genome_id: str | None = None,
        generation: int = 0,
        action_weights: Mapping[str, float] | None = None,
        *,
        starvation_counter: int | None = None,
    ) -> None:
        """Register an agent (`starvation_counter`, the farm code's name, is the same column;
        `action_weights` go into the agent's `config`)."""
        x, y = position if position is not None else (None, None)
        columns = {
            "birth_step": birth_time, "position_x": x, "position_y": y,
            "initial_resources": initial_resources, "starting_health": starting_health,
            "starvation_threshold": starvation_threshold if starvation_threshold is not None
            else starvation_counter,
            "genome_id": genome_id, "generation": generation,
            "config": {"action_weights": dict(action_weights)} if action_weights else {},
        }  # fmt: skip
        self._runner.run(lambda: self._logger.log_agent(agent_id, agent_type, **columns))

    def log_agent_action(
        self,
        step_number: int,
        agent_id: str,
        action_type: str,
        action_target_id: str | None = None,
        state_before_id: str | int | None = None,
        state_after_id: str | int | None = None,
        resources_before: float | None = None,
        resources_after: float | None = None,
        reward: float | None = None,
        details: Any = None,
    ) -> None:
        """One action; the state ids ("agent_id-step") become the steps of those states."""
        columns = {
            "action_target_id": action_target_id,
            "state_before_step": farm_state_step.value(state_before_id),
            "state_after_step": farm_state_step.value(state_after_id),
            "resources_before": resources_before, "resources_after": resources_after,
            "reward": reward, "details": details,
        }  # fmt: skip
        self._runner.run(
            lambda: self._logger.log_action(step_number, agent_id, str(action_type), **columns)
        )

    def log_health_incident(
        self,
        step_number: int,
        agent_id: str,
        health_before: float,
        health_after: float,
        cause: str,
        details: Any = None,
    ) -> None:
        columns = {"health_before": health_before, "health_after": health_after,
                   "details": details}  # fmt: skip
        self._runner.run(
            lambda: self._logger.log_health_incident(step_number, agent_id, cause, **columns)
        )

    def log_learning_experience(
        self,
        step_number: int,
        agent_id: str,
        module_type: str,
        module_id: Any,
        action_taken: int,
        action_taken_mapped: str,
        reward: float,
    ) -> None:
        columns = {"module_id": None if module_id is None else str(module_id),
                   "action_taken": action_taken, "action_taken_mapped": action_taken_mapped,
                   "reward": reward}  # fmt: skip
        self._runner.run(
            lambda: self._logger.log_learning_experience(
                step_number, agent_id, module_type, **columns
            )
        )

    def log_resource(
        self, resource_id: int, initial_amount: float, position: Sequence[float]
    ) -> None:
        """A resource's state at step 0."""
        x, y = position
        self._runner.run(
            lambda: self._logger.log_resource_state(
                0, resource_id, initial_amount, position_x=x, position_y=y
            )
        )

    def flush_all_buffers(self) -> None:
        """Write everything logged so far (returns once it is committed)."""
        self._runner.run(self._logger.flush)


class SimulationContext:
    """One simulation: `.logger` (the farm's calls), `flush_all_buffers()`, `close()`."""

    def __init__(self, run: Runner, context: _Context, *, flush_every_step: bool) -> None:
        self._runner = run
        self._context = context
        self.simulation_id = context.simulation_id
        self.logger = DataLogger(run, context.logger, flush_every_step=flush_every_step)

    def flush_all_buffers(self) -> None:
        self.logger.flush_all_buffers()

    def close(self) -> None:
        """Flush, and complete the simulation if it is still running (the farm's
        `db.close()` at the end of a run)."""

        async def finish() -> None:
            await self._context.finish(None)

        self._runner.run(finish)


class ExperimentManager:
    """An experiment and its simulations, as the farm's `ExperimentManager`:

    >>> with ExperimentManager(experiment_id="exp_001") as manager:
    ...     ctx = manager.create_simulation("sim_1", parameters={"lr": 0.1})
    ...     ctx.logger.log_step(0, [("a1", 1.0, 2.0, 0.0, 5.0, 100.0, 0, 0.0, 0)], [], {})
    ...     manager.complete_simulation("sim_1", results_summary={"score": 1.0})

    On exit the simulations still running are completed (or failed, after an exception)
    and the experiment with them. `reopen=True` opens a completed experiment for more runs.
    """

    def __init__(
        self,
        experiment_id: str,
        name: str | None = None,
        description: str | None = None,
        db_path: str | None = None,
        *,
        hypothesis: str | None = None,
        variables: dict[str, Any] | None = None,
        reopen: bool = False,
        flush_every_step: bool = True,
        settings: Settings | None = None,
    ) -> None:
        del db_path  # one database for every experiment: the one SIM_SCHEMA_DSN names
        self._runner = runner(settings)
        self.experiment_id = experiment_id
        self.flush_every_step = flush_every_step
        self._manager = _Manager(
            self._runner.store, experiment_id, name=name, description=description,
            hypothesis=hypothesis, variables=variables, reopen=reopen,
        )  # fmt: skip
        self._opened = False

    def _open(self) -> None:
        if not self._opened:
            self._runner.run(self._manager.open)
            self._opened = True

    def create_simulation(
        self, simulation_id: str, parameters: dict[str, Any] | None = None
    ) -> SimulationContext:
        """A new, running simulation of the experiment; its context."""
        self._open()
        context = self._runner.run(
            lambda: self._manager.create_simulation(simulation_id, parameters=parameters)
        )
        return SimulationContext(self._runner, context, flush_every_step=self.flush_every_step)

    def complete_simulation(
        self, simulation_id: str, results_summary: dict[str, Any] | None = None
    ) -> None:
        """Flush the simulation's rows and mark it completed with its results."""
        self._runner.run(
            lambda: self._manager.complete_simulation(
                simulation_id, results_summary=results_summary
            )
        )

    def close(self, exc: BaseException | None = None) -> None:
        """Finish every simulation, then complete (or, after `exc`, fail) the experiment."""
        self._open()
        self._runner.run(lambda: self._manager.close(exc))

    def __enter__(self) -> ExperimentManager:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)


class ExperimentDatabase(ExperimentManager):
    """The farm's `ExperimentDatabase(db_path, experiment_id)`: `create_simulation_context`
    is `create_simulation`; `close()` finishes the experiment."""

    def __init__(self, db_path: str, experiment_id: str, **options: Any) -> None:
        super().__init__(experiment_id, db_path=db_path, **options)

    def create_simulation_context(self, simulation_id: str) -> SimulationContext:
        return self.create_simulation(simulation_id)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class DatabaseFactory:
    """The farm's `DatabaseFactory`: a database for one simulation."""

    @staticmethod
    def create(
        config: Any = None,
        simulation_id: str | None = None,
        use_experiment_db: bool | None = None,
        experiment_id: str | None = None,
        db_path: str | None = None,
        *,
        flush_every_step: bool = True,
        settings: Settings | None = None,
    ) -> SimulationContext:
        """A new, running simulation and its context (`.logger`, `.close()`).

        `use_experiment_db` (default: the `USE_EXPERIMENT_DB` variable, "1" or "true")
        puts it in experiment `experiment_id` (default: `EXPERIMENT_ID`, else
        "default_experiment"), created if missing; without it the simulation belongs to no
        experiment. `simulation_id` defaults to "sim_<unix time>". `config` is stored as
        the simulation's first config (if it is JSON: a dict, or an object with `to_dict()`).
        """
        del db_path
        run = runner(settings)
        grouped = _flag(os.environ.get("USE_EXPERIMENT_DB")) if use_experiment_db is None else (
            use_experiment_db
        )  # fmt: skip
        experiment = (experiment_id or os.environ.get("EXPERIMENT_ID") or "default_experiment"
                      ) if grouped else None  # fmt: skip
        sim_id = simulation_id or f"sim_{int(time.time())}"
        as_dict = getattr(config, "to_dict", None)
        stored_config = as_dict() if callable(as_dict) else config

        async def begin() -> _Context:
            async with run.store.connection() as conn:
                if experiment is not None:
                    found = await repo.get_or_create_experiment(conn, experiment, experiment)
                    if found.status.value == "created":
                        await repo.start_experiment(conn, experiment)
                await repo.create_simulation(conn, sim_id, experiment_id=experiment)
                if stored_config is not None:
                    await repo.save_simulation_config(conn, sim_id, stored_config)
                await repo.start_simulation(conn, sim_id)
            return _Context(run.store, sim_id, SimulationLogger(run.store, sim_id))

        return SimulationContext(run, run.run(begin), flush_every_step=flush_every_step)

