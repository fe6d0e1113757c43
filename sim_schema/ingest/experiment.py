"""ExperimentManager and SimulationContext: the lifecycle of runs, with a logger per run.

>>> async with ExperimentManager(store, "exp-1", name="grazing") as experiment:
...     sim = await experiment.create_simulation("exp-1-run-0", parameters={"seed": 0})
...     await sim.logger.log_agent("a1", "prey")
...     await sim.complete(step_count=10, results_summary={"survivors": 1})

On exit every logger is flushed and closed; simulations still running are completed
(clean exit) or failed (exception), then the experiment is marked the same way.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from .. import repositories as repo
from ..errors import AlreadyExists, LifecycleError, SimSchemaError
from ..models import Experiment, ExperimentStatus, Simulation, SimulationStatus
from ..store import Store
from .logger import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_PENDING_SECONDS,
    RetryPolicy,
    SimulationLogger,
)

_ACTIVE = (SimulationStatus.RUNNING, SimulationStatus.PAUSED)


class SimulationContext:
    """One simulation: its logger plus its lifecycle (`start`, `complete`, `fail`).

    Usable as an async context manager: completes on a clean exit, fails on an exception.
    """

    def __init__(self, store: Store, simulation_id: str, logger: SimulationLogger) -> None:
        self.store = store
        self.simulation_id = simulation_id
        self.logger = logger

    async def _status(self) -> SimulationStatus:
        async with self.store.connection() as conn:
            return (await repo.get_simulation(conn, self.simulation_id)).status

    async def start(self) -> Simulation:
        async with self.store.connection() as conn:
            return await repo.start_simulation(conn, self.simulation_id)

    async def complete(
        self, *, step_count: int | None = None, results_summary: dict[str, Any] | None = None
    ) -> Simulation:
        """Flush the logger, mark the simulation completed, close the logger.

        If the logger reports a failure, or the transition is refused, the simulation is
        left as it is (and the logger open) and the error raised.
        """
        await self.logger.flush()
        async with self.store.connection() as conn:
            done = await repo.complete_simulation(
                conn, self.simulation_id, step_count=step_count, results_summary=results_summary
            )
        await self.logger.close()
        return done

    async def fail(self, error: str, *, step_count: int | None = None) -> Simulation:
        """Mark the simulation failed; what was logged is still flushed (errors kept)."""
        try:
            await self.logger.close()
        except SimSchemaError as exc:
            error = f"{error}; and the logger failed: {exc}"
        async with self.store.connection() as conn:
            return await repo.fail_simulation(
                conn, self.simulation_id, error, step_count=step_count
            )

    async def finish(self, exc: BaseException | None) -> None:
        """Complete (exc None) or fail a simulation still running; close the logger.

        The logger is closed whatever happens here (reading the status can fail too), so
        its rows are flushed; a failure to close it is raised, or added as a note to the
        error that is already on its way.
        """
        failure: BaseException | None = None
        try:
            if await self._status() in _ACTIVE:
                if exc is None:
                    try:
                        await self.complete()
                    except SimSchemaError as error:
                        await self.fail(f"{type(error).__name__}: {error}")
                        raise
                else:
                    await self.fail(f"{type(exc).__name__}: {exc}")
        except BaseException as error:
            failure = error
            raise
        finally:
            try:
                await self.logger.close()
            except SimSchemaError as close_error:
                if failure is None:
                    raise
                failure.add_note(f"and closing the logger failed: {close_error}")

    async def __aenter__(self) -> SimulationContext:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.finish(exc)


class ExperimentManager:
    """Creates or opens an experiment and the simulations in it.

    Every simulation gets a `SimulationLogger` with the manager's logger settings; the
    contexts log concurrently, each with its own writer task and pooled connection.
    """

    def __init__(
        self,
        store: Store,
        experiment_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        hypothesis: str | None = None,
        variables: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        buffer_size: int = 1000,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_pending: int | None = None,
        max_pending_seconds: float | None = DEFAULT_MAX_PENDING_SECONDS,
        retry: RetryPolicy | None = None,
        reopen: bool = False,
    ) -> None:
        self.store = store
        self.experiment_id = experiment_id
        self.reopen = reopen
        self._create: dict[str, Any] = {
            "description": description,
            "hypothesis": hypothesis,
            "variables": variables,
            "tags": tags,
            "metadata": metadata,
        }
        self.name = name or experiment_id
        self._logger_options: dict[str, Any] = {
            "buffer_size": buffer_size,
            "flush_interval": flush_interval,
            "max_pending": max_pending,
            "max_pending_seconds": max_pending_seconds,
            "retry": retry,
        }
        self.simulations: dict[str, SimulationContext] = {}
        self.experiment: Experiment | None = None

    async def open(self) -> Experiment:
        """Create the experiment, or open the existing one, and mark it running.

        An existing experiment opens if it is created or running, or completed when the
        manager was made with `reopen=True` (more runs for a finished experiment); a
        completed one without it, or a failed or aborted one, is a `LifecycleError`.
        """
        async with self.store.connection() as conn:
            found = await repo.get_or_create_experiment(
                conn, self.experiment_id, self.name, **self._create
            )
            if found.status == ExperimentStatus.CREATED:
                found = await repo.start_experiment(conn, self.experiment_id)
            elif found.status == ExperimentStatus.COMPLETED and self.reopen:
                found = await repo.reopen_experiment(conn, self.experiment_id)
            elif found.status != ExperimentStatus.RUNNING:
                finished = found.status == ExperimentStatus.COMPLETED
                hint = " (reopen=True adds runs to it)" if finished else ""
                raise LifecycleError(
                    f"experiment {self.experiment_id!r} is {found.status}: it cannot take new"
                    f" runs{hint}"
                )
        self.experiment = found
        return found

    async def create_simulation(
        self,
        simulation_id: str,
        parameters: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        start: bool = True,
        **logger_options: Any,
    ) -> SimulationContext:
        """A new simulation of this experiment (started unless `start=False`) and its logger.

        The id of a simulation of this experiment that never started (status `created`,
        e.g. a run whose setup crashed) may be used again: that simulation is taken, its
        fields updated with the ones given. Any other taken id is `AlreadyExists`.
        `logger_options` override the manager's buffer_size, flush_interval, ...
        """
        fields: dict[str, Any] = {
            "name": name, "description": description, "parameters": parameters,
            "metadata": metadata,
        }  # fmt: skip
        async with self.store.connection() as conn:
            try:
                await repo.create_simulation(
                    conn, simulation_id, experiment_id=self.experiment_id, **fields
                )
            except AlreadyExists:
                found = await repo.find_simulation(conn, simulation_id)
                if found is None or not (
                    found.status == SimulationStatus.CREATED
                    and found.experiment_id == self.experiment_id
                ):
                    raise AlreadyExists(
                        f"simulation {simulation_id!r} already exists"
                        + ("" if found is None else
                           f" ({found.status.value}, in experiment {found.experiment_id!r}):"
                           " only a simulation of this experiment that never started can be"
                           " used again")
                    ) from None  # fmt: skip
                await repo.update_simulation(conn, simulation_id, **fields)
                earlier = self.simulations.pop(simulation_id, None)
                if earlier is not None:
                    await earlier.logger.close()
            if start:
                await repo.start_simulation(conn, simulation_id)
        options = {**self._logger_options, **logger_options}
        logger = SimulationLogger(self.store, simulation_id, **options)
        context = SimulationContext(self.store, simulation_id, logger)
        self.simulations[simulation_id] = context
        return context

    def simulation(self, simulation_id: str) -> SimulationContext:
        return self.simulations[simulation_id]

    async def complete_simulation(
        self,
        simulation_id: str,
        *,
        step_count: int | None = None,
        results_summary: dict[str, Any] | None = None,
    ) -> Simulation:
        """Flush the simulation's logger and mark it completed with its results."""
        return await self.simulations[simulation_id].complete(
            step_count=step_count, results_summary=results_summary
        )

    async def fail_simulation(self, simulation_id: str, error: str) -> Simulation:
        return await self.simulations[simulation_id].fail(error)

    async def close(
        self, exc: BaseException | None = None, *, results_summary: dict[str, Any] | None = None
    ) -> None:
        """Finish every simulation (concurrently), then complete or fail the experiment.

        A logger failure fails the experiment and is raised after it is recorded.
        """
        outcomes = await asyncio.gather(
            *(ctx.finish(exc) for ctx in self.simulations.values()), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        cause = exc or (errors[0] if errors else None)
        async with self.store.connection() as conn:
            if cause is None:
                self.experiment = await repo.complete_experiment(
                    conn, self.experiment_id, results_summary=results_summary
                )
            else:
                self.experiment = await repo.fail_experiment(
                    conn, self.experiment_id, error=f"{type(cause).__name__}: {cause}"
                )
        if exc is None and errors:
            raise errors[0]

    async def __aenter__(self) -> ExperimentManager:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(exc)
