"""Deterministic test data, kept in Python so tests can compute expected answers themselves.

`make_seed()` builds rows for every table (an experiment of three simulations differing
by parameters, plus one stand-alone simulation); `insert(conn, seed)` writes them with
plain `executemany`. `seed_bulk(conn, ...)` fills agent_states in SQL for plan tests.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

EXPERIMENT = "exp_sweep"
TYPES = ("system", "independent", "control")
ACTIONS = ("move", "gather", "share", "attack")
MODULES = ("move", "gather")
CAUSES = ("starvation", "combat", "disease")
JSON_COLUMNS = {"parameters", "metrics", "state", "context", "action", "details", "payload",
                "profile", "memory", "relationships"}

Row = dict[str, Any]


@dataclass
class Seed:
    tables: dict[str, list[Row]] = field(default_factory=dict)

    def rows(self, table: str, simulation_id: str | None = None) -> list[Row]:
        return [
            r
            for r in self.tables.get(table, [])
            if simulation_id is None or r.get("simulation_id") == simulation_id
        ]

    def add(self, table: str, row: Row) -> None:
        self.tables.setdefault(table, []).append(row)

    @property
    def simulation_ids(self) -> list[str]:
        return [r["simulation_id"] for r in self.rows("simulations")]


def _simulation(seed: Seed, rng: random.Random, sim: str, steps: int, agents: int) -> None:
    alive_at: dict[int, list[str]] = {}
    for i in range(agents):
        agent = f"{sim}_a{i:03d}"
        born = 0 if i < agents * 2 // 3 else rng.randrange(1, steps // 2)
        death = rng.randrange(born + 1, steps) if rng.random() < 0.4 else None
        seed.add("agents", {
            "simulation_id": sim, "agent_id": agent, "agent_type": TYPES[i % 3],
            "birth_step": born, "death_step": death, "generation": 0 if born == 0 else 1,
            "initial_resources": 10.0, "starting_health": 100.0,
        })
        for s in range(born, death if death is not None else steps):
            alive_at.setdefault(s, []).append(agent)
    uid = uuid.UUID(int=rng.getrandbits(128))
    for s in range(steps):
        alive = alive_at.get(s, [])
        healths, levels, rewards = [], [], []
        for agent in alive:
            health = round(rng.uniform(20, 100), 2)
            level = round(rng.uniform(0, 30), 2)
            reward = round(rng.uniform(-1, 3), 2)
            healths.append(health)
            levels.append(level)
            rewards.append(reward)
            seed.add("agent_states", {
                "simulation_id": sim, "step": s, "agent_id": agent, "position_x": rng.random(),
                "position_y": rng.random(), "resource_level": level, "health": health,
                "total_reward": reward, "age": s,
                # JSONB logged now and then (not from rng: the other values stay as they were)
                **({"memory": {"seen": s}} if s % 7 == 0 else {}),
                **({"profile": {"mood": f"m{s}"}} if s % 10 == 3 else {}),
                **({"relationships": {"friend": s}} if s % 11 == 5 else {}),
            })
            if rng.random() < 0.5:
                before = round(rng.uniform(0, 20), 2)
                seed.add("agent_actions", {
                    "simulation_id": sim, "step": s, "agent_id": agent,
                    "action_type": rng.choice(ACTIONS), "resources_before": before,
                    "resources_after": round(before + rng.uniform(-2, 4), 2),
                    "reward": round(rng.uniform(-1, 2), 2),
                })
            if rng.random() < 0.3:
                seed.add("learning_experiences", {
                    "simulation_id": sim, "step": s, "agent_id": agent,
                    "module_type": rng.choice(MODULES), "reward": round(rng.uniform(0, s / 10), 2),
                })
            if rng.random() < 0.05:
                seed.add("health_incidents", {
                    "simulation_id": sim, "step": s, "agent_id": agent,
                    "health_before": health, "health_after": round(health - rng.uniform(1, 15), 2),
                    "cause": rng.choice(CAUSES),
                })
            if rng.random() < 0.04:
                uid = uuid.UUID(int=(uid.int + 1) % 2**128)
                event = uuid.UUID(int=(uid.int + 2**64) % 2**128)
                seed.add("events", {
                    "simulation_id": sim, "event_id": event, "step": s,
                    "event_type": "ask", "payload": {"q": s},
                })
                rated = rng.random() < 0.6
                seed.add("agent_decisions", {
                    "simulation_id": sim, "decision_id": uid, "event_id": event, "step": s,
                    "agent_id": agent, "prompt": f"step {s}?", "output": "gather",
                    "context": {"step": s}, "action": {"type": "gather"},
                    "processing_time": round(rng.uniform(0.01, 2), 3),
                    "feedback": "ok" if rated else None,
                    "rating": float(rng.randrange(1, 6)) if rated else None,
                    "reason": "fine" if rated else None,
                })
        amounts = [round(rng.uniform(0, 50), 2) for _ in range(4)]
        for rid, amount in enumerate(amounts):
            seed.add("resource_states", {
                "simulation_id": sim, "step": s, "resource_id": rid, "amount": amount,
            })
        by_type = {t: 0 for t in TYPES}
        for agent in alive:
            by_type[TYPES[int(agent[-3:]) % 3]] += 1
        n = len(alive)
        seed.add("simulation_steps", {
            "simulation_id": sim, "step": s, "total_agents": n,
            "system_agents": by_type["system"], "independent_agents": by_type["independent"],
            "control_agents": by_type["control"], "total_resources": sum(amounts),
            "average_agent_resources": sum(levels) / n if n else None,
            "average_agent_health": sum(healths) / n if n else None,
            "average_reward": sum(rewards) / n if n else None,
            "births": sum(1 for a in seed.rows("agents", sim) if a["birth_step"] == s and s > 0),
            "deaths": sum(1 for a in seed.rows("agents", sim) if a["death_step"] == s),
            "metrics": {"custom_score": round(rng.uniform(0, 1), 3)},
        })
        if s % 5 == 0:
            seed.add("environment_states", {
                "simulation_id": sim, "step": s,
                "state": {"step": s, "weather": rng.choice(["sun", "rain"]),
                          "grid": {"w": 10, "h": 10 + s // 10}, f"k{s // 10}": True},
            })


def make_seed(steps: int = 30, agents: int = 24, seed: int = 7) -> Seed:
    rng = random.Random(seed)
    data = Seed()
    data.add("experiments", {"experiment_id": EXPERIMENT, "name": "food sweep"})
    sims = [("sim_a", {"food": 1, "rate": 0.1}), ("sim_b", {"food": 2, "rate": 0.1}),
            ("sim_c", {"food": 2, "rate": 0.2}), ("solo", {"food": 9})]
    for sim, params in sims:
        data.add("simulations", {
            "simulation_id": sim, "experiment_id": None if sim == "solo" else EXPERIMENT,
            "name": sim, "status": "completed", "parameters": params, "step_count": steps,
        })
        _simulation(data, rng, sim, steps, agents)
    return data


def _value(column: str, value: Any) -> Any:
    return Jsonb(value) if column in JSON_COLUMNS and value is not None else value


ORDER = ("experiments", "simulations", "agents", "agent_states", "agent_actions",
         "resource_states", "simulation_steps", "learning_experiences", "health_incidents",
         "events", "agent_decisions", "environment_states")


def insert(conn: psycopg.Connection[Any], data: Seed) -> None:
    """Write every row with one executemany per table (column sets may differ per table)."""
    with conn.transaction(), conn.cursor() as cur:
        for table in ORDER:
            rows = data.rows(table)
            if not rows:
                continue
            names = list(dict.fromkeys(n for r in rows for n in r))  # NULL where a row has none
            query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, names)),
                sql.SQL(", ").join(sql.Placeholder() * len(names)),
            )
            cur.executemany(query, [[_value(n, r.get(n)) for n in names] for r in rows])


def seed_bulk(conn: psycopg.Connection[Any], sims: int = 6, agents: int = 300,
              steps: int = 200) -> None:
    """Many agent_states rows (sims x agents x steps) made in SQL, then ANALYZE."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO simulations (simulation_id) "
            "SELECT 'bulk' || s FROM generate_series(1, %s) s", (sims,))
        conn.execute(
            "INSERT INTO agents (simulation_id, agent_id, agent_type) "
            "SELECT 'bulk' || s, 'a' || a, 'system' "
            "FROM generate_series(1, %s) s, generate_series(1, %s) a", (sims, agents))
        # Straight into the stored table (docs/schema.md, "Storage"): the view's insert
        # trigger maps one row at a time.
        conn.execute(
            "INSERT INTO agent_states_data (sim_key, step, agent_key, health) "
            "SELECT s.sim_key, t, a.agent_key, random() * 100 "
            "FROM simulations s JOIN agents a USING (simulation_id), "
            "generate_series(0, %s - 1) t WHERE s.simulation_id LIKE 'bulk%%' "
            "ORDER BY 1, 2, 3", (steps,))
    conn.execute("ANALYZE agents")
    conn.execute("ANALYZE agent_states_data")
