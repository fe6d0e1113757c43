"""Fault injection against a real PostgreSQL: killed backends, timeouts, pool exhaustion,
a killed process. Every test checks the stored rows by content (a digest of the rows read
back, ordered by key) against what was logged, not only their number.

The lost-acknowledgement case (commit succeeded, reply lost) is tested by
tests/integration/test_logger_faults.py; it is not repeated here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import psycopg
import pytest

from sim_schema import repositories as repo
from sim_schema.errors import ConnectionFailed, IngestError, SimSchemaError
from sim_schema.ingest.logger import RetryPolicy, SimulationLogger
from sim_schema.migrations.migration import SqlMigration, load_migrations
from sim_schema.migrations.runner import MigrationRunner
from sim_schema.settings import Settings
from sim_schema.store import Store

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'`

SCHEMA = "sim"
FAST_RETRY = RetryPolicy(attempts=20, initial_delay=0.05, max_delay=0.5, timeout=60.0)
STATE_COLUMNS = "step, agent_id, health, extras"


# --- helpers ---------------------------------------------------------------------------


def state_rows(n: int, agents: list[str], start: int = 0) -> list[tuple[Any, ...]]:
    """Deterministic agent_states rows (step, agent_id, health, extras) with varied content."""
    rows = []
    for i in range(start, start + n):
        step, agent = divmod(i, len(agents))
        rows.append((step, agents[agent], i / 7.0, {"i": i, "tag": f"é{i}€", "n": [i, None]}))
    return rows


def digest(rows: list[tuple[Any, ...]]) -> str:
    """sha256 of the rows in key order (step, agent_id): equal digests mean equal content."""
    ordered = sorted(rows, key=lambda r: (r[0], r[1]))
    return hashlib.sha256(json.dumps(ordered, sort_keys=True).encode()).hexdigest()


def stored_states(conn: psycopg.Connection[Any], simulation_id: str) -> list[tuple[Any, ...]]:
    cur = conn.execute(
        f"SELECT {STATE_COLUMNS} FROM sim.agent_states WHERE simulation_id = %s"
        " ORDER BY step, agent_id",
        (simulation_id,),
    )
    return [tuple(r) for r in cur.fetchall()]


async def astored_states(dsn: str, simulation_id: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT {STATE_COLUMNS} FROM sim.agent_states WHERE simulation_id = %s"
            " ORDER BY step, agent_id",
            (simulation_id,),
        )
        return [tuple(r) for r in await cur.fetchall()]


async def setup_simulation(store: Store, simulation_id: str, agents: list[str]) -> None:
    async with store.connection() as conn:
        await repo.create_simulation(conn, simulation_id)
    async with SimulationLogger(store, simulation_id) as logger:
        for a in agents:
            await logger.log_agent(a, "prey")


async def log_states(logger: SimulationLogger, rows: list[tuple[Any, ...]]) -> None:
    for step, agent, health, extras in rows:
        await logger.log_agent_state(step, agent, health=health, extras=extras)


class Killer:
    """Terminates backends of one application_name matching a condition, up to `limit` times."""

    def __init__(self, dsn: str, application_name: str, condition: str, limit: int) -> None:
        self.dsn = dsn
        self.application_name = application_name
        self.condition = condition
        self.limit = limit
        self.kills = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            while not stop.is_set() and self.kills < self.limit:
                cur = await conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND "
                    + self.condition,
                    (self.application_name,),
                )
                for (pid,) in await cur.fetchall():
                    await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    self.kills += 1
                await asyncio.sleep(0.01)


# --- backend killed in the middle of a COPY flush ----------------------------------------


async def test_backend_killed_mid_copy_logger_retries_exact_rows(dsn: str, aconn: Any) -> None:
    """A row trigger sleeps at one row in the middle of the third COPY batch; the killer
    terminates the logger's backend twice while it sleeps (rows before it already inserted
    in the batch's transaction). The logger retries; exactly the logged rows are stored, once.
    """
    await aconn.execute(
        """
        CREATE FUNCTION fault_slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.step = 500 AND NEW.agent_key = (SELECT agent_key FROM agents
                                                   WHERE agent_id = 'slow') THEN
                PERFORM pg_sleep(0.5);
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fault_slow BEFORE INSERT ON agent_states_data
            FOR EACH ROW EXECUTE FUNCTION fault_slow_row();
        """
    )
    app = "fault_copy_logger"
    agents = ["a1", "a2", "slow", "a3"]
    settings = Settings(dsn=dsn, application_name=app, pool_max_size=2)
    rows = state_rows(4000, agents)
    async with Store(settings) as store:
        await setup_simulation(store, "s-kill", agents)
        killer = Killer(dsn, app, "wait_event = 'PgSleep'", limit=2)
        stop = asyncio.Event()
        killing = asyncio.create_task(killer.run(stop))
        logger = SimulationLogger(store, "s-kill", buffer_size=1000, retry=FAST_RETRY)
        await log_states(logger, rows)
        await logger.close()
        stop.set()
        await killing
    assert killer.kills == 2, "the fault was not injected"
    assert logger.errors == []
    stored = await astored_states(dsn, "s-kill")
    assert len(stored) == len(rows)
    assert digest(stored) == digest(rows)
    cur = await aconn.execute(
        "SELECT count(*), sum(row_count) FROM ingest_batches"
        " WHERE simulation_id = 's-kill' AND table_name = 'agent_states'"
    )
    assert await cur.fetchone() == (4, 4000)  # one ledger row per batch, none twice


# --- killed during a migration -----------------------------------------------------------


def _slow_migration(version: int) -> SqlMigration:
    """Sleeps for `fault.sleep` seconds (a session setting, 0 when unset) after a DDL."""
    return SqlMigration(
        version,
        "fault probe",
        [
            "CREATE TABLE fault_probe (id integer PRIMARY KEY)",
            "INSERT INTO fault_probe VALUES (1)",
            "SELECT pg_sleep(coalesce(nullif(current_setting('fault.sleep', true), ''), '0')"
            "::float8)",
        ],
        schema=SCHEMA,
    )


def test_backend_killed_during_migration_then_rerun_completes(dsn: str) -> None:
    migrations = [*load_migrations(SCHEMA), _slow_migration(len(load_migrations(SCHEMA)))]
    probe_version = migrations[-1].version()
    runner = MigrationRunner(migrations, schema=SCHEMA, lock_wait=5)
    app = "fault_migrator"
    failure: list[BaseException] = []

    def migrate() -> None:
        with psycopg.connect(dsn, application_name=app) as conn:
            conn.execute("SET fault.sleep = '60'")
            conn.commit()
            try:
                runner.migrate(conn)
            except BaseException as exc:
                failure.append(exc)

    thread = threading.Thread(target=migrate)
    thread.start()
    with psycopg.connect(dsn, autocommit=True) as killer:
        deadline = time.monotonic() + 30
        killed = False
        while not killed and time.monotonic() < deadline:
            for (pid,) in killer.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE application_name = %s AND wait_event = 'PgSleep'",
                (app,),
            ).fetchall():
                killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
                killed = True
            time.sleep(0.02)
    thread.join(30)
    assert killed and not thread.is_alive()
    assert failure and isinstance(failure[0], psycopg.Error | SimSchemaError)

    with psycopg.connect(dsn, autocommit=True) as conn:
        # Consistent: the killed migration left nothing, neither its table nor its record.
        assert conn.execute("SELECT to_regclass('sim.fault_probe')").fetchone() == (None,)
        states = {s.version: s.state for s in runner.status(conn)}
        assert states[probe_version] == "pending"
        assert all(v == "applied" for k, v in states.items() if k != probe_version)
        # The advisory lock died with the session: a re-run takes it and completes.
        result = runner.migrate(conn)
        assert result is not None
        assert {s.state for s in runner.status(conn)} == {"applied"}
        assert conn.execute("SELECT id FROM sim.fault_probe").fetchall() == [(1,)]


# --- a pool connection killed while idle ----------------------------------------------


async def test_idle_pool_connection_killed_next_use_works(dsn: str) -> None:
    app = "fault_idle_pool"
    settings = Settings(dsn=dsn, application_name=app, pool_min_size=1, pool_max_size=1)
    async with Store(settings) as store:
        async with store.connection() as conn:
            pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as killer:
            await killer.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        # The only pooled connection is dead; the next user must get a working one.
        async with store.connection() as conn:
            cur = await conn.execute("SELECT pg_backend_pid(), current_schemas(false)")
            new_pid, schemas = await cur.fetchone()
        assert new_pid != pid
        assert schemas == [SCHEMA]


async def test_idle_pool_connection_killed_logger_still_writes_everything(dsn: str) -> None:
    """Even without a pool check, the logger's retry absorbs a dead pooled connection."""
    app = "fault_idle_logger"
    agents = ["a1", "a2"]
    settings = Settings(dsn=dsn, application_name=app, pool_min_size=1, pool_max_size=1)
    rows = state_rows(500, agents)
    async with Store(settings) as store:
        await setup_simulation(store, "s-idle", agents)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as killer:
            await killer.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (app,),
            )
        async with SimulationLogger(store, "s-idle", buffer_size=100, retry=FAST_RETRY) as lg:
            await log_states(lg, rows)
        assert lg.errors == []
    assert digest(await astored_states(dsn, "s-idle")) == digest(rows)


