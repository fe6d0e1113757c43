"""Per-test databases copied from the run's templates, one copy made ahead.

A copy is a `CREATE DATABASE ... TEMPLATE` (about 0.15 s on the 2-core machine, more than
most tests take themselves). Each template has a background thread with its own
maintenance connection that makes the next copy while the current test runs, and drops a
test's copy after it; so a test waits only when it is faster than the server's copy.
Names carry the process id, so runs sharing a server never collide; copies left by a run
of this machine that died are dropped when the next run starts.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

PREFIX = "sim_schema_clone_"
_RUN = os.getpid()
_numbers = itertools.count()


class Copies:
    """Copies of one template database, each made before it is asked for."""

    def __init__(self, maintenance_dsn: str, template: str) -> None:
        self._template = template
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"copies-{template}")
        self._conn = self._thread.submit(psycopg.connect, maintenance_dsn, autocommit=True)
        self._next: Future[str] = self._thread.submit(self._make)

    def take(self) -> str:
        """The name of a new copy (the next one is started at once)."""
        name = self._next.result()
        self._next = self._thread.submit(self._make)
        return name

    def drop(self, name: str) -> None:
        """Drop a test's copy, in the background (FORCE: connections it left are ended)."""
        self._thread.submit(self._drop, name)

    def close(self) -> None:
        """Drop the copy made ahead, wait for every pending drop, close the connection."""
        try:
            self._drop(self._next.result())
        finally:
            self._thread.submit(self._conn.result().close).result()
            self._thread.shutdown()

    def _make(self) -> str:
        name = f"{PREFIX}{_RUN}_{next(_numbers)}"
        self._conn.result().execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(self._template)
            )
        )
        return name

    def _drop(self, name: str) -> None:
        self._conn.result().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def drop_abandoned(maintenance_dsn: str) -> None:
    """Drop the copies of runs of this machine whose process is gone (a crashed run)."""
    with psycopg.connect(maintenance_dsn, autocommit=True) as conn:
        names = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)
        ).fetchall()
        for (name,) in names:
            pid = int(name.removeprefix(PREFIX).split("_")[0])
            if pid != _RUN and not _alive(pid):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def describe(proc: Any) -> dict[str, Any]:
    """Connection parameters of a pytest-postgresql executor (no database)."""
    return {
        "host": proc.host,
        "port": proc.port,
        "user": proc.user,
        "password": proc.password or None,
    }
