"""The AgentFarm SQLite schema, as a test double of the farm's databases.

Seed 001 describes the farm's ten tables by their columns and declared (SQLAlchemy)
types; this module states those facts in code so the tests can build farm files without
the farm or its documents. Seed 001 describes the experiments table only in words (name,
description, hypothesis, status, variables, results summary); its id and creation date
are the ones seed 003 shows (`experiment_id`, `creation_date`).

An experiment-wide file (seeds 002/003, `ExperimentDatabase`) has the same tables with a
`simulation_id` column in each; `farm_files.create_schema` adds it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FarmColumn:
    name: str
    declared: str  # the type as the farm declares it: INTEGER, FLOAT, STRING(n), ...
    primary_key: bool = False

    @property
    def sqlite_type(self) -> str:
        """The column affinity SQLite gives the declared type."""
        base = self.declared.split("(")[0]
        return {"INTEGER": "INTEGER", "FLOAT": "REAL", "BOOLEAN": "BOOLEAN",
                "DATETIME": "DATETIME", "JSON": "JSON"}.get(base, "TEXT")  # fmt: skip


def _columns(spec: str) -> tuple[FarmColumn, ...]:
    """`name TYPE [key]` per line."""
    out = []
    for line in spec.strip().splitlines():
        name, declared, *key = line.split()
        out.append(FarmColumn(name, declared, primary_key=key == ["key"]))
    return tuple(out)


TABLES: dict[str, tuple[FarmColumn, ...]] = {
    "experiments": _columns("""
        experiment_id STRING(64) key
        name STRING(255)
        description STRING(1024)
        hypothesis STRING(1024)
        status STRING(50)
        variables JSON
        results_summary JSON
        creation_date DATETIME
    """),
    "agents": _columns("""
        agent_id STRING(64) key
        birth_time INTEGER
        death_time INTEGER
        agent_type STRING(50)
        position_x FLOAT
        position_y FLOAT
        initial_resources FLOAT
        starting_health FLOAT
        starvation_threshold INTEGER
        genome_id STRING(64)
        generation INTEGER
    """),
    # `id` is the text "<agent_id>-<step_number>".
    "agent_states": _columns("""
        id STRING(128) key
        step_number INTEGER
        agent_id STRING(64)
        position_x FLOAT
        position_y FLOAT
        position_z FLOAT
        resource_level FLOAT
        current_health FLOAT
        is_defending BOOLEAN
        total_reward FLOAT
        age INTEGER
    """),
    "resource_states": _columns("""
        id INTEGER key
        step_number INTEGER
        resource_id INTEGER
        amount FLOAT
        position_x FLOAT
        position_y FLOAT
    """),
    "simulation_steps": _columns("""
        step_number INTEGER key
        total_agents INTEGER
        system_agents INTEGER
        independent_agents INTEGER
        control_agents INTEGER
        total_resources FLOAT
        average_agent_resources FLOAT
        births INTEGER
        deaths INTEGER
        current_max_generation INTEGER
        resource_efficiency FLOAT
        resource_distribution_entropy FLOAT
        average_agent_health FLOAT
        average_agent_age INTEGER
        average_reward FLOAT
        combat_encounters INTEGER
        successful_attacks INTEGER
        resources_shared FLOAT
        genetic_diversity FLOAT
        dominant_genome_ratio FLOAT
        resources_consumed FLOAT
    """),
    # state_before_id / state_after_id hold agent_states ids.
    "agent_actions": _columns("""
        action_id INTEGER key
        step_number INTEGER
        agent_id STRING(64)
        action_type STRING(20)
        action_target_id STRING(64)
        state_before_id STRING(128)
        state_after_id STRING(128)
        resources_before FLOAT
        resources_after FLOAT
        reward FLOAT
        details STRING(1024)
    """),
    "learning_experiences": _columns("""
        experience_id INTEGER key
        step_number INTEGER
        agent_id STRING(64)
        module_type STRING(50)
        module_id STRING(64)
        action_taken INTEGER
        action_taken_mapped STRING(20)
        reward FLOAT
    """),
    "health_incidents": _columns("""
        incident_id INTEGER key
        step_number INTEGER
        agent_id STRING(64)
        health_before FLOAT
        health_after FLOAT
        cause STRING(50)
        details STRING(512)
    """),
    # config_data is JSON text.
    "simulation_config": _columns("""
        config_id INTEGER key
        timestamp INTEGER
        config_data STRING(4096)
    """),
    "simulations": _columns("""
        simulation_id INTEGER key
        start_time DATETIME
        end_time DATETIME
        status STRING(50)
        parameters JSON
        results_summary JSON
        simulation_db_path STRING(255)
    """),
}