# --- statement timeout and lock timeout during writes ------------------------------------


async def _hold_lock(dsn: str, seconds: float, locked: asyncio.Event) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as holder:
        await holder.execute("LOCK TABLE sim.agent_states IN ACCESS EXCLUSIVE MODE")
        locked.set()
        await asyncio.sleep(seconds)
        await holder.rollback()


@pytest.mark.parametrize(
    "option", ["-c lock_timeout=100ms", "-c statement_timeout=100ms"], ids=["lock", "statement"]
)
async def test_timeout_during_write_is_retried_without_loss(dsn: str, option: str) -> None:
    """LockNotAvailable / QueryCanceled are transient: the batch is retried once the lock
    is gone, and the rows are all stored, once."""
    agents = ["a1", "a2", "a3"]
    rows = state_rows(900, agents)
    async with Store(Settings(dsn=dsn)) as store:
        await setup_simulation(store, "s-to", agents)
    timed = Settings(dsn=psycopg.conninfo.make_conninfo(dsn, options=option))
    async with Store(timed) as store:
        locked = asyncio.Event()
        holder = asyncio.create_task(_hold_lock(dsn, 1.0, locked))
        await locked.wait()
        logger = SimulationLogger(store, "s-to", buffer_size=300, retry=FAST_RETRY)
        await log_states(logger, rows)
        await logger.close()
        await holder
    assert logger.errors == []
    stored = await astored_states(dsn, "s-to")
    assert len(stored) == 900 and digest(stored) == digest(rows)


