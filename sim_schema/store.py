"""The only module that opens connections (or borrows the host's).

`Store` hands out connections whose search path is the module's schema, so every other
module writes unqualified table names: from its own `AsyncConnectionPool`, configured that
way once per connection, or from a pool the host backend owns (`Store.from_pool`), whose
connections are set up per checkout and handed back exactly as they were.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import ops, readiness
from .errors import ConnectionFailed, SimSchemaError
from .names import DEFAULT_SCHEMA
from .settings import Settings, redact_message

RECONNECT_TIMEOUT = 2.0  # seconds


def _connection_error(settings: Settings, exc: BaseException) -> ConnectionFailed:
    reason = redact_message(
        str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc), settings.dsn
    )
    return ConnectionFailed(f"cannot connect to {settings.describe()}: {reason}")


def _search_path(settings: Settings) -> str:
    return ops.quoted_path(settings.schema_name)


@contextmanager
def connect(settings: Settings, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """One synchronous connection (deploy jobs, the CLI), with failures as `ConnectionFailed`."""
    try:
        conn = psycopg.connect(settings.conninfo(), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise _connection_error(settings, exc) from None
    with conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (_search_path(settings),))
        yield conn


@asynccontextmanager
async def connect_async(
    settings: Settings, *, module_schema: bool = True
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One async autocommit connection outside any pool (a one-off call, an import's
    source database), with failures as `ConnectionFailed`. `module_schema`: the search
    path is the module's schema; False leaves the server's (a source database's tables)."""
    try:
        conn = await psycopg.AsyncConnection.connect(settings.conninfo(), autocommit=True)
    except psycopg.OperationalError as exc:
        raise _connection_error(settings, exc) from None
    async with conn:
        if module_schema:
            await conn.execute(
                "SELECT set_config('search_path', %s, false)", (_search_path(settings),)
            )
        yield conn


class Store:
    """A pool of async connections to one database and schema.

    Opening it checks that the schema is migrated to the version this code needs
    (`SchemaNotReady` otherwise, naming the versions missing; `check_schema=False` skips
    it, e.g. for a store opened before the migrations run).

    >>> async with Store(Settings.from_env()) as store:
    ...     async with store.connection() as conn: ...
    """

    def __init__(self, settings: Settings | None = None, *, check_schema: bool = True) -> None:
        self.settings = settings or Settings.from_env()
        self.check_schema = check_schema
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._host_pool = False

    @classmethod
    def from_pool(
        cls,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
        *,
        schema: str = DEFAULT_SCHEMA,
    ) -> Store:
        """A store on a pool the host backend owns (and opens and closes itself).

        Each `connection()` checks one out, switches it to autocommit with the module's
        schema as its only search path (so a host table of the same name, such as
        `public.experiments`, is never touched), and on return restores the host's
        autocommit flag and search path. `close()` leaves the host's pool open.
        """
        store = cls(Settings(schema_name=schema))
        store._pool = pool
        store._host_pool = True
        return store

    @property
    def schema(self) -> str:
        return self.settings.schema_name

    @property
    def schema_ident(self) -> sql.Identifier:
        return sql.Identifier(self.settings.schema_name)

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.set_autocommit(True)
        await conn.execute(
            "SELECT set_config('search_path', %s, false)", (_search_path(self.settings),)
        )

    async def open(self) -> None:
        if self._pool is not None:  # open already, or the host's pool
            return
        s = self.settings
        try:  # one direct attempt fails fast with libpq's reason; the pool would retry
            probe = await psycopg.AsyncConnection.connect(s.conninfo(), autocommit=True)
        except psycopg.OperationalError as exc:
            raise _connection_error(s, exc) from None
        async with probe:
            if self.check_schema:
                await readiness.check_schema_async(probe, s.schema_name)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            s.conninfo(),
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            timeout=s.pool_timeout,
            configure=self._configure,
            # One cheap round trip per checkout replaces a connection that died while idle
            # (server restart, pg_terminate_backend) instead of handing it to a caller.
            check=AsyncConnectionPool.check_connection,
            # The pool's reconnection backoff doubles without a cap while the server is
            # down; giving up after RECONNECT_TIMEOUT lets the next request start again
            # from a 1 s delay, so a server that comes back is used within about a second.
            reconnect_timeout=RECONNECT_TIMEOUT,
            open=False,
            name=f"sim_schema:{s.schema_name}",
        )
        try:
            await pool.open(wait=s.pool_min_size > 0, timeout=float(s.connect_timeout))
        except (PoolTimeout, psycopg.OperationalError) as exc:
            await pool.close()
            raise _connection_error(s, exc) from None
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None and not self._host_pool:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            raise SimSchemaError("the store is not open: use `async with Store(...)`")
        return self._pool

    @asynccontextmanager
    async def connection(
        self, timeout: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled autocommit connection; wrap writes in `conn.transaction()`.

        Waits up to `timeout` seconds (default: the pool's timeout) for one. When none
        comes, the error says why: the server cannot be reached (libpq's reason, from one
        direct attempt), or every connection is in use.
        """
        pool = self.pool
        wait = pool.timeout if timeout is None else timeout
        try:
            async with pool.connection(timeout=wait) as conn:
                if not self._host_pool:
                    yield conn
                    return
                path = _search_path(self.settings)
                async with ops.borrowed_async(conn, what="sim_schema", search_path=path):
                    yield conn
        except PoolTimeout:
            raise await self._why_no_connection(wait) from None

    async def _why_no_connection(self, waited: float) -> ConnectionFailed:
        """The real cause behind a pool timeout: try the server once, directly."""
        pool = self.pool
        if not self._host_pool:
            try:
                probe = await psycopg.AsyncConnection.connect(self.settings.conninfo())
            except psycopg.OperationalError as exc:
                return _connection_error(self.settings, exc)
            await probe.close()
        stats = pool.get_stats()
        busy = stats.get("pool_size", 0) >= pool.max_size and not stats.get("pool_available")
        if busy:
            return ConnectionFailed(
                f"no connection free in the pool within {waited:g}s: all "
                f"{pool.max_size} are in use (pool max_size={pool.max_size})"
            )
        return ConnectionFailed(
            f"no connection from the pool within {waited:g}s: it is still reconnecting "
            f"(pool max_size={pool.max_size}, {stats.get('pool_size', 0)} open)"
        )


def database_exists(settings: Settings, name: str) -> bool:
    """Whether the server of `settings` has a database `name`."""
    with connect(settings) as conn:
        return _database_exists(conn, name)


def ensure_database(settings: Settings, name: str) -> bool:
    """Create database `name` on the server of `settings` unless it exists; True if created."""
    with connect(settings) as conn:
        if _database_exists(conn, name):
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def _database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return found is not None
