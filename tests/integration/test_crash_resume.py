"""kill -9 of a simulation process at random points, then a restart: resumed at
`resume_step` (or from step 0), the stored rows equal those of an uninterrupted run, by
digest, with no duplicate. The rows each kill lost are printed (`pytest -s`): the figure
for the closing note, bounded here only by what the logger may hold (`max_pending`)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sim_schema import Settings, Store, resume_step
from sim_schema.ids import replay_id

pytestmark = pytest.mark.slow

CHILD = Path(__file__).resolve().parents[1] / "crash_child.py"
STEPS = 500
VIEWS = ("agents", "agent_states", "agent_actions", "health_incidents", "resource_states",
         "simulation_steps", "events")
_IGNORED = {"simulation_id", "event_id", "created_at", "agent_key", "committed_at"}


def child(dsn: str, simulation_id: str, start: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), dsn, simulation_id, str(start), str(STEPS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run_to_end(dsn: str, simulation_id: str, start: int) -> None:
    proc = child(dsn, simulation_id, start)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def kill_midway(dsn: str, simulation_id: str, delay: float) -> tuple[int, float]:
    """Start a run, SIGKILL it `delay` s after its first step was logged: the last step it
    reported logged, and how long it had been logging."""
    proc = child(dsn, simulation_id, 0)
    assert proc.stdout is not None
    last = -1
    first = killed_at = None
    now = 0.0
    try:
        for line in proc.stdout:
            last = int(line.split()[1])
            now = time.monotonic()
            if first is None:
                first, killed_at = now, now + delay
            if now >= killed_at:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert first is not None
    return last, now - first


def contents(conn: psycopg.Connection[Any], simulation_id: str) -> dict[str, list[Any]]:
    found = {}
    for view in VIEWS:
        cur = conn.execute(f"SELECT * FROM {view} WHERE simulation_id = %s", (simulation_id,))
        names = [d.name for d in cur.description or []]
        keep = [i for i, n in enumerate(names) if n not in _IGNORED]
        found[view] = sorted((json.dumps([r[i] for i in keep], default=str) for r in cur),
                             key=str)
    return found


def digest(found: dict[str, list[Any]]) -> str:
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()


def assert_no_duplicate_and_stable_ids(conn: psycopg.Connection[Any], simulation_id: str) -> None:
    ids = conn.execute("SELECT step, event_id FROM events WHERE simulation_id = %s"
                       " ORDER BY step", (simulation_id,)).fetchall()
    assert ids == [(s, replay_id(simulation_id, s, 0)) for s in range(STEPS)]
    doubled = conn.execute(
        "SELECT count(*) FROM (SELECT step, agent_id, action_type FROM agent_actions"
        " WHERE simulation_id = %s GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        (simulation_id,),
    ).fetchone()
    assert doubled == (0,)  # at most one action of a type per agent and step is logged


def lost_rows(conn: psycopg.Connection[Any], clean: str, crashed: str, last: int) -> int:
    """Rows of the steps the killed run had logged (through `last`) that are not stored."""
    total = 0
    for view in VIEWS[1:]:
        counts = [
            conn.execute(f"SELECT count(*) FROM {view} WHERE simulation_id = %s AND step <= %s",
                         (sim, last)).fetchone()
            for sim in (clean, crashed)
        ]
        total += counts[0][0] - counts[1][0]  # type: ignore[index]
    return total


def test_kill_nine_at_random_points_then_resume(dsn: str, capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    rng = random.Random(20261202)
    run_to_end(dsn, "clean", 0)
    with psycopg.connect(dsn, options="-c search_path=sim") as conn:
        expected = contents(conn, "clean")
        assert sum(len(rows) for rows in expected.values()) > 20_000
        report = []
        for n in range(5):
            for start_at in ("resume_step", "step 0"):
                sim = f"kill-{n}-{start_at.replace(' ', '')}"
                last, logging = kill_midway(dsn, sim, rng.uniform(1.0, 2.5))
                lost = lost_rows(conn, "clean", sim, last)
                rate = sum(len(v) for v in expected.values()) / STEPS * (last + 1) / logging
                stored = contents(conn, sim)
                assert digest(stored) != digest(expected), "the kill came after the end"
                resume = asyncio.run(_resume_step(dsn, sim))
                assert resume is None or resume <= last + 1
                start = (0 if resume is None else resume) if start_at == "resume_step" else 0
                run_to_end(dsn, sim, start)
                assert digest(contents(conn, sim)) == digest(expected), (sim, start)
                assert_no_duplicate_and_stable_ids(conn, sim)
                report.append((sim, last, lost, lost / rate, resume))
                assert lost <= 50_000  # the logger's max_pending bound
        with capsys.disabled():
            for sim, last, lost, seconds, resume in report:
                print(f"\n{sim}: killed after step {last}, rows lost {lost} (~{seconds:.2f} s"
                      f" of logging), resume_step {resume}", end="")
            print()


async def _resume_step(dsn: str, simulation_id: str) -> int | None:
    async with Store(Settings(dsn=dsn)) as store:
        return await resume_step(store, simulation_id)
