"""An event loop in a daemon thread with a `Store` on it, for the synchronous facades.

One runner per `Settings` (so per database), shared by every facade object made with
them; `close()` closes them all, and is registered to run at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..settings import Settings
from ..store import Store

T = TypeVar("T")


class Runner:
    """Runs coroutines of this module's async API on a private loop, for synchronous code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="sim_schema compat", daemon=True
        )
        self._thread.start()
        self.store = Store(settings)
        try:
            self.run(self.store.open)
        except BaseException:
            self._stop()
            raise

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """`await make()` on the runner's loop (the call itself is made there too, since
        the async API is not thread-safe); its result, or its exception."""

        async def call() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result()

    def close(self) -> None:
        try:
            self.run(self.store.close)
        finally:
            self._stop()

    def _stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


_RUNNERS: dict[Settings, Runner] = {}
_LOCK = threading.Lock()


def runner(settings: Settings | None = None) -> Runner:
    """The shared runner of `settings` (default: `Settings.from_env()`, i.e. SIM_SCHEMA_DSN)."""
    key = settings or Settings.from_env()
    with _LOCK:
        found = _RUNNERS.get(key)
        if found is None:
            found = _RUNNERS[key] = Runner(key)
        return found


def close() -> None:
    """Close every runner: their pools, loops and threads. Facade objects made before must
    not be used afterwards (new ones start a new runner)."""
    with _LOCK:
        runners = list(_RUNNERS.values())
        _RUNNERS.clear()
    for r in runners:
        r.close()


atexit.register(close)