async def test_timeout_persisting_past_retries_is_a_clear_error_keeping_rows(dsn: str) -> None:
    """When the lock outlives the retry budget: IngestError naming table and batch, the
    rows kept in the error (by content), and nothing of the batch written."""
    agents = ["a1"]
    rows = state_rows(50, agents)
    async with Store(Settings(dsn=dsn)) as store:
        await setup_simulation(store, "s-to2", agents)
    timed = Settings(dsn=psycopg.conninfo.make_conninfo(dsn, options="-c lock_timeout=50ms"))
    policy = RetryPolicy(attempts=3, initial_delay=0.05, max_delay=0.1, timeout=5)
    async with Store(timed) as store:
        locked = asyncio.Event()
        holder = asyncio.create_task(_hold_lock(dsn, 3.0, locked))
        await locked.wait()
        logger = SimulationLogger(store, "s-to2", buffer_size=100, retry=policy)
        await log_states(logger, rows)
        with pytest.raises(IngestError) as info:
            await logger.close()
        await holder
    err = info.value
    assert err.table == "agent_states"
    assert "agent_states batch" in str(err) and "lock timeout" in str(err)
    assert isinstance(err.cause, psycopg.errors.LockNotAvailable)
    kept = [(r["step"], r["agent_id"], r["health"], r["extras"]) for r in err.rows]  # type: ignore[index]
    assert digest(kept) == digest(rows)
    assert await astored_states(dsn, "s-to2") == []


