"""Lifecycle rules of simulations and experiments, against a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from sim_schema import repositories as repo
from sim_schema.errors import LifecycleError, NotFound, ValidationError
from sim_schema.models import ExperimentStatus, SimulationStatus
from sim_schema.repositories.simulations import TRANSITIONS
from sim_schema.settings import Settings
from sim_schema.store import Store

Conn = psycopg.AsyncConnection[Any]

ACTIONS = {
    "start": repo.start_simulation,
    "pause": repo.pause_simulation,
    "resume": repo.resume_simulation,
    "complete": repo.complete_simulation,
    "abort": repo.abort_simulation,
}


async def _fail(conn: Conn, simulation_id: str) -> Any:
    return await repo.fail_simulation(conn, simulation_id, "boom")


ACTIONS["fail"] = _fail

# How to bring a fresh simulation into each status.
PATHS: dict[SimulationStatus, list[str]] = {
    SimulationStatus.CREATED: [],
    SimulationStatus.RUNNING: ["start"],
    SimulationStatus.PAUSED: ["start", "pause"],
    SimulationStatus.COMPLETED: ["start", "complete"],
    SimulationStatus.FAILED: ["start", "fail"],
    SimulationStatus.ABORTED: ["abort"],
}


async def _sim_in(conn: Conn, status: SimulationStatus, simulation_id: str = "s1") -> None:
    await repo.create_simulation(conn, simulation_id)
    for action in PATHS[status]:
        await ACTIONS[action](conn, simulation_id)
    assert (await repo.get_simulation(conn, simulation_id)).status == status


@pytest.mark.parametrize("status", list(SimulationStatus))
@pytest.mark.parametrize("action", list(TRANSITIONS))
async def test_every_simulation_transition(
    aconn: Conn, status: SimulationStatus, action: str
) -> None:
    await _sim_in(aconn, status)
    target, allowed = TRANSITIONS[action]
    if status in allowed:
        sim = await ACTIONS[action](aconn, "s1")
        assert sim.status == target
        assert (await repo.get_simulation(aconn, "s1")).status == target
    else:
        with pytest.raises(LifecycleError) as info:
            await ACTIONS[action](aconn, "s1")
        message = str(info.value)
        assert "'s1'" in message and f"'{status.value}'" in message and action in message
        assert (await repo.get_simulation(aconn, "s1")).status == status


def test_transition_table_matches_the_rules() -> None:
    s = SimulationStatus
    assert TRANSITIONS["complete"][1] == (s.RUNNING, s.PAUSED)  # never from created
    assert TRANSITIONS["start"][1] == (s.CREATED,)
    for action in TRANSITIONS:
        for final in (s.COMPLETED, s.FAILED, s.ABORTED):
            assert final not in TRANSITIONS[action][1]


async def test_complete_never_started_names_status(aconn: Conn) -> None:
    await repo.create_simulation(aconn, "fresh")
    with pytest.raises(
        LifecycleError, match=r"cannot complete simulation 'fresh': it is 'created'"
    ):
        await repo.complete_simulation(aconn, "fresh", step_count=10)
    sim = await repo.get_simulation(aconn, "fresh")
    assert sim.step_count is None and sim.ended_at is None


async def test_full_run_sets_timestamps_and_results(aconn: Conn) -> None:
    await repo.create_simulation(aconn, "s1", parameters={"n": 3})
    await repo.update_simulation(aconn, "s1", results_summary={"kept": 1, "over": "old"})
    started = await repo.start_simulation(aconn, "s1")
    assert started.started_at is not None and started.ended_at is None
    paused = await repo.pause_simulation(aconn, "s1")
    assert paused.status == "paused"
    resumed = await repo.resume_simulation(aconn, "s1")
    assert resumed.started_at == started.started_at  # resuming keeps the start time
    done = await repo.complete_simulation(
        aconn, "s1", step_count=100, results_summary={"over": "new", "π": [1, {"x": None}]}
    )
    assert done.status == SimulationStatus.COMPLETED
    assert done.step_count == 100
    assert done.ended_at is not None and done.ended_at >= done.started_at  # type: ignore[operator]
    assert done.results_summary == {"kept": 1, "over": "new", "π": [1, {"x": None}]}
    assert done.error is None


async def test_fail_records_error_and_abort_reason(aconn: Conn) -> None:
    await repo.create_simulation(aconn, "f")
    await repo.start_simulation(aconn, "f")
    failed = await repo.fail_simulation(aconn, "f", "ZeroDivisionError: ±∞", step_count=7)
    assert (failed.status, failed.error, failed.step_count) == (
        "failed",
        "ZeroDivisionError: ±∞",
        7,
    )
    assert failed.ended_at is not None
    await repo.create_simulation(aconn, "a")
    aborted = await repo.abort_simulation(aconn, "a", reason="operator stop")
    assert (aborted.status, aborted.error, aborted.started_at) == ("aborted", "operator stop", None)
    assert aborted.ended_at is not None


async def test_negative_step_count_is_a_validation_error(aconn: Conn) -> None:
    await repo.create_simulation(aconn, "s1")
    await repo.start_simulation(aconn, "s1")
    with pytest.raises(ValidationError) as info:
        await repo.complete_simulation(aconn, "s1", step_count=-1)
    assert info.value.table == "simulations" and info.value.field == "step_count"
    assert (await repo.get_simulation(aconn, "s1")).status == "running"


@pytest.mark.parametrize("action", list(TRANSITIONS))
async def test_transition_of_missing_simulation_is_not_found(aconn: Conn, action: str) -> None:
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await ACTIONS[action](aconn, "ghost")


async def test_concurrent_starts_only_one_wins(dsn: str) -> None:
    async with Store(Settings(dsn=dsn, pool_min_size=0, pool_max_size=8)) as store:
        async with store.connection() as conn:
            await repo.create_simulation(conn, "race")

        async def start() -> str:
            async with store.connection() as conn:
                try:
                    await repo.start_simulation(conn, "race")
                except LifecycleError:
                    return "refused"
                return "started"

        results = await asyncio.gather(*(start() for _ in range(8)))
    assert sorted(results) == ["refused"] * 7 + ["started"]


# -- experiments ---------------------------------------------------------------------------


async def test_experiment_lifecycle_happy_path(aconn: Conn) -> None:
    exp = await repo.create_experiment(aconn, "e1", "Exp")
    assert exp.status == ExperimentStatus.CREATED and exp.completed_at is None
    running = await repo.start_experiment(aconn, "e1")
    assert running.status == "running" and running.completed_at is None
    done = await repo.complete_experiment(aconn, "e1", results_summary={"best": "s3"})
    assert done.status == "completed" and done.completed_at is not None
    assert done.results_summary == {"best": "s3"}


@pytest.mark.parametrize(
    ("path", "action", "allowed"),
    [
        ([], "complete", False),  # no completing an experiment that never ran
        ([], "fail", True),
        ([], "abort", True),
        (["start"], "start", False),
        (["start", "complete"], "fail", False),
        (["start", "fail"], "start", False),
        (["abort"], "complete", False),
    ],
)
async def test_experiment_transitions(
    aconn: Conn, path: list[str], action: str, allowed: bool
) -> None:
    functions = {
        "start": repo.start_experiment,
        "complete": repo.complete_experiment,
        "fail": repo.fail_experiment,
        "abort": repo.abort_experiment,
    }
    await repo.create_experiment(aconn, "e1", "Exp")
    for step in path:
        await functions[step](aconn, "e1")
    before = (await repo.get_experiment(aconn, "e1")).status
    if allowed:
        await functions[action](aconn, "e1")
    else:
        with pytest.raises(
            LifecycleError, match=rf"cannot {action} experiment 'e1': it is '{before}'"
        ):
            await functions[action](aconn, "e1")
        assert (await repo.get_experiment(aconn, "e1")).status == before


async def test_fail_experiment_records_error(aconn: Conn) -> None:
    await repo.create_experiment(aconn, "e1", "Exp", metadata={"a": 1})
    failed = await repo.fail_experiment(aconn, "e1", error="RuntimeError: x")
    assert failed.status == "failed" and failed.results_summary == {"error": "RuntimeError: x"}
    assert failed.metadata == {"a": 1}


async def test_experiment_transition_missing_is_not_found(aconn: Conn) -> None:
    with pytest.raises(NotFound, match="experiment 'nope' not found"):
        await repo.start_experiment(aconn, "nope")
