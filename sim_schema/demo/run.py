"""`sim-schema demo`: an experiment of a few simulations, logged and analysed end to end.

Everything goes through the public API a user would call: `ExperimentManager` and its
loggers for the writes, the repositories for deaths and decisions, `queries` for the
summaries. Simulations run concurrently, one logger (and connection) each.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from .. import repositories as repo
from ..ingest.experiment import ExperimentManager, SimulationContext
from ..models import AgentDecisionCreate
from ..read import queries
from ..store import Store
from .model import Agent, World

REGEN_RATES = (0.6, 0.9, 1.2)
EXPERIMENT_NAME = "Resource regrowth sweep"
PARAMETER = "regen_rate"  # the parameter the simulations differ by


@dataclass
class DemoResult:
    experiment_id: str
    simulation_ids: list[str]
    rows_logged: int
    seconds: float
    experiment_name: str = EXPERIMENT_NAME
    summaries: list[queries.SimulationSummary] = field(default_factory=list)
    population: dict[str, list[tuple[int, int | float | None]]] = field(default_factory=dict)
    compare_seconds: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)  # simulation id -> regen_rate

    def label(self, simulation_id: str) -> str:
        """A simulation by the value of the parameter it differs by: `regen_rate=0.6`."""
        return f"{PARAMETER}={self.rates[simulation_id]:g}"


@dataclass(frozen=True)
class DatabaseContents:
    """How much a database holds, for the demo to say after adding its rows."""

    experiments: int
    simulations: int
    bytes: int

    def describe(self) -> str:
        return (
            f"{self.experiments:,} experiment(s), {self.simulations:,} simulation(s), "
            f"{self.bytes / 2**20:,.0f} MB"
        )

    def as_dict(self) -> dict[str, int]:
        return {"experiments": self.experiments, "simulations": self.simulations,
                "bytes": self.bytes}  # fmt: skip


def database_contents(conn: psycopg.Connection[Any]) -> DatabaseContents:
    """Experiments, simulations and size of the database (search path: the module's schema)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM experiments), (SELECT count(*) FROM simulations),"
        " pg_database_size(current_database())"
    ).fetchone()
    assert row is not None
    return DatabaseContents(int(row[0]), int(row[1]), int(row[2]))


def regen_rates(simulations: int) -> list[float]:
    if simulations <= len(REGEN_RATES):
        return list(REGEN_RATES[:simulations])
    lo, hi = REGEN_RATES[0], REGEN_RATES[-1]
    return [round(lo + (hi - lo) * i / (simulations - 1), 3) for i in range(simulations)]


def _agent_row(world: World, agent: Agent) -> dict[str, Any]:
    return dict(
        agent_id=agent.agent_id,
        agent_type=agent.agent_type,
        birth_step=agent.birth_step,
        position_x=agent.x,
        position_y=agent.y,
        initial_resources=agent.resources,
        starting_health=agent.health,
        starvation_threshold=world.starvation_threshold,
        genome_id=agent.genome_id,
        generation=agent.generation,
        parent_ids=agent.parent_ids,
    )


async def _run_one(
    ctx: SimulationContext,
    world: World,
    steps: int,
    report: Callable[[str], None],
) -> int:
    log = ctx.logger
    agent_rows = [_agent_row(world, a) for a in world.agents]
    await log.log_agents(agent_rows)
    rows = len(agent_rows)
    deaths: dict[str, int] = {}
    decisions: list[AgentDecisionCreate] = []
    for step in range(steps):
        rec = world.step()
        births = [_agent_row(world, a) for a in rec.births]
        if births:
            await log.log_agents(births)
        deaths.update({a.agent_id: step for a in rec.deaths})
        await log.log_agent_states(rec.states)
        await log.log_actions(rec.actions)
        await log.log_resource_states(rec.resources)
        await log.log_learning_experiences(rec.learning)
        await log.log_health_incidents(rec.incidents)
        await log.log_interactions(rec.interactions)
        await log.log_steps([rec.metrics])
        rows += len(births) + len(rec.states) + len(rec.actions) + len(rec.resources)
        rows += len(rec.learning) + len(rec.incidents) + len(rec.interactions) + 1
        # An LLM-style decision trail for the first agent alive: event + decision.
        if rec.actions:
            act = rec.actions[0]
            event_id = await log.log_event(
                step,
                "decision_request",
                source_type="environment",
                source_id="world",
                target_type="agent",
                target_id=act["agent_id"],
                priority=1,
                payload={"observation": {"resources": act["resources_before"]}},
            )
            rows += 1
            decisions.append(
                AgentDecisionCreate(
                    simulation_id=ctx.simulation_id,
                    event_id=event_id,
                    step=step,
                    agent_id=act["agent_id"],
                    prompt=f"You hold {act['resources_before']:.1f} resources. What do you do?",
                    output=act["action_type"],
                    context={"step": step},
                    action={"type": act["action_type"], "target": act["action_target_id"]},
                    processing_time=0.001,
                )
            )
        if rec.environment is not None:
            async with ctx.store.connection() as conn:
                await repo.save_environment_state(conn, ctx.simulation_id, step, rec.environment)
            rows += 1
        if (step + 1) % 100 == 0 or step + 1 == steps:
            report(
                f"{ctx.simulation_id}: step {step + 1}/{steps}, "
                f"{len(rec.states)} agents alive, {rows:,} rows logged"
            )
    await log.flush()
    async with ctx.store.connection() as conn:
        await repo.record_agent_deaths(conn, ctx.simulation_id, deaths)
        async with conn.transaction():
            for i, decision in enumerate(decisions):
                await repo.record_decision(conn, decision)
                if i % 10 == 0:  # a reviewer rated every tenth decision
                    good = decision.output in ("gather", "share")
                    await repo.add_decision_feedback(
                        conn,
                        ctx.simulation_id,
                        decision.decision_id,
                        feedback="useful" if good else "wasteful",
                        rating=1.0 if good else 0.0,
                        reason="gathering and sharing keep the population alive",
                    )
    return rows + len(decisions)


