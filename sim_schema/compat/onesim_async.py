"""OneSim's data managers, async as in OneSim's code (`await trail_mgr.create_trail(...)`),
over this module's repositories. `sim_schema.compat.onesim` has the same managers
synchronous, as OneSim's README shows them.

A scenario is an experiment, a trail a simulation (docs/coming-from.md). The calls keep
OneSim's names and arguments; both the README's names and the code's are here:
`TrailManager.start_trail` / `complete_trail` (README) and `update_trail_status` (code),
`EnvironmentStateManager.save_environment_state` / `get_environment_state` (README) and
`save_state` / `get_state` (code), `EventManager.save_event` (README) and `create_event`
(code). Ids are made as OneSim makes them (uuid4 text) and rows come back as dicts with
OneSim's keys. Where this module is stricter, the error is raised, not hidden: a status
change the lifecycle forbids is `LifecycleError`, a value that cannot be stored
`ValidationError`; a missing trail or event is `False` or `None`, as in OneSim.

Each manager works on `db_manager` (a `Store`) when given, else on one connection per
call to `SIM_SCHEMA_DSN` (`Settings.from_env()`).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any

import psycopg

from .. import repositories as repo
from ..errors import LifecycleError, NotFound
from ..models import (
    AgentCreate,
    AgentState,
    EventCreate,
    Experiment,
    Simulation,
    SimulationStatus,
)
from ..settings import Settings
from ..store import Store, connect_async

Conn = psycopg.AsyncConnection[Any]


class TrailStatus(StrEnum):
    """OneSim's trail statuses (upper case); ours are the same words in lower case."""

    CREATED = "CREATED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"


class Manager:
    """What every manager shares: where its connections come from."""

    def __init__(self, db_manager: Store | None = None, *, settings: Settings | None = None):
        self._store = db_manager
        self._settings = settings

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        if self._store is not None:
            async with self._store.connection() as conn:
                yield conn
            return
        async with connect_async(self._settings or Settings.from_env()) as conn:
            yield conn


def _scenario(e: Experiment) -> dict[str, Any]:
    return {
        "scenario_id": e.experiment_id, "name": e.name, "folder_path": e.folder_path,
        "description": e.description, "tags": e.tags, "metadata": e.metadata,
        "created_at": e.created_at, "updated_at": e.updated_at,
    }  # fmt: skip


def _trail(s: Simulation) -> dict[str, Any]:
    return {
        "trail_id": s.simulation_id, "scenario_id": s.experiment_id, "name": s.name,
        "description": s.description, "status": TrailStatus(s.status.value.upper()),
        "config": s.parameters, "metadata": s.metadata, "step_count": s.step_count,
        "start_time": s.started_at, "end_time": s.ended_at, "created_at": s.created_at,
        "updated_at": s.updated_at,
    }  # fmt: skip


