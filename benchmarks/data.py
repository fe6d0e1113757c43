"""Deterministic synthetic simulation data: agents, agent states and actions.

Rows are plain tuples in `sim.agent_states` column order, so every contender receives the
same values; JSON columns hold Python dicts (each contender serializes them its own way).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

STATE_COLUMNS = (
    "simulation_id",
    "step",
    "agent_id",
    "position_x",
    "position_y",
    "position_z",
    "resource_level",
    "health",
    "is_defending",
    "total_reward",
    "age",
    "profile",
    "memory",
    "relationships",
    "extras",
)
STATE_TYPES = (
    "text",
    "integer",
    "text",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "bool",
    "float8",
    "integer",
    "jsonb",
    "jsonb",
    "jsonb",
    "jsonb",
)
AGENT_TYPES = ("system", "independent", "control")
MOODS = ("calm", "hungry", "alert", "fleeing", "curious")
ACTIONS = ("move", "gather", "share", "attack", "defend", "reproduce")

StateRow = tuple[Any, ...]


@dataclass(frozen=True)
class Shape:
    """N simulations x A agents x S steps; one agent state and ~one action per agent-step."""

    sims: int = 2
    agents: int = 500
    steps: int = 1000
    seed: int = 42
    prefix: str = "bench"

    @property
    def rows(self) -> int:
        return self.sims * self.agents * self.steps

    def sim_id(self, i: int) -> str:
        return f"{self.prefix}-sim-{i:03d}"

    def sim_ids(self) -> list[str]:
        return [self.sim_id(i) for i in range(self.sims)]


def agent_id(n: int) -> str:
    return f"agent-{n:06d}"


def agent_type(n: int) -> str:
    return AGENT_TYPES[n % len(AGENT_TYPES)]


def agent_rows(shape: Shape) -> list[tuple[str, str, str]]:
    """(simulation_id, agent_id, agent_type) for every agent of every simulation."""
    return [
        (sid, agent_id(a), agent_type(a)) for sid in shape.sim_ids() for a in range(shape.agents)
    ]


def iter_states(shape: Shape, sim_index: int) -> Iterator[StateRow]:
    """One simulation's agent states in arrival order (step by step), deterministic per seed."""
    rng = random.Random(shape.seed * 1_000_003 + sim_index)
    sid = shape.sim_id(sim_index)
    n = shape.agents
    ids = [agent_id(a) for a in range(n)]
    x = [rng.uniform(0, 100) for _ in range(n)]
    y = [rng.uniform(0, 100) for _ in range(n)]
    res = [rng.uniform(5, 20) for _ in range(n)]
    hp = [100.0] * n
    reward = [0.0] * n
    for step in range(shape.steps):
        for a in range(n):
            x[a] += rng.uniform(-1, 1)
            y[a] += rng.uniform(-1, 1)
            res[a] = max(0.0, res[a] + rng.uniform(-1, 1.1))
            hp[a] = min(100.0, max(0.0, hp[a] + rng.uniform(-2, 2)))
            reward[a] += rng.uniform(-0.5, 1)
            extras = {
                "mood": MOODS[rng.randrange(len(MOODS))],
                "energy": round(rng.random(), 4),
                "target": ids[rng.randrange(n)],
                "visited": [rng.randrange(100) for _ in range(3)],
            }
            yield (
                sid,
                step,
                ids[a],
                x[a],
                y[a],
                None,
                res[a],
                hp[a],
                rng.random() < 0.1,
                reward[a],
                step,
                None,
                None,
                None,
                extras,
            )


ACTION_COLUMNS = (
    "simulation_id",
    "step",
    "agent_id",
    "ordinal",
    "action_type",
    "action_target_id",
    "state_before_step",
    "state_after_step",
    "resources_before",
    "resources_after",
    "reward",
    "details",
)


def iter_actions(shape: Shape, sim_index: int) -> Iterator[tuple[Any, ...]]:
    """About one action per agent per step (5% of agent-steps idle), in `ACTION_COLUMNS`
    order: the action is the agent's first (ordinal 0) of its step, taken from the state
    of its step to the state of the next."""
    rng = random.Random(shape.seed * 7_000_003 + sim_index)
    sid = shape.sim_id(sim_index)
    for step in range(shape.steps):
        for a in range(shape.agents):
            if rng.random() < 0.05:  # idle this step
                continue
            before = rng.uniform(0, 20)
            after = before + rng.uniform(-1, 1)
            yield (
                sid,
                step,
                agent_id(a),
                0,
                ACTIONS[rng.randrange(len(ACTIONS))],
                agent_id(rng.randrange(shape.agents)) if rng.random() < 0.3 else None,
                step,
                step + 1,
                before,
                after,
                rng.uniform(-1, 1),
                {"success": rng.random() < 0.8},
            )


def keyed(
    rows: Iterable[tuple[Any, ...]],
    sim_keys: dict[str, int],
    agent_keys: dict[tuple[str, str], int],
) -> list[tuple[Any, ...]]:
    """Rows with simulation_id and agent_id (positions 0 and 2) replaced by the current
    schema's sim_key and agent_key: what a client that maps ids itself copies into the
    `_data` tables."""
    return [(sim_keys[r[0]], r[1], agent_keys[(r[0], r[2])], *r[3:]) for r in rows]


def all_states(shape: Shape) -> list[StateRow]:
    return [row for i in range(shape.sims) for row in iter_states(shape, i)]


def state_dict(row: StateRow) -> dict[str, Any]:
    return dict(zip(STATE_COLUMNS, row, strict=True))