# --- pool exhausted ----------------------------------------------------------------------


async def test_pool_exhausted_waits_then_clear_error(dsn: str) -> None:
    settings = Settings(dsn=dsn, pool_min_size=1, pool_max_size=1, pool_timeout=0.5)
    async with Store(settings) as store:
        async with store.connection():
            started = time.monotonic()
            with pytest.raises(
                ConnectionFailed, match=r"no connection free in the pool within 0.5s"
            ):
                async with asyncio.timeout(10):  # nothing hangs
                    async with store.connection():
                        pass
            assert time.monotonic() - started < 10
        async with store.connection() as conn:  # released: usable again
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)


async def test_pool_exhausted_logger_waits_and_writes_everything(dsn: str) -> None:
    """The logger treats 'no connection free' as transient: once the holder releases the
    only connection, every row is written."""
    agents = ["a1", "a2"]
    rows = state_rows(400, agents)
    settings = Settings(dsn=dsn, pool_min_size=1, pool_max_size=1, pool_timeout=0.2)
    async with Store(settings) as store:
        await setup_simulation(store, "s-pool", agents)
        release = asyncio.Event()
        held = asyncio.Event()

        async def hold() -> None:
            async with store.connection():
                held.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await held.wait()
        logger = SimulationLogger(store, "s-pool", buffer_size=100, retry=FAST_RETRY)
        await log_states(logger, rows)
        await asyncio.sleep(0.6)  # a few attempts time out on the pool meanwhile
        release.set()
        await holder
        await logger.close()
    assert logger.errors == []
    assert digest(await astored_states(dsn, "s-pool")) == digest(rows)


# --- process killed with unflushed rows --------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_faults import state_rows
    from sim_schema.ingest.logger import SyncSimulationLogger
    from sim_schema.settings import Settings

    agents = ["a1", "a2", "a3"]
    rows = state_rows({total}, agents)
    log = SyncSimulationLogger("s-crash", settings=Settings(dsn={dsn!r}),
                               buffer_size={buffer}, flush_interval=3600, handoff=10)
    for a in agents:
        log.log_agent(a, "prey")
    for i, (step, agent, health, extras) in enumerate(rows, 1):
        log.log_agent_state(step, agent, health=health, extras=extras)
        if i == {flushed}:
            log.flush()
            print("flushed", i, flush=True)
    print("logged", len(rows), "pending", log.pending, flush=True)
    time.sleep(600)
    """
)


def test_process_killed_loses_at_most_the_unflushed_buffer(dsn: str, conn: Any) -> None:
    """SIGKILL after `flush()` returned for the first 1500 rows and 90 more were logged
    (fewer than buffer_size, so none of them sealed): the database holds exactly the 1500
    flushed rows, by content; the loss is bounded by what `pending` reported (90)."""
    repo_create = "INSERT INTO simulations (simulation_id) VALUES ('s-crash')"
    conn.execute(repo_create)
    total, flushed, buffer = 1590, 1500, 200
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = _CHILD.format(tests=tests_dir, dsn=dsn, total=total, flushed=flushed, buffer=buffer)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        lines = []
        for line in child.stdout:
            lines.append(line.split())
            if line.startswith("logged"):
                break
        assert lines[0] == ["flushed", str(flushed)], child.stderr.read() if child.stderr else ""
        pending = int(lines[1][3])
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    stored = stored_states(conn, "s-crash")
    rows = state_rows(total, ["a1", "a2", "a3"])
    assert len(stored) == flushed
    assert digest(stored) == digest(rows[:flushed])  # everything flushed is intact
    assert total - len(stored) <= pending <= buffer  # loss bounded by the unflushed rows
