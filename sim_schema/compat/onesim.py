"""OneSim's data managers, synchronous as OneSim's README shows them:

    from sim_schema.compat.onesim import ScenarioManager, TrailManager, TrailStatus

instead of `from onesim.data import ...`, configured from `SIM_SCHEMA_DSN`. Every manager
has the calls of its twin in `sim_schema.compat.onesim_async` (README and code names
alike), each run to completion before it returns, on the shared runner of the settings
(`sim_schema.compat.close()` closes it).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from ..settings import Settings
from . import onesim_async as aio
from ._runner import runner
from .onesim_async import TrailStatus

__all__ = [
    "AgentManager",
    "EnvironmentStateManager",
    "EventManager",
    "ScenarioManager",
    "TrailManager",
    "TrailStatus",
]


class _Synchronous:
    """Each coroutine method of the async twin, as a method that blocks until it is done."""

    _twin: ClassVar[type[aio.Manager]]

    def __init__(self, *, settings: Settings | None = None) -> None:
        self._runner = runner(settings)
        self._async = self._twin(self._runner.store)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._async, name)
        if not inspect.iscoroutinefunction(method):
            return method

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(lambda: method(*args, **kwargs))

        blocking.__name__ = name
        blocking.__doc__ = method.__doc__
        return blocking

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *dir(self._async)})


class ScenarioManager(_Synchronous):
    """create_scenario, get_scenario, list_scenarios."""

    _twin = aio.ScenarioManager


class TrailManager(_Synchronous):
    """create_trail, get_trail, list_trails, start_trail, complete_trail, update_trail_status."""

    _twin = aio.TrailManager


class EnvironmentStateManager(_Synchronous):
    """save_environment_state / save_state, get_environment_state / get_state."""

    _twin = aio.EnvironmentStateManager


class AgentManager(_Synchronous):
    """register_agent, get_agent, save_agent_state, get_agent_state."""

    _twin = aio.AgentManager


class EventManager(_Synchronous):
    """save_event / create_event, mark_event_processed."""

    _twin = aio.EventManager
