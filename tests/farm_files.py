"""AgentFarm SQLite files built from the farm's schema (tests/predecessors/agentfarm_schema.py,
the tables and columns seed 001 describes).

An experiment-wide file (seed 002/003: "all data tables include simulation_id") adds a
`simulation_id` column to every table; its string keys are then unique per simulation.

The rows are made so that every column holds values no other column holds, so a test
that reads them back column by column sees any column mapped to the wrong place.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predecessors.agentfarm_schema import TABLES, FarmColumn


def _definition(col: FarmColumn, *, per_experiment: bool) -> str:
    sqlite = col.sqlite_type
    # In an experiment file, a string or step key is unique per simulation only.
    if col.primary_key and (
        not per_experiment or (sqlite == "INTEGER" and col.name != "step_number")
    ):
        sqlite += " PRIMARY KEY"
    return f"{col.name} {sqlite}"


def create_schema(
    db: sqlite3.Connection, *, per_experiment: bool, drop: dict[str, set[str]] | None = None
) -> dict[str, list[str]]:
    """The farm tables in `db`; `drop` leaves columns out (an older file). Their columns."""
    made: dict[str, list[str]] = {}
    for name, columns in TABLES.items():
        cols = [c for c in columns if c.name not in (drop or {}).get(name, set())]
        defs = [_definition(c, per_experiment=per_experiment) for c in cols]
        if per_experiment and name == "simulations":
            defs[0] = "simulation_id TEXT PRIMARY KEY"
            defs.insert(1, "experiment_id TEXT")
        elif per_experiment and name != "experiments":
            defs.insert(0, "simulation_id TEXT")
        db.execute(f"CREATE TABLE {name} ({', '.join(defs)})")
        made[name] = [d.split()[0] for d in defs]
    return made


@dataclass
class FarmData:
    """The rows written into a farm file, per table, as dicts of farm columns."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables.setdefault(table, []).append(row)

    def rows(self, table: str, simulation_id: str | None = None) -> list[dict[str, Any]]:
        return [
            r for r in self.tables.get(table, [])
            if simulation_id is None or r.get("simulation_id", simulation_id) == simulation_id
        ]  # fmt: skip


def simulation_rows(data: FarmData, sim: str | None, n: int, *, steps: int = 4, agents: int = 3,
                    farm_sim_id: Any = None) -> None:  # fmt: skip
    """A simulation's rows; `sim` None: a per-simulation file (no simulation_id column)."""
    tag = {} if sim is None else {"simulation_id": sim}
    data.add("simulations", {
        "simulation_id": farm_sim_id if sim is None else sim,
        **({} if sim is None else {"experiment_id": "exp_farm"}),
        "start_time": f"2024-03-0{n + 1} 10:00:00.250000",
        "end_time": f"2024-03-0{n + 1} 11:30:00",
        "status": "completed",
        "parameters": json.dumps({"seed": n, "learning_rate": 0.1 * (n + 1)}),
        "results_summary": json.dumps({"survivors": agents - 1}),
        "simulation_db_path": f"runs/sim_{n}.db",
    })  # fmt: skip
    data.add("simulation_config", {**tag, "config_id": 10 * n + 1, "timestamp": 1700000000 + n,
             "config_data": json.dumps({"width": 100 + n, "agents": {"system": agents}})})
    for i in range(agents):
        agent = f"a-{n}-{i}"  # a '-' inside the id: state ids split at the last one
        data.add("agents", {
            **tag, "agent_id": agent, "birth_time": i, "death_time": None if i == 0 else 2 + i,
            "agent_type": ("system", "independent", "control")[i % 3],
            "position_x": 1.5 + i, "position_y": 2.25 + i, "initial_resources": 5.125 + i,
            "starting_health": 90.5 + i, "starvation_threshold": 7 + i,
            "genome_id": f"g{n}{i}", "generation": 3 + i,
        })  # fmt: skip
    for s in range(steps):
        for i in range(agents):
            agent = f"a-{n}-{i}"
            data.add("agent_states", {
                **tag, "id": f"{agent}-{s}", "step_number": s, "agent_id": agent,
                "position_x": 10.0 * s + i, "position_y": 20.0 * s + i + 0.5,
                "position_z": 0.25 * i, "resource_level": 3.0 + s + 0.125 * i,
                "current_health": 80.0 - s - 0.5 * i, "is_defending": (s + i) % 2,
                "total_reward": 1.5 * s + i, "age": s + 100 * i,
            })  # fmt: skip
            for k in range(2 if i == 1 else 1):  # agent 1 acts twice a step: ordinals 0, 1
                data.add("agent_actions", {
                    **tag, "step_number": s, "agent_id": agent,
                    "action_type": ("move", "gather")[k],
                    "action_target_id": f"a-{n}-{(i + 1) % agents}" if k else None,
                    "state_before_id": f"{agent}-{s}",
                    "state_after_id": f"{agent}-{s + 1}" if s + 1 < steps else None,
                    "resources_before": 3.0 + s + k, "resources_after": 3.5 + s + k,
                    "reward": 0.25 * (k + 1) + s,
                    "details": json.dumps({"k": k, "why": "food"}) if k == 0 else "plain text",
                })  # fmt: skip
            data.add("learning_experiences", {
                **tag, "step_number": s, "agent_id": agent, "module_type": "dqn",
                "module_id": f"m{i}", "action_taken": s % 3, "action_taken_mapped": "move",
                "reward": 0.5 * s - i,
            })  # fmt: skip
        data.add("health_incidents", {
            **tag, "step_number": s, "agent_id": f"a-{n}-0", "health_before": 80.0 - s,
            "health_after": 79.0 - s, "cause": "combat", "details": json.dumps({"by": "a1"}),
        })  # fmt: skip
        for r in range(2):
            data.add("resource_states", {
                **tag, "step_number": s, "resource_id": r, "amount": 50.0 - s - 0.5 * r,
                "position_x": 4.0 + r, "position_y": 8.0 + r,
            })  # fmt: skip
        data.add("simulation_steps", {
            **tag, "step_number": s, "total_agents": agents, "system_agents": 1,
            "independent_agents": 1, "control_agents": 1, "total_resources": 99.5 - s,
            "average_agent_resources": 3.25 + s, "births": s % 2, "deaths": (s + 1) % 2,
            "current_max_generation": 3, "resource_efficiency": 0.5, "resource_distribution_entropy":
            0.75, "average_agent_health": 77.5 - s, "average_agent_age": 10 + s,
            "average_reward": 0.125 * s, "combat_encounters": 2 * s, "successful_attacks": s,
            "resources_shared": 1.75 * s, "genetic_diversity": 0.3, "dominant_genome_ratio": 0.6,
            "resources_consumed": 2.5 * s,
        })  # fmt: skip


def write_file(path: Path, data: FarmData, *, per_experiment: bool,
               drop: dict[str, set[str]] | None = None) -> Path:  # fmt: skip
    """A farm file at `path` holding `data` (columns in `drop` left out)."""
    db = sqlite3.connect(path)
    made = create_schema(db, per_experiment=per_experiment, drop=drop)
    for table, rows in data.tables.items():
        for row in rows:
            values = {k: v for k, v in row.items() if k in made[table]}
            names = ", ".join(values)
            marks = ", ".join("?" * len(values))
            db.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(values.values()))
    db.commit()
    db.close()
    return path
