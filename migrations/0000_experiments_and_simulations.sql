-- description: experiments, simulations, simulation config and agents
--
-- Conventions (docs/schema.md): ids are text in the "C" collation (byte order: fast,
-- deterministic, what a machine-made id needs); every per-simulation table carries
-- simulation_id in every key and cascades from simulations.

CREATE TABLE experiments (
    experiment_id   text COLLATE "C" PRIMARY KEY,
    name            text NOT NULL,
    description     text,
    hypothesis      text,
    status          text NOT NULL DEFAULT 'created'
                    CHECK (status IN ('created', 'running', 'completed', 'failed', 'aborted')),
    variables       jsonb NOT NULL DEFAULT '{}',
    tags            jsonb NOT NULL DEFAULT '{}',
    metadata        jsonb NOT NULL DEFAULT '{}',
    results_summary jsonb NOT NULL DEFAULT '{}',
    folder_path     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);

CREATE TABLE simulations (
    simulation_id   text COLLATE "C" PRIMARY KEY,
    experiment_id   text COLLATE "C" REFERENCES experiments ON DELETE CASCADE,
    name            text,
    description     text,
    status          text NOT NULL DEFAULT 'created'
                    CHECK (status IN ('created', 'running', 'paused', 'completed', 'failed', 'aborted')),
    parameters      jsonb NOT NULL DEFAULT '{}',
    metadata        jsonb NOT NULL DEFAULT '{}',
    results_summary jsonb NOT NULL DEFAULT '{}',
    step_count      integer CHECK (step_count >= 0),
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    ended_at        timestamptz,
    CHECK (ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at)
);

-- Listing the simulations of an experiment (every cross-simulation query starts here).
CREATE INDEX simulations_experiment_idx ON simulations (experiment_id);

CREATE TABLE simulation_config (
    simulation_id   text COLLATE "C" NOT NULL REFERENCES simulations ON DELETE CASCADE,
    config_id       integer NOT NULL CHECK (config_id >= 0),
    config          jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (simulation_id, config_id)
);

CREATE TABLE agents (
    simulation_id        text COLLATE "C" NOT NULL REFERENCES simulations ON DELETE CASCADE,
    agent_id             text COLLATE "C" NOT NULL,
    agent_type           text NOT NULL,
    name                 text,
    birth_step           integer NOT NULL DEFAULT 0 CHECK (birth_step >= 0),
    death_step           integer CHECK (death_step >= birth_step),
    position_x           double precision,
    position_y           double precision,
    position_z           double precision,
    initial_resources    double precision,
    starting_health      double precision,
    starvation_threshold integer,
    genome_id            text,
    generation           integer NOT NULL DEFAULT 0 CHECK (generation >= 0),
    parent_ids           text[] NOT NULL DEFAULT '{}',
    profile              jsonb NOT NULL DEFAULT '{}',
    config               jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (simulation_id, agent_id)
);

-- No secondary indexes: one simulation's agents (thousands) are read through the primary
-- key prefix. Indexes on (simulation_id, birth_step) and (simulation_id, agent_type) made
-- the planner pick them for the foreign-key checks of COPY into agent_states while agents
-- had no statistics, ingesting 2.5x slower (docs/performance.md).
