"""Typed records of schema v1, used at the API boundary.

Field names are column names. A `*Create` model is what a caller writes; its subclass
adds the columns the server fills (timestamps, statuses, feedback). Per-step records
have no server-filled columns except identity ids, which stay `None` until written.
Each model lists its JSONB columns in `json_fields`, so writers know what to wrap.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field


class ExperimentStatus(StrEnum):
    """Values of the `experiments.status` CHECK constraint."""

    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


class SimulationStatus(StrEnum):
    """Values of the `simulations.status` CHECK constraint."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


class Record(BaseModel):
    """Base of every record: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")

    table: ClassVar[str]
    json_fields: ClassVar[frozenset[str]] = frozenset()


class Experiment(Record):
    table = "experiments"
    json_fields = frozenset({"variables", "tags", "metadata", "results_summary"})

    experiment_id: str
    name: str
    description: str | None = None
    hypothesis: str | None = None
    status: ExperimentStatus
    variables: dict[str, Any]
    tags: dict[str, Any]
    metadata: dict[str, Any]
    results_summary: dict[str, Any]
    folder_path: str | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


class Simulation(Record):
    table = "simulations"
    json_fields = frozenset({"parameters", "metadata", "results_summary"})

    simulation_id: str
    experiment_id: str | None = None
    name: str | None = None
    description: str | None = None
    status: SimulationStatus
    parameters: dict[str, Any]
    metadata: dict[str, Any]
    results_summary: dict[str, Any]
    step_count: int | None = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None


class SimulationConfig(Record):
    table = "simulation_config"
    json_fields = frozenset({"config"})

    simulation_id: str
    config_id: int
    config: Any
    created_at: datetime


class AgentCreate(Record):
    table = "agents"
    json_fields = frozenset({"profile", "config"})

    simulation_id: str
    agent_id: str
    agent_type: str
    name: str | None = None
    birth_step: int = 0
    death_step: int | None = None
    position_x: float | None = None
    position_y: float | None = None
    position_z: float | None = None
    initial_resources: float | None = None
    starting_health: float | None = None
    starvation_threshold: int | None = None
    genome_id: str | None = None
    generation: int = 0
    parent_ids: list[str] = Field(default_factory=list)
    profile: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


class Agent(AgentCreate):
    created_at: datetime


class AgentState(Record):
    table = "agent_states"
    json_fields = frozenset({"profile", "memory", "relationships", "extras"})

    simulation_id: str
    step: int
    agent_id: str
    position_x: float | None = None
    position_y: float | None = None
    position_z: float | None = None
    resource_level: float | None = None
    health: float | None = None
    is_defending: bool = False
    total_reward: float | None = None
    age: int | None = None
    profile: Any = None
    memory: Any = None
    relationships: Any = None
    extras: Any = None


class AgentAction(Record):
    table = "agent_actions"
    json_fields = frozenset({"details"})

    simulation_id: str
    step: int
    action_id: int | None = None
    agent_id: str
    action_type: str
    action_target_id: str | None = None
    state_before_step: int | None = None
    state_after_step: int | None = None
    resources_before: float | None = None
    resources_after: float | None = None
    reward: float | None = None
    details: Any = None


class ResourceState(Record):
    table = "resource_states"

    simulation_id: str
    step: int
    resource_id: int
    amount: float
    position_x: float | None = None
    position_y: float | None = None


class SimulationStep(Record):
    """Population and economy metrics of one step (the farm's `SimulationStepModel`)."""

    table = "simulation_steps"
    json_fields = frozenset({"metrics"})

    simulation_id: str
    step: int
    total_agents: int | None = None
    system_agents: int | None = None
    independent_agents: int | None = None
    control_agents: int | None = None
    total_resources: float | None = None
    average_agent_resources: float | None = None
    births: int | None = None
    deaths: int | None = None
    current_max_generation: int | None = None
    resource_efficiency: float | None = None
    resource_distribution_entropy: float | None = None
    average_agent_health: float | None = None
    average_agent_age: float | None = None
    average_reward: float | None = None
    combat_encounters: int | None = None
    successful_attacks: int | None = None
    resources_shared: float | None = None
    genetic_diversity: float | None = None
    dominant_genome_ratio: float | None = None
    resources_consumed: float | None = None
    metrics: Any = None


class LearningExperience(Record):
    table = "learning_experiences"
    json_fields = frozenset({"details"})

    simulation_id: str
    step: int
    experience_id: int | None = None
    agent_id: str
    module_type: str
    module_id: str | None = None
    action_taken: int | None = None
    action_taken_mapped: str | None = None
    reward: float | None = None
    details: Any = None


class HealthIncident(Record):
    table = "health_incidents"
    json_fields = frozenset({"details"})

    simulation_id: str
    step: int
    incident_id: int | None = None
    agent_id: str
    health_before: float | None = None
    health_after: float | None = None
    cause: str
    details: Any = None


class Interaction(Record):
    table = "interactions"
    json_fields = frozenset({"details"})

    simulation_id: str
    step: int
    interaction_id: int | None = None
    source_type: str
    source_id: str
    target_type: str
    target_id: str
    interaction_type: str
    action_type: str | None = None
    details: Any = None


class EnvironmentState(Record):
    table = "environment_states"
    json_fields = frozenset({"state"})

    simulation_id: str
    step: int
    state: Any
    created_at: datetime


class EventCreate(Record):
    """An event to write; `event_id` is made client-side unless given (link decisions early)."""

    table = "events"
    json_fields = frozenset({"payload"})

    simulation_id: str
    event_id: UUID = Field(default_factory=uuid4)
    step: int
    event_type: str
    source_type: str | None = None
    source_id: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    priority: int = 0
    payload: dict[str, Any] = Field(default_factory=dict)


class Event(EventCreate):
    json_fields = frozenset({"payload", "processing_result"})

    processed: bool
    processing_result: Any = None
    created_at: datetime
    processed_at: datetime | None = None


class AgentDecisionCreate(Record):
    """A decision to write; `decision_id` is made client-side unless given."""

    table = "agent_decisions"
    json_fields = frozenset({"context", "action"})

    simulation_id: str
    decision_id: UUID = Field(default_factory=uuid4)
    event_id: UUID | None = None
    step: int
    agent_id: str
    prompt: str | None = None
    output: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    action: Any = None
    processing_time: float | None = None


class AgentDecision(AgentDecisionCreate):
    feedback: str | None = None
    rating: float | None = None
    reason: str | None = None
    created_at: datetime
    feedback_at: datetime | None = None
