"""The built-in agent simulation that `sim-schema demo` runs and logs.

A small foraging world: agents of three types move on a grid, gather regrowing
resources, share or attack, reproduce when rich and die when starved. It exists to
produce realistic rows for every table, deterministically (seeded), fast enough that
the demo spends its time in the database layer, not here.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

AGENT_TYPES = ("system", "independent", "control")
ACTIONS = ("move", "gather", "share", "attack", "defend", "reproduce")


@dataclass
class Agent:
    agent_id: str
    agent_type: str
    x: float
    y: float
    resources: float
    health: float
    birth_step: int
    generation: int = 0
    parent_ids: list[str] = field(default_factory=list)
    genome_id: str = ""
    age: int = 0
    total_reward: float = 0.0
    hungry_steps: int = 0
    defending: bool = False
    death_step: int | None = None


@dataclass
class Resource:
    resource_id: int
    x: float
    y: float
    amount: float


@dataclass
class StepRecord:
    """Everything one step produced, as plain dicts keyed by column name."""

    step: int
    births: list[Agent]
    deaths: list[Agent]
    states: list[dict[str, Any]]
    actions: list[dict[str, Any]]
    resources: list[dict[str, Any]]
    metrics: dict[str, Any]
    incidents: list[dict[str, Any]]
    learning: list[dict[str, Any]]
    interactions: list[dict[str, Any]]
    environment: dict[str, Any] | None


def _incident(
    step: int, agent: Agent, health_before: float, cause: str, details: dict[str, Any]
) -> dict[str, Any]:
    """A health_incidents row for `agent`, whose health has just changed."""
    return {
        "step": step,
        "agent_id": agent.agent_id,
        "health_before": health_before,
        "health_after": agent.health,
        "cause": cause,
        "details": details,
    }


class World:
    def __init__(
        self,
        *,
        seed: int,
        agents: int = 200,
        resources: int = 60,
        size: float = 50.0,
        regen_rate: float = 0.5,
        starvation_threshold: int = 8,
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a seeded simulation, not cryptography
        self.size = size
        self.regen_rate = regen_rate
        self.starvation_threshold = starvation_threshold
        self.next_id = 0
        self.agents: list[Agent] = [
            self._new_agent(0, self.rng.choice(AGENT_TYPES)) for _ in range(agents)
        ]
        self.resources = [
            Resource(i, self.rng.uniform(0, size), self.rng.uniform(0, size), 10.0)
            for i in range(resources)
        ]
        self.step_no = 0

    def _new_agent(self, step: int, agent_type: str, parent: Agent | None = None) -> Agent:
        self.next_id += 1
        x = parent.x if parent else self.rng.uniform(0, self.size)
        y = parent.y if parent else self.rng.uniform(0, self.size)
        return Agent(
            agent_id=f"agent_{self.next_id:05d}",
            agent_type=agent_type,
            x=x,
            y=y,
            resources=5.0,
            health=100.0,
            birth_step=step,
            generation=parent.generation + 1 if parent else 0,
            parent_ids=[parent.agent_id] if parent else [],
            genome_id=f"g{self.rng.randrange(16):02d}",
        )

    def alive(self) -> list[Agent]:
        return [a for a in self.agents if a.death_step is None]

    def step(self) -> StepRecord:
        step = self.step_no
        rng = self.rng
        rec = StepRecord(step, [], [], [], [], [], {}, [], [], [], None)
        alive = self.alive()
        combats = attacks_ok = 0
        shared = consumed = 0.0
        for agent in alive:
            before = agent.resources
            near = min(self.resources, key=lambda r: (r.x - agent.x) ** 2 + (r.y - agent.y) ** 2)
            dist = math.hypot(near.x - agent.x, near.y - agent.y)
            target: str | None = None
            reward = 0.0
            if agent.resources > 12 and rng.random() < 0.3:
                action = "reproduce"
            elif dist < 2.0 and near.amount > 0.5:
                action = "gather"
            elif rng.random() < 0.08:
                action = rng.choice(("share", "attack", "defend"))
            else:
                action = "move"
            agent.defending = action == "defend"
            if action == "move":
                step_len = min(2.0, dist)
                agent.x += (near.x - agent.x) / max(dist, 1e-9) * step_len + rng.uniform(-0.5, 0.5)
                agent.y += (near.y - agent.y) / max(dist, 1e-9) * step_len + rng.uniform(-0.5, 0.5)
                agent.x = min(max(agent.x, 0.0), self.size)
                agent.y = min(max(agent.y, 0.0), self.size)
            elif action == "gather":
                got = min(near.amount, 3.0)
                near.amount -= got
                agent.resources += got
                reward = got
                target = f"resource_{near.resource_id}"
            elif action in ("share", "attack") and len(alive) > 1:
                other = rng.choice(alive)
                if other is not agent and other.death_step is None:
                    target = other.agent_id
                    if action == "share" and agent.resources > 2:
                        agent.resources -= 1.0
                        other.resources += 1.0
                        shared += 1.0
                        reward = 0.5
                    elif action == "attack":
                        combats += 1
                        damage = 5.0 if other.defending else 15.0
                        h0 = other.health
                        other.health = max(0.0, other.health - damage)
                        attacks_ok += int(not other.defending)
                        reward = 1.0 if not other.defending else -0.5
                        rec.incidents.append(
                            _incident(step, other, h0, "attack", {"attacker": agent.agent_id})
                        )
                    rec.interactions.append(
                        dict(
                            step=step,
                            source_type="agent",
                            source_id=agent.agent_id,
                            target_type="agent",
                            target_id=other.agent_id,
                            interaction_type=action,
                            action_type=action,
                            details={},
                        )
                    )
            elif action == "reproduce":
                agent.resources -= 6.0
                child = self._new_agent(step, agent.agent_type, agent)
                self.agents.append(child)
                rec.births.append(child)
                target = child.agent_id
                reward = 2.0
            # metabolism
            agent.resources -= 0.4
            consumed += 0.4
            if agent.resources <= 0:
                agent.resources = 0.0
                agent.hungry_steps += 1
                h0 = agent.health
                agent.health = max(0.0, agent.health - 12.0)
                rec.incidents.append(_incident(step, agent, h0, "starvation", {}))
            else:
                agent.hungry_steps = 0
            agent.age += 1
            agent.total_reward += reward
            rec.actions.append(
                dict(
                    step=step,
                    agent_id=agent.agent_id,
                    action_type=action,
                    action_target_id=target,
                    state_before_step=step,
                    state_after_step=step,
                    resources_before=before,
                    resources_after=agent.resources,
                    reward=reward,
                    details={"distance": round(dist, 3)},
                )
            )
            rec.learning.append(
                dict(
                    step=step,
                    agent_id=agent.agent_id,
                    module_type="foraging",
                    module_id=agent.agent_type,
                    action_taken=ACTIONS.index(action),
                    action_taken_mapped=action,
                    reward=reward,
                    details=None,
                )
            )
        for agent in alive:
            if agent.health <= 0 or agent.hungry_steps > self.starvation_threshold:
                agent.death_step = step
                rec.deaths.append(agent)
        for r in self.resources:
            r.amount = min(20.0, r.amount + self.regen_rate)
            rec.resources.append(
                dict(
                    step=step,
                    resource_id=r.resource_id,
                    amount=r.amount,
                    position_x=r.x,
                    position_y=r.y,
                )
            )
        survivors = self.alive()
        for agent in survivors:
            rec.states.append(
                dict(
                    step=step,
                    agent_id=agent.agent_id,
                    position_x=agent.x,
                    position_y=agent.y,
                    position_z=0.0,
                    resource_level=agent.resources,
                    health=agent.health,
                    is_defending=agent.defending,
                    total_reward=agent.total_reward,
                    age=agent.age,
                    extras={"genome": agent.genome_id, "hungry": agent.hungry_steps},
                )
            )
        n = len(survivors)
        by_type = {t: sum(1 for a in survivors if a.agent_type == t) for t in AGENT_TYPES}
        genomes = [a.genome_id for a in survivors]
        top = max((genomes.count(g) for g in set(genomes)), default=0)
        rec.metrics = dict(
            step=step,
            total_agents=n,
            system_agents=by_type["system"],
            independent_agents=by_type["independent"],
            control_agents=by_type["control"],
            total_resources=sum(r.amount for r in self.resources),
            average_agent_resources=sum(a.resources for a in survivors) / n if n else 0.0,
            births=len(rec.births),
            deaths=len(rec.deaths),
            current_max_generation=max((a.generation for a in survivors), default=0),
            resource_efficiency=consumed / (consumed + sum(r.amount for r in self.resources)),
            resource_distribution_entropy=0.0,
            average_agent_health=sum(a.health for a in survivors) / n if n else 0.0,
            average_agent_age=sum(a.age for a in survivors) / n if n else 0.0,
            average_reward=sum(a.total_reward for a in survivors) / n if n else 0.0,
            combat_encounters=combats,
            successful_attacks=attacks_ok,
            resources_shared=shared,
            genetic_diversity=len(set(genomes)) / 16.0,
            dominant_genome_ratio=top / n if n else 0.0,
            resources_consumed=consumed,
            metrics={"regen_rate": self.regen_rate},
        )
        if step % 10 == 0:
            rec.environment = {
                "step": step,
                "resources": {str(r.resource_id): round(r.amount, 2) for r in self.resources[:10]},
                "population": by_type,
            }
        self.step_no += 1
        return rec
