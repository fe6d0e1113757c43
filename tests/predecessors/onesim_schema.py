"""The OneSim data module's PostgreSQL schema, as a test double of a OneSim database.

Seed 000 names seven tables (scenarios, trails, environment_states, agents, agent_states,
events, agent_decisions), their relations (a scenario has trails; a trail has
environment states, agents and events; an agent has states; an event has a decision) and,
through its managers' calls, what each row holds: a scenario's name, folder path,
description and tags; a trail's scenario, name, description, config, status and step
count; an environment state per trail and step; an agent's type, name and initial
profile; an agent state's profile, memory and relationships per step; an event's step,
type, source, target and payload, processed with a processing result. The ids the
managers hand out (scenario, trail, event) are made by OneSim; trails, events and
decisions get uuids here, scenarios text. The seed gives the decision table no columns:
a decision here holds what a training record needs (prompt, output, context, action,
processing time) and the feedback added later (feedback, rating, reason). Every row has
a creation time, a `timestamp` without time zone as a Python service writes it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

TABLES = (
    "scenarios",
    "trails",
    "environment_states",
    "agents",
    "agent_states",
    "events",
    "agent_decisions",
)

DDL = """
CREATE TABLE scenarios (
    scenario_id  text PRIMARY KEY,
    name         varchar(255) NOT NULL,
    folder_path  varchar(255),
    description  text,
    tags         jsonb,
    created_at   timestamp NOT NULL DEFAULT now()
);
CREATE TABLE trails (
    trail_id     uuid PRIMARY KEY,
    scenario_id  text REFERENCES scenarios,
    name         varchar(255) NOT NULL,
    description  text,
    config       jsonb,
    status       varchar(20) NOT NULL DEFAULT 'CREATED',
    step_count   integer NOT NULL DEFAULT 0,
    start_time   timestamp,
    end_time     timestamp,
    created_at   timestamp NOT NULL DEFAULT now()
);
CREATE TABLE environment_states (
    state_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    trail_id     uuid NOT NULL REFERENCES trails,
    step         integer NOT NULL,
    state        jsonb NOT NULL,
    created_at   timestamp NOT NULL DEFAULT now(),
    UNIQUE (trail_id, step)
);
CREATE TABLE agents (
    trail_id        uuid NOT NULL REFERENCES trails,
    agent_id        varchar(255) NOT NULL,
    agent_type      varchar(100) NOT NULL,
    name            varchar(255),
    initial_profile jsonb,
    created_at      timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (trail_id, agent_id)
);
CREATE TABLE agent_states (
    state_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    trail_id      uuid NOT NULL,
    agent_id      varchar(255) NOT NULL,
    step          integer NOT NULL,
    profile       jsonb,
    memory        jsonb,
    relationships jsonb,
    created_at    timestamp NOT NULL DEFAULT now(),
    UNIQUE (trail_id, agent_id, step),
    FOREIGN KEY (trail_id, agent_id) REFERENCES agents
);
CREATE TABLE events (
    event_id          uuid PRIMARY KEY,
    trail_id          uuid NOT NULL REFERENCES trails,
    step              integer NOT NULL,
    event_type        varchar(100) NOT NULL,
    source_type       varchar(20),
    source_id         varchar(255),
    target_type       varchar(20),
    target_id         varchar(255),
    payload           jsonb,
    processed         boolean NOT NULL DEFAULT false,
    processing_result jsonb,
    created_at        timestamp NOT NULL DEFAULT now()
);
CREATE TABLE agent_decisions (
    decision_id     uuid PRIMARY KEY,
    trail_id        uuid NOT NULL,
    agent_id        varchar(255) NOT NULL,
    step            integer NOT NULL,
    event_id        uuid UNIQUE REFERENCES events,
    context         jsonb,
    prompt          text,
    output          text,
    action          text,
    processing_time double precision,
    feedback        text,
    rating          double precision,
    reason          text,
    created_at      timestamp NOT NULL DEFAULT now(),
    FOREIGN KEY (trail_id, agent_id) REFERENCES agents
);
"""


def create_schema(conn: psycopg.Connection[Any], *, drop: dict[str, set[str]] | None = None,
                  schema: str = "public") -> None:  # fmt: skip
    """The OneSim tables in `schema` of `conn`'s database; `drop` leaves columns out (an
    older OneSim)."""
    conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
    conn.execute(DDL)
    for table, columns in (drop or {}).items():
        for column in columns:
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(
                    sql.Identifier(table), sql.Identifier(column)
                )
            )
