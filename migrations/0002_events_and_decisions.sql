-- description: events and agent decisions
--
-- Event and decision ids are uuids that the client may choose (the logger makes
-- time-ordered ones), so a caller can link a decision to an event it has not flushed yet.

CREATE TABLE events (
    simulation_id     text COLLATE "C" NOT NULL REFERENCES simulations ON DELETE CASCADE,
    event_id          uuid NOT NULL DEFAULT gen_random_uuid(),
    step              integer NOT NULL CHECK (step >= 0),
    event_type        text NOT NULL,
    source_type       text,
    source_id         text COLLATE "C",
    target_type       text,
    target_id         text COLLATE "C",
    priority          integer NOT NULL DEFAULT 0,
    payload           jsonb NOT NULL DEFAULT '{}',
    processed         boolean NOT NULL DEFAULT false,
    processing_result jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    processed_at      timestamptz,
    PRIMARY KEY (simulation_id, event_id),
    CHECK (processed OR processed_at IS NULL)
);

-- The work queue: unprocessed events by priority; small because processed rows leave it.
CREATE INDEX events_unprocessed_idx ON events (simulation_id, priority DESC, step)
    WHERE NOT processed;
-- Events of a type over time.
CREATE INDEX events_type_idx ON events (simulation_id, event_type, step);
-- Events an agent sent or received.
CREATE INDEX events_source_idx ON events (simulation_id, source_id);
CREATE INDEX events_target_idx ON events (simulation_id, target_id);

CREATE TABLE agent_decisions (
    simulation_id   text COLLATE "C" NOT NULL,
    decision_id     uuid NOT NULL DEFAULT gen_random_uuid(),
    event_id        uuid,
    step            integer NOT NULL CHECK (step >= 0),
    agent_id        text COLLATE "C" NOT NULL,
    prompt          text,
    output          text,
    context         jsonb NOT NULL DEFAULT '{}',
    action          jsonb,
    processing_time double precision CHECK (processing_time >= 0),
    feedback        text,
    rating          double precision,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    feedback_at     timestamptz,
    PRIMARY KEY (simulation_id, decision_id),
    FOREIGN KEY (simulation_id, agent_id) REFERENCES agents ON DELETE CASCADE,
    FOREIGN KEY (simulation_id, event_id) REFERENCES events ON DELETE CASCADE
);

-- Decisions of an agent (training-data export filters by agent) and the cascade from agents.
CREATE INDEX agent_decisions_agent_idx ON agent_decisions (simulation_id, agent_id, step);
-- The decision made for an event (and the cascade from events).
CREATE INDEX agent_decisions_event_idx ON agent_decisions (simulation_id, event_id)
    WHERE event_id IS NOT NULL;