async def run_demo(
    store: Store,
    *,
    simulations: int = 3,
    agents: int = 250,
    steps: int = 300,
    seed: int = 7,
    experiment_id: str | None = None,
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> DemoResult:
    started = time.monotonic()
    experiment_id = experiment_id or "demo_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f")
    rates = regen_rates(simulations)
    total = 0
    async with ExperimentManager(
        store,
        experiment_id,
        name=EXPERIMENT_NAME,
        hypothesis="faster resource regrowth sustains a larger population",
        variables={PARAMETER: rates},
    ) as manager:
        contexts: list[tuple[SimulationContext, World]] = []
        for i, rate in enumerate(rates):
            params = {PARAMETER: rate, "agents": agents, "steps": steps, "seed": seed + i}
            ctx = await manager.create_simulation(f"{experiment_id}_{PARAMETER}_{rate}", params)
            contexts.append((ctx, World(seed=seed + i, agents=agents, regen_rate=rate)))
        counts = await asyncio.gather(*(_run_one(c, w, steps, report) for c, w in contexts))
        total = sum(counts)
        for (ctx, world), _count in zip(contexts, counts, strict=True):
            await manager.complete_simulation(
                ctx.simulation_id,
                step_count=steps,
                results_summary={
                    "final_population": len(world.alive()),
                    "agents_ever": len(world.agents),
                },
            )
    result = DemoResult(
        experiment_id, [c.simulation_id for c, _ in contexts], total, time.monotonic() - started,
        rates={c.simulation_id: rate for (c, _), rate in zip(contexts, rates, strict=True)},
    )  # fmt: skip
    async with store.connection() as conn:
        result.summaries = await queries.simulation_summaries(conn, experiment_id=experiment_id)
        t0 = time.monotonic()
        async for point in queries.compare_metric(
            conn, "total_agents", experiment_id=experiment_id
        ):
            result.population.setdefault(point.simulation_id, []).append((point.step, point.value))
        result.compare_seconds = time.monotonic() - t0
    return result


def format_report(result: DemoResult, every: int = 50) -> str:
    lines = [
        f"experiment {result.experiment_id} ({result.experiment_name}): "
        f"{len(result.simulation_ids)} simulations, "
        f"{result.rows_logged:,} rows added in {result.seconds:.1f} s "
        f"({result.rows_logged / max(result.seconds, 1e-9):,.0f} rows/s)",
        "",
    ]
    header = (
        f"{'simulation':<44} {PARAMETER:>10} {'agents':>6} {'births':>6} {'deaths':>6} "
        f"{'final pop':>9} {'avg health':>10}"
    )
    lines += ["per-simulation summary", header, "-" * len(header)]
    for s in result.summaries:
        health = s.final_average_agent_health
        lines.append(
            f"{s.simulation_id:<44} {result.rates[s.simulation_id]:>10g} {s.agents:>6} "
            f"{s.births:>6} {s.deaths:>6} {s.final_total_agents!s:>9} "
            f"{(f'{health:.1f}' if health is not None else '-'):>10}"
        )
    sims = list(result.population)
    lines += [
        "",
        f"cross-simulation comparison: total_agents by step "
        f"(query took {result.compare_seconds * 1000:.0f} ms)",
    ]
    width = max(12, *(len(result.label(s)) for s in sims))
    lines.append(f"{'step':>6} " + " ".join(f"{result.label(s):>{width}}" for s in sims))
    steps = sorted({step for pts in result.population.values() for step, _ in pts})
    by_sim = {s: dict(pts) for s, pts in result.population.items()}
    for step in steps:
        if step % every == 0 or step == steps[-1]:
            cells = " ".join(f"{_fmt(by_sim[s].get(step)):>{width}}" for s in sims)
            lines.append(f"{step:>6} {cells}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def chart_figure(result: DemoResult) -> Any:
    """The population chart as a matplotlib Figure (needs the `[plot]` extra): one line per
    simulation, labelled by its parameter, the y axis from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for sim, points in result.population.items():
        ys = [float("nan") if p[1] is None else p[1] for p in points]
        ax.plot([p[0] for p in points], ys, label=result.label(sim))
    ax.set_xlabel("step")
    ax.set_ylabel("agents alive")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{result.experiment_name}: population over time")
    ax.legend(title=f"simulation ({result.experiment_id})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_chart(result: DemoResult, path: Path) -> Path:
    """A PNG of population over time per simulation (needs the `[plot]` extra)."""
    import matplotlib.pyplot as plt

    fig = chart_figure(result)
    fig.savefig(path)
    plt.close(fig)
    return path


def chart_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