class ScenarioManager(Manager):
    async def create_scenario(
        self,
        name: str,
        folder_path: str,
        description: str | None = None,
        tags: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """A new scenario (an experiment); its id."""
        scenario_id = str(uuid.uuid4())
        async with self._conn() as conn:
            await repo.create_experiment(
                conn, scenario_id, name, folder_path=folder_path, description=description,
                tags=tags, metadata=metadata,
            )  # fmt: skip
        return scenario_id

    async def get_scenario(self, scenario_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            found = await repo.find_experiment(conn, scenario_id)
        return None if found is None else _scenario(found)

    async def list_scenarios(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every scenario, oldest first (the first `limit`)."""
        async with self._conn() as conn:
            found = await repo.list_experiments(conn)
        return [_scenario(e) for e in found[:limit]]


# Our transition to reach each OneSim status (RUNNING: start, or resume from PAUSED).
_TRANSITIONS = {
    TrailStatus.PAUSED: repo.pause_simulation,
    TrailStatus.COMPLETED: repo.complete_simulation,
    TrailStatus.ABORTED: repo.abort_simulation,
}


class TrailManager(Manager):
    async def create_trail(
        self,
        scenario_id: str,
        name: str,
        description: str | None = None,
        config: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """A new trail (a simulation, status created) of the scenario; its id. The config
        is the simulation's `parameters`."""
        trail_id = str(uuid.uuid4())
        async with self._conn() as conn:
            await repo.create_simulation(
                conn, trail_id, experiment_id=scenario_id, name=name, description=description,
                parameters=config, metadata=metadata,
            )  # fmt: skip
        return trail_id

    async def get_trail(self, trail_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            found = await repo.find_simulation(conn, trail_id)
        return None if found is None else _trail(found)

    async def list_trails(
        self,
        scenario_id: str | None = None,
        status: TrailStatus | str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        ours = None if status is None else SimulationStatus(str(status).lower())
        async with self._conn() as conn:
            found = await repo.list_simulations(conn, experiment_id=scenario_id, status=ours)
        return [_trail(s) for s in found[:limit]]

    async def update_trail_status(self, trail_id: str, status: TrailStatus | str) -> bool:
        """Move the trail to `status`: True when done, False if there is no such trail.
        A change our lifecycle forbids (e.g. COMPLETED -> RUNNING) is `LifecycleError`."""
        target = TrailStatus(str(status).upper())
        try:
            async with self._conn() as conn:
                if target is TrailStatus.RUNNING:
                    current = await repo.get_simulation(conn, trail_id)
                    if current.status is SimulationStatus.PAUSED:
                        await repo.resume_simulation(conn, trail_id)
                    else:
                        await repo.start_simulation(conn, trail_id)
                elif target is TrailStatus.FAILED:
                    await repo.fail_simulation(conn, trail_id, "status set to FAILED")
                elif target in _TRANSITIONS:
                    await _TRANSITIONS[target](conn, trail_id)
                else:
                    raise LifecycleError(f"a trail cannot be set back to {target.value}")
        except NotFound:
            return False
        return True

    async def start_trail(self, trail_id: str) -> bool:
        return await self.update_trail_status(trail_id, TrailStatus.RUNNING)

    async def complete_trail(self, trail_id: str, step_count: int | None = None) -> bool:
        """Mark the trail completed with its step count; False if there is no such trail."""
        try:
            async with self._conn() as conn:
                await repo.complete_simulation(conn, trail_id, step_count=step_count)
        except NotFound:
            return False
        return True


class EnvironmentStateManager(Manager):
    async def save_state(self, trail_id: str, step: int, state: Any) -> bool:
        """Store the environment state of `step` (replacing a stored one)."""
        async with self._conn() as conn:
            await repo.save_environment_state(conn, trail_id, step, state)
        return True

    async def get_state(self, trail_id: str, step: int | None = None) -> Any:
        """The state stored for `step` (the latest when None), or None."""
        async with self._conn() as conn:
            if step is None:
                latest = await repo.latest_environment_state(conn, trail_id)
                return None if latest is None else latest.state
            try:
                return (await repo.get_environment_state(conn, trail_id, step)).state
            except NotFound:
                return None

    save_environment_state = save_state
    get_environment_state = get_state


class AgentManager(Manager):
    async def register_agent(
        self,
        trail_id: str,
        agent_id: str,
        agent_type: str,
        name: str | None = None,
        initial_profile: dict[str, Any] | None = None,
        **config: Any,
    ) -> bool:
        """Register the agent (again: its fields are replaced). Further keyword arguments
        (OneSim's system_prompt, model_config_name, memory_config, ...) go into the agent's
        `config`."""
        async with self._conn() as conn:
            await repo.register_agent(conn, AgentCreate(
                simulation_id=trail_id, agent_id=agent_id, agent_type=agent_type, name=name,
                profile=initial_profile or {}, config=config,
            ))  # fmt: skip
        return True

    async def get_agent(self, trail_id: str, agent_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            found = await repo.find_agent(conn, trail_id, agent_id)
        if found is None:
            return None
        return {
            "trail_id": trail_id, "agent_id": agent_id, "agent_type": found.agent_type,
            "name": found.name, "initial_profile": found.profile, "created_at": found.created_at,
            **found.config,
        }  # fmt: skip

    async def save_agent_state(
        self,
        trail_id: str,
        agent_id: str,
        step: int,
        profile: Any = None,
        memory: Any = None,
        relationships: Any = None,
    ) -> bool:
        """Store the agent's state at `step` (replacing a stored one)."""
        async with self._conn() as conn:
            await repo.save_agent_state(conn, AgentState(
                simulation_id=trail_id, agent_id=agent_id, step=step, profile=profile,
                memory=memory, relationships=relationships,
            ))  # fmt: skip
        return True

    async def get_agent_state(
        self, trail_id: str, agent_id: str, step: int
    ) -> dict[str, Any] | None:
        async with self._conn() as conn:
            try:
                s = await repo.get_agent_state(conn, trail_id, agent_id, step)
            except NotFound:
                return None
        return {
            "trail_id": trail_id, "agent_id": agent_id, "step": step, "profile": s.profile,
            "memory": s.memory, "relationships": s.relationships,
        }  # fmt: skip


_REMEMBERED_EVENTS = 100_000  # event id -> trail, for mark_event_processed


class EventManager(Manager):
    def __init__(self, db_manager: Store | None = None, *, settings: Settings | None = None):
        super().__init__(db_manager, settings=settings)
        self._trails: OrderedDict[str, str] = OrderedDict()

    async def create_event(
        self,
        trail_id: str,
        step: int,
        event_type: str,
        source_type: str | None = None,
        source_id: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        payload: dict[str, Any] | None = None,
        priority: int = 0,
    ) -> str:
        """Store an event; its id."""
        async with self._conn() as conn:
            event = await repo.create_event(conn, EventCreate(
                simulation_id=trail_id, event_id=uuid.uuid4(), step=step, event_type=event_type,
                source_type=source_type, source_id=source_id, target_type=target_type,
                target_id=target_id, payload=payload or {}, priority=priority,
            ))  # fmt: skip
        event_id = str(event.event_id)
        self._trails[event_id] = trail_id
        if len(self._trails) > _REMEMBERED_EVENTS:
            self._trails.popitem(last=False)
        return event_id

    save_event = create_event

    async def mark_event_processed(
        self, event_id: str, processing_result: Any = None, *, trail_id: str | None = None
    ) -> bool:
        """Mark the event processed with its result; False if there is no such event.

        Our events are keyed by (simulation, event id): the trail of an event this manager
        made is remembered, for others give `trail_id` or it is looked up (a scan of the
        events table). An event processed already is `LifecycleError`.
        """
        async with self._conn() as conn:
            trail = trail_id or self._trails.get(event_id)
            if trail is None:
                cur = await conn.execute(
                    "SELECT simulation_id FROM events WHERE event_id = %s LIMIT 1",
                    (uuid.UUID(event_id),),
                )
                row = await cur.fetchone()
                if row is None:
                    return False
                trail = row[0]
            try:
                await repo.mark_event_processed(
                    conn, trail, uuid.UUID(event_id), processing_result
                )
            except NotFound:
                return False
        return True
