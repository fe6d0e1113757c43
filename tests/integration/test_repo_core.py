"""Experiments, simulations and simulation config through the repositories (real server)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from sim_schema import repositories as repo
from sim_schema.errors import AlreadyExists, LifecycleError, NotFound
from sim_schema.models import Experiment, Simulation, SimulationConfig
from sim_schema.settings import Settings
from sim_schema.store import Store

Conn = psycopg.AsyncConnection[Any]

DOC: dict[str, Any] = {
    "ünïcødé": "☃ 𝄞 é \u2028 'quote' \"dq\" \\",
    "nested": {"a": [1, 2.5, None, True, {"b": [], "c": {}}], "deep": {"x": {"y": {"z": 1}}}},
    "big": 2**60,
    "empty": {},
}


async def test_experiment_round_trip(aconn: Conn) -> None:
    created = await repo.create_experiment(
        aconn,
        "exp-1",
        "Résumé ☃",
        description="d",
        hypothesis="h",
        variables=DOC,
        tags={"domain": "farm"},
        metadata={"owner": "ana"},
        folder_path="/tmp/x",
    )
    assert isinstance(created, Experiment)
    got = await repo.get_experiment(aconn, "exp-1")
    assert got == created
    assert got.variables == DOC and got.tags == {"domain": "farm"}
    assert (got.name, got.description, got.hypothesis, got.folder_path) == (
        "Résumé ☃",
        "d",
        "h",
        "/tmp/x",
    )
    assert got.status == "created" and got.results_summary == {} and got.completed_at is None


async def test_experiment_duplicate_and_missing(aconn: Conn) -> None:
    await repo.create_experiment(aconn, "e", "one")
    with pytest.raises(AlreadyExists, match="experiment 'e' already exists"):
        await repo.create_experiment(aconn, "e", "two")
    assert (await repo.get_experiment(aconn, "e")).name == "one"
    with pytest.raises(NotFound, match="experiment 'nope' not found"):
        await repo.get_experiment(aconn, "nope")
    assert await repo.find_experiment(aconn, "nope") is None
    with pytest.raises(NotFound, match="experiment 'nope'"):
        await repo.update_experiment(aconn, "nope", name="x")
    with pytest.raises(NotFound, match="experiment 'nope'"):
        await repo.delete_experiment(aconn, "nope")


async def test_get_or_create_experiment_keeps_existing(aconn: Conn) -> None:
    first = await repo.get_or_create_experiment(aconn, "e", "first", metadata={"v": 1})
    again = await repo.get_or_create_experiment(aconn, "e", "second", metadata={"v": 2})
    assert again == first and again.name == "first" and again.metadata == {"v": 1}


async def test_list_experiments_with_status_filter(aconn: Conn) -> None:
    for name in ("a", "b", "c"):
        await repo.create_experiment(aconn, name, name)
    await repo.start_experiment(aconn, "b")
    assert [e.experiment_id for e in await repo.list_experiments(aconn)] == ["a", "b", "c"]
    assert [e.experiment_id for e in await repo.list_experiments(aconn, status="running")] == ["b"]
    created = await repo.list_experiments(aconn, status="created")
    assert [e.experiment_id for e in created] == ["a", "c"]
    assert await repo.list_experiments(aconn, status="completed") == []


async def test_update_experiment_merges_json_and_replaces_text(aconn: Conn) -> None:
    await repo.create_experiment(
        aconn, "e", "old", description="keep", metadata={"a": 1, "n": {"x": 1}, "k": "v"}
    )
    before = await repo.get_experiment(aconn, "e")
    updated = await repo.update_experiment(
        aconn,
        "e",
        name="new",
        metadata={"a": 2, "n": {"y": 2}, "ü": ["☃"]},
        results_summary={"r": DOC},
        tags={"t": 1},
    )
    # top-level keys overwrite (shallow merge, like jsonb ||), other stored keys stay
    assert updated.metadata == {"a": 2, "n": {"y": 2}, "k": "v", "ü": ["☃"]}
    assert updated.results_summary == {"r": DOC}
    assert updated.tags == {"t": 1}
    assert updated.name == "new" and updated.description == "keep"
    assert updated.updated_at >= before.updated_at
    assert await repo.get_experiment(aconn, "e") == updated
    untouched = await repo.update_experiment(aconn, "e")
    assert untouched.metadata == updated.metadata and untouched.name == "new"


async def test_simulation_round_trip(aconn: Conn) -> None:
    await repo.create_experiment(aconn, "e", "exp")
    created = await repo.create_simulation(
        aconn,
        "sim-1",
        experiment_id="e",
        name="run ☃",
        description="desc",
        parameters=DOC,
        metadata={"seed": 42},
    )
    assert isinstance(created, Simulation)
    got = await repo.get_simulation(aconn, "sim-1")
    assert got == created
    assert got.parameters == DOC and got.metadata == {"seed": 42}
    assert (got.experiment_id, got.name, got.description) == ("e", "run ☃", "desc")
    assert got.status == "created" and got.started_at is None and got.step_count is None


async def test_simulation_errors_name_the_key(aconn: Conn) -> None:
    with pytest.raises(NotFound, match="experiment 'no-such-exp' not found"):
        await repo.create_simulation(aconn, "s", experiment_id="no-such-exp")
    assert await repo.find_simulation(aconn, "s") is None
    await repo.create_simulation(aconn, "s")
    with pytest.raises(AlreadyExists, match="simulation 's' already exists"):
        await repo.create_simulation(aconn, "s")
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await repo.get_simulation(aconn, "ghost")
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await repo.update_simulation(aconn, "ghost", metadata={"a": 1})


async def test_list_simulations_by_experiment_and_status(aconn: Conn) -> None:
    await repo.create_experiment(aconn, "e1", "one")
    await repo.create_experiment(aconn, "e2", "two")
    for sim, exp in (("a", "e1"), ("b", "e1"), ("c", "e2"), ("d", None)):
        await repo.create_simulation(aconn, sim, experiment_id=exp)
    await repo.start_simulation(aconn, "b")
    await repo.start_simulation(aconn, "c")

    async def ids(**kw: Any) -> list[str]:
        return [s.simulation_id for s in await repo.list_simulations(aconn, **kw)]

    assert await ids() == ["a", "b", "c", "d"]
    assert await ids(experiment_id="e1") == ["a", "b"]
    assert await ids(status="running") == ["b", "c"]
    assert await ids(experiment_id="e1", status="running") == ["b"]
    assert await ids(experiment_id="e2", status="created") == []


async def test_update_simulation_merges(aconn: Conn) -> None:
    await repo.create_simulation(aconn, "s", parameters={"n": 1, "m": 2}, metadata={"x": 1})
    sim = await repo.update_simulation(
        aconn, "s", name="named", parameters={"m": 3}, results_summary={"score": 0.5}
    )
    assert sim.parameters == {"n": 1, "m": 3}
    assert sim.metadata == {"x": 1}
    assert sim.results_summary == {"score": 0.5}
    assert sim.name == "named"
    sim = await repo.update_simulation(aconn, "s", results_summary={"other": [1]})
    assert sim.results_summary == {"score": 0.5, "other": [1]}


async def test_delete_cascades(aconn: Conn) -> None:
    await repo.create_experiment(aconn, "e", "exp")
    await repo.create_simulation(aconn, "s", experiment_id="e")
    await repo.save_simulation_config(aconn, "s", {"a": 1})
    with pytest.raises(LifecycleError, match="still holds 1 simulation"):
        await repo.delete_experiment(aconn, "e")
    assert await repo.find_simulation(aconn, "s") is not None
    deleted = await repo.delete_experiment(aconn, "e", cascade=True)
    assert deleted["experiments"] == 1 and deleted["simulations"] == 1
    assert deleted["simulation_config"] == 1
    assert await repo.find_simulation(aconn, "s") is None
    assert await repo.list_simulation_configs(aconn, "s") == []
    await repo.create_simulation(aconn, "s2")
    await repo.delete_simulation(aconn, "s2")
    with pytest.raises(NotFound, match="simulation 's2'"):
        await repo.delete_simulation(aconn, "s2")


async def test_simulation_config_versions(aconn: Conn) -> None:
    await repo.create_simulation(aconn, "s")
    first = await repo.save_simulation_config(aconn, "s", DOC)
    assert isinstance(first, SimulationConfig)
    assert (first.simulation_id, first.config_id, first.config) == ("s", 0, DOC)
    second = await repo.save_simulation_config(aconn, "s", [1, "two", {"3": None}])
    assert second.config_id == 1
    assert (await repo.get_simulation_config(aconn, "s")) == second
    assert (await repo.get_simulation_config(aconn, "s", 0)).config == DOC
    assert [c.config_id for c in await repo.list_simulation_configs(aconn, "s")] == [0, 1]
    with pytest.raises(NotFound, match="simulation 's' has no config 7"):
        await repo.get_simulation_config(aconn, "s", 7)
    await repo.create_simulation(aconn, "empty")
    with pytest.raises(NotFound, match=r"simulation 'empty' has no config$"):
        await repo.get_simulation_config(aconn, "empty")
    with pytest.raises(NotFound, match="simulation 'ghost' not found"):
        await repo.save_simulation_config(aconn, "ghost", {})


async def test_concurrent_config_saves_get_dense_ids(dsn: str) -> None:
    async with Store(Settings(dsn=dsn, pool_min_size=0, pool_max_size=6)) as store:
        async with store.connection() as conn:
            await repo.create_simulation(conn, "s")

        async def save(i: int) -> int:
            async with store.connection() as conn:
                return (await repo.save_simulation_config(conn, "s", {"i": i})).config_id

        ids = await asyncio.gather(*(save(i) for i in range(12)))
        async with store.connection() as conn:
            stored = await repo.list_simulation_configs(conn, "s")
    assert sorted(ids) == list(range(12))
    assert sorted(c.config["i"] for c in stored) == list(range(12))
