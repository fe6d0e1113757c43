"""Where a crashed simulation stands: the steps stored per table and the step to resume at.

The logger records a watermark with its batches (`simulations.stored_through_step`): the
last step whose rows are committed in every table, assuming a simulation logs the rows of
a step before those of the next (docs/ingest.md, "Resume"). `resume_step` is the step
after it. Rows of later steps may be stored too (the watermark trails the batches); a
resumed run logs them again and the writer skips the identical ones.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import psycopg
from psycopg import sql

from ..catalog import SPECS
from ..errors import NotFound
from ..store import Store

_STEPPED = tuple(name for name, spec in SPECS.items() if "step" in spec.names)


def _by(name: str) -> sql.Identifier:
    """The column that names the simulation in a stepped table's stored rows."""
    return sql.Identifier("sim_key" if SPECS[name].storage is not None else "simulation_id")


@cache
def _stored_steps_sql() -> sql.Composed:
    """One row: the simulation's watermark, then its last stored step per stepped table."""
    parts = []
    for name in _STEPPED:
        parts.append(
            sql.SQL("(SELECT max(step) FROM {} WHERE {} = s.{})").format(
                sql.Identifier(SPECS[name].target), _by(name), _by(name)
            )
        )
    return sql.SQL(
        "SELECT s.stored_through_step, {} FROM simulations s WHERE simulation_id = %s"
    ).format(sql.SQL(", ").join(parts))


async def stored_steps(
    conn: psycopg.AsyncConnection[Any], simulation_id: str
) -> tuple[int | None, dict[str, int | None]]:
    """(the watermark, the last step stored in each table with steps); NotFound if no such
    simulation."""
    cur = await conn.execute(_stored_steps_sql(), (simulation_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"simulation {simulation_id!r} does not exist")
    return row[0], dict(zip(_STEPPED, row[1:], strict=True))


async def resume_step(store: Store, simulation_id: str) -> int | None:
    """The first step that is not completely stored in every per-step table of the
    simulation: log again from there. None if no row of any step is stored (start at the
    beginning). `NotFound` if the simulation does not exist.

    >>> step = await resume_step(store, "sim-1")
    >>> start = 0 if step is None else step
    """
    async with store.connection() as conn:
        watermark, last = await stored_steps(conn, simulation_id)
    if all(step is None for step in last.values()):
        return None
    return 0 if watermark is None else watermark + 1


async def discard_steps_from(store: Store, simulation_id: str, step: int) -> dict[str, int]:
    """Delete the simulation's rows of `step` and later from every per-step table, in one
    transaction: for a model that resumes from its own checkpoint at `step` and would log
    different rows for steps already stored. The rollups are rebuilt and the watermark
    lowered. Rows deleted per table; `NotFound` if no such simulation. Run it while no
    logger of the simulation is writing (it waits for a batch being written).
    """
    if step < 0:
        raise ValueError(f"discard_steps_from: step must be >= 0, got {step}")
    deleted: dict[str, int] = {}
    async with store.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "UPDATE simulations SET stored_through_step = least(stored_through_step, %s)"
            " WHERE simulation_id = %s RETURNING sim_key",
            (step - 1, simulation_id),
        )
        found = await cur.fetchone()
        if found is None:
            raise NotFound(f"simulation {simulation_id!r} does not exist")
        sim_key = found[0]
        for name in _STEPPED:
            key = sim_key if SPECS[name].storage is not None else simulation_id
            cur = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} = %s AND step >= %s").format(
                    sql.Identifier(SPECS[name].target), _by(name)
                ),
                (key, step),
            )
            deleted[name] = cur.rowcount
        await conn.execute("SELECT rebuild_rollups(%s)", (simulation_id,))
    return deleted
