-- description: compact storage: integer simulation and agent keys, no per-row foreign keys on the bulk tables, ordinals as replay-detectable keys, rollups, readable views
--
-- The five high-volume per-step tables move to `<name>_data` tables keyed by integers:
-- `sim_key` (a simulation's compact key, simulations.sim_key) and `agent_key` (an agent's
-- key within its simulation, agents.agent_key). Views under the old names show the same
-- rows with the readable ids (simulation_id, agent_id), so queries, the SQL library and
-- analysts' SQL read them as before. docs/schema.md ("Storage") gives the reasons and the
-- measurements (docs/performance.md): 476 -> 284 bytes per (agent state + its action),
-- and an ingest ceiling 1.7x higher without the per-row foreign-key check.
--
-- Integrity without per-row foreign keys: the module writes a batch and its row in the
-- ingest ledger in one transaction; the ledger's foreign key takes a FOR KEY SHARE lock on
-- the simulation row, so a concurrent delete of the simulation waits for the batch (and a
-- batch for a deleted simulation fails). Agent ids are mapped to keys from the agents
-- table before the COPY: an unknown agent is refused, naming it. Raw SQL writers insert
-- through the views (a trigger maps the ids and refuses unknown ones) or copy into the
-- `_data` tables with keys (no check: docs/schema.md says what that means).
--
-- The event-log tables (actions, learning experiences, health incidents, interactions)
-- lose their identity ids: their key is the `ordinal` of a row among the rows of the same
-- agent (or, for interactions, of the same step) at the same step, which the logger
-- assigns in the order rows are logged, so a replayed run produces the same keys and a
-- row stored twice is detected.

-- 1. Compact keys -------------------------------------------------------------------------

ALTER TABLE simulations ADD COLUMN sim_key integer GENERATED ALWAYS AS IDENTITY;
ALTER TABLE simulations ADD CONSTRAINT simulations_sim_key_key UNIQUE (sim_key);
-- The next agent_key to hand out, and the resume watermark: the last step whose rows are
-- all committed in every per-step table (written by the logger with each batch).
ALTER TABLE simulations ADD COLUMN next_agent_key integer NOT NULL DEFAULT 0
    CHECK (next_agent_key >= 0);
ALTER TABLE simulations ADD COLUMN stored_through_step integer
    CHECK (stored_through_step >= -1);

ALTER TABLE agents ADD COLUMN agent_key integer;
UPDATE agents a SET agent_key = k.n
FROM (
    SELECT simulation_id, agent_id,
           row_number() OVER (PARTITION BY simulation_id ORDER BY created_at, agent_id) - 1 AS n
    FROM agents
) k
WHERE k.simulation_id = a.simulation_id AND k.agent_id = a.agent_id;
UPDATE simulations s SET next_agent_key = coalesce(
    (SELECT max(a.agent_key) + 1 FROM agents a WHERE a.simulation_id = s.simulation_id), 0);
ALTER TABLE agents ALTER COLUMN agent_key SET NOT NULL;
ALTER TABLE agents ADD CONSTRAINT agents_agent_key_check CHECK (agent_key >= 0);
ALTER TABLE agents ADD CONSTRAINT agents_simulation_id_agent_key_key
    UNIQUE (simulation_id, agent_key);

-- An agent inserted without a key gets the simulation's next one (the module's bulk
-- writer reserves keys in blocks and passes them). The UPDATE locks the simulation row
-- FOR NO KEY UPDATE, which does not conflict with the ingest batches' FOR KEY SHARE.
CREATE FUNCTION assign_agent_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.agent_key IS NULL THEN
        UPDATE simulations SET next_agent_key = next_agent_key + 1
        WHERE simulation_id = NEW.simulation_id
        RETURNING next_agent_key - 1 INTO NEW.agent_key;
        IF NEW.agent_key IS NULL THEN
            RAISE foreign_key_violation USING
                MESSAGE = format('insert into agents: simulation %L does not exist',
                                 NEW.simulation_id),
                DETAIL = format('Key (simulation_id)=(%s) is not present in table "simulations".',
                                NEW.simulation_id),
                TABLE = 'agents', COLUMN = 'simulation_id';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER agents_assign_key BEFORE INSERT ON agents
    FOR EACH ROW EXECUTE FUNCTION assign_agent_key();

-- 2. The bulk tables, compact ----------------------------------------------------------------
-- Columns ordered for alignment (8-byte values, then 4, 2, 1 bytes, variable length
-- last): no padding is stored. Primary keys with fillfactor 100: rows arrive in key order
-- and are never updated in place by the module, so the index pages are filled.

CREATE TABLE agent_states_data (
    sim_key        integer NOT NULL,
    step           integer NOT NULL CHECK (step >= 0),
    agent_key      integer NOT NULL,
    age            integer CHECK (age >= 0),
    position_x     double precision,
    position_y     double precision,
    position_z     double precision,
    resource_level double precision,
    health         double precision,
    total_reward   double precision,
    is_defending   boolean NOT NULL DEFAULT false,
    profile        jsonb,
    memory         jsonb,
    relationships  jsonb,
    extras         jsonb,
    PRIMARY KEY (sim_key, step, agent_key) WITH (fillfactor = 100)
);
-- An agent's history: one key per agent, deduplicated into a posting list (9 B per row).
CREATE INDEX agent_states_data_by_agent_idx ON agent_states_data (sim_key, agent_key);

CREATE TABLE agent_actions_data (
    resources_before  double precision,
    resources_after   double precision,
    reward            double precision,
    sim_key           integer NOT NULL,
    step              integer NOT NULL CHECK (step >= 0),
    agent_key         integer NOT NULL,
    state_before_step integer,
    state_after_step  integer,
    ordinal           smallint NOT NULL CHECK (ordinal >= 0),
    action_type       text NOT NULL,
    action_target_id  text COLLATE "C",
    details           jsonb,
    PRIMARY KEY (sim_key, step, agent_key, ordinal) WITH (fillfactor = 100)
);
CREATE INDEX agent_actions_data_by_agent_idx ON agent_actions_data (sim_key, agent_key);

CREATE TABLE resource_states_data (
    sim_key     integer NOT NULL,
    step        integer NOT NULL CHECK (step >= 0),
    resource_id integer NOT NULL,
    amount      double precision NOT NULL,
    position_x  double precision,
    position_y  double precision,
    PRIMARY KEY (sim_key, step, resource_id) WITH (fillfactor = 100)
);

CREATE TABLE learning_experiences_data (
    reward              double precision,
    sim_key             integer NOT NULL,
    step                integer NOT NULL CHECK (step >= 0),
    agent_key           integer NOT NULL,
    action_taken        integer,
    ordinal             smallint NOT NULL CHECK (ordinal >= 0),
    module_type         text NOT NULL,
    module_id           text,
    action_taken_mapped text,
    details             jsonb,
    PRIMARY KEY (sim_key, step, agent_key, ordinal) WITH (fillfactor = 100)
);
CREATE INDEX learning_experiences_data_by_agent_idx
    ON learning_experiences_data (sim_key, agent_key);

CREATE TABLE health_incidents_data (
    health_before double precision,
    health_after  double precision,
    sim_key       integer NOT NULL,
    step          integer NOT NULL CHECK (step >= 0),
    agent_key     integer NOT NULL,
    ordinal       smallint NOT NULL CHECK (ordinal >= 0),
    cause         text NOT NULL,
    details       jsonb,
    PRIMARY KEY (sim_key, step, agent_key, ordinal) WITH (fillfactor = 100)
);
CREATE INDEX health_incidents_data_by_agent_idx ON health_incidents_data (sim_key, agent_key);

-- 3. The rows that are there already ---------------------------------------------------------

INSERT INTO agent_states_data (sim_key, step, agent_key, age, position_x, position_y,
    position_z, resource_level, health, total_reward, is_defending, profile, memory,
    relationships, extras)
SELECT s.sim_key, t.step, a.agent_key, t.age, t.position_x, t.position_y, t.position_z,
       t.resource_level, t.health, t.total_reward, t.is_defending, t.profile, t.memory,
       t.relationships, t.extras
FROM agent_states t
JOIN simulations s ON s.simulation_id = t.simulation_id
JOIN agents a ON a.simulation_id = t.simulation_id AND a.agent_id = t.agent_id;

INSERT INTO agent_actions_data (resources_before, resources_after, reward, sim_key, step,
    agent_key, state_before_step, state_after_step, ordinal, action_type, action_target_id,
    details)
SELECT t.resources_before, t.resources_after, t.reward, s.sim_key, t.step, a.agent_key,
       t.state_before_step, t.state_after_step,
       row_number() OVER (PARTITION BY t.simulation_id, t.step, t.agent_id
                          ORDER BY t.action_id) - 1,
       t.action_type, t.action_target_id, t.details
FROM agent_actions t
JOIN simulations s ON s.simulation_id = t.simulation_id
JOIN agents a ON a.simulation_id = t.simulation_id AND a.agent_id = t.agent_id;

INSERT INTO resource_states_data (sim_key, step, resource_id, amount, position_x, position_y)
SELECT s.sim_key, t.step, t.resource_id, t.amount, t.position_x, t.position_y
FROM resource_states t
JOIN simulations s ON s.simulation_id = t.simulation_id;

INSERT INTO learning_experiences_data (reward, sim_key, step, agent_key, action_taken,
    ordinal, module_type, module_id, action_taken_mapped, details)
SELECT t.reward, s.sim_key, t.step, a.agent_key, t.action_taken,
       row_number() OVER (PARTITION BY t.simulation_id, t.step, t.agent_id
                          ORDER BY t.experience_id) - 1,
       t.module_type, t.module_id, t.action_taken_mapped, t.details
FROM learning_experiences t
JOIN simulations s ON s.simulation_id = t.simulation_id
JOIN agents a ON a.simulation_id = t.simulation_id AND a.agent_id = t.agent_id;

INSERT INTO health_incidents_data (health_before, health_after, sim_key, step, agent_key,
    ordinal, cause, details)
SELECT t.health_before, t.health_after, s.sim_key, t.step, a.agent_key,
       row_number() OVER (PARTITION BY t.simulation_id, t.step, t.agent_id
                          ORDER BY t.incident_id) - 1,
       t.cause, t.details
FROM health_incidents t
JOIN simulations s ON s.simulation_id = t.simulation_id
JOIN agents a ON a.simulation_id = t.simulation_id AND a.agent_id = t.agent_id;

-- Interactions keep their readable ids (a source or target need not be an agent); their
-- key becomes the ordinal of the interaction within its step.
CREATE TABLE interactions_next (
    simulation_id    text COLLATE "C" NOT NULL REFERENCES simulations ON DELETE CASCADE,
    step             integer NOT NULL CHECK (step >= 0),
    ordinal          integer NOT NULL CHECK (ordinal >= 0),
    source_type      text NOT NULL,
    source_id        text COLLATE "C" NOT NULL,
    target_type      text NOT NULL,
    target_id        text COLLATE "C" NOT NULL,
    interaction_type text NOT NULL,
    action_type      text,
    details          jsonb,
    PRIMARY KEY (simulation_id, step, ordinal)
);
INSERT INTO interactions_next
SELECT simulation_id, step,
       row_number() OVER (PARTITION BY simulation_id, step ORDER BY interaction_id) - 1,
       source_type, source_id, target_type, target_id, interaction_type, action_type, details
FROM interactions;

-- 4. Rollups, kept current by statement triggers -------------------------------------------
-- Per simulation, step and agent type: what the population views need, so "population by
-- type over time" reads one row per step and type instead of every agent state.
-- Sums are numeric: adding and taking away (an update, a type change) is exact, and a sum
-- of valid float8 values cannot overflow and refuse the batch (each value is taken to 15
-- significant digits, float8's guaranteed precision). `rollup_float` reads them back.
CREATE TABLE population_rollup (
    sim_key      integer NOT NULL REFERENCES simulations (sim_key) ON DELETE CASCADE,
    step         integer NOT NULL,
    agent_type   text NOT NULL,
    agents       integer NOT NULL,
    health_n     integer NOT NULL,
    health_sum   numeric,
    resource_n   integer NOT NULL,
    resource_sum numeric,
    PRIMARY KEY (sim_key, step, agent_type)
);

-- Per simulation, agent and action type: additive counts and sums, and (one row per
-- agent) the number of distinct agents that took an action type.
CREATE TABLE action_rollup (
    sim_key     integer NOT NULL REFERENCES simulations (sim_key) ON DELETE CASCADE,
    agent_key   integer NOT NULL,
    action_type text NOT NULL,
    actions     integer NOT NULL,
    reward_n    integer NOT NULL,
    reward_sum  numeric,
    change_n    integer NOT NULL,
    change_sum  numeric,
    PRIMARY KEY (sim_key, agent_key, action_type)
);

-- A rollup sum as float8; beyond float8's range it is +-Infinity, as float8 arithmetic gives.
CREATE FUNCTION rollup_float(value numeric) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value = 'NaN' THEN 'NaN'::double precision  -- NaN sorts above all
                WHEN value > 1.7976931348623157e308 THEN 'Infinity'::double precision
                WHEN value < -1.7976931348623157e308 THEN '-Infinity'::double precision
                ELSE value::double precision END
$$;

-- `sign` 1 adds rows to the population rollup, -1 takes them away.
CREATE FUNCTION population_add(sim_keys integer[], steps integer[], agent_keys integer[],
                               healths double precision[], resources double precision[],
                               sign integer) RETURNS void LANGUAGE sql AS $$
    INSERT INTO population_rollup AS p (sim_key, step, agent_type, agents, health_n,
        health_sum, resource_n, resource_sum)
    SELECT r.sim_key, r.step, a.agent_type, sign * count(*), sign * count(r.health),
           sign * sum(r.health::numeric), sign * count(r.resource),
           sign * sum(r.resource::numeric)
    FROM unnest(sim_keys, steps, agent_keys, healths, resources)
         AS r(sim_key, step, agent_key, health, resource)
    JOIN simulations s ON s.sim_key = r.sim_key
    JOIN agents a ON a.simulation_id = s.simulation_id AND a.agent_key = r.agent_key
    GROUP BY r.sim_key, r.step, a.agent_type
    ON CONFLICT (sim_key, step, agent_type) DO UPDATE SET
        agents = p.agents + EXCLUDED.agents,
        health_n = p.health_n + EXCLUDED.health_n,
        health_sum = CASE WHEN p.health_n + EXCLUDED.health_n = 0 THEN NULL
                          ELSE coalesce(p.health_sum, 0) + coalesce(EXCLUDED.health_sum, 0) END,
        resource_n = p.resource_n + EXCLUDED.resource_n,
        resource_sum = CASE WHEN p.resource_n + EXCLUDED.resource_n = 0 THEN NULL
                            ELSE coalesce(p.resource_sum, 0) + coalesce(EXCLUDED.resource_sum, 0)
                       END
$$;

CREATE FUNCTION agent_states_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        PERFORM population_add(array_agg(sim_key), array_agg(step), array_agg(agent_key),
                               array_agg(health), array_agg(resource_level), -1)
        FROM old_rows;
    END IF;
    PERFORM population_add(array_agg(sim_key), array_agg(step), array_agg(agent_key),
                           array_agg(health), array_agg(resource_level), 1)
    FROM new_rows;
    RETURN NULL;
END
$$;

CREATE TRIGGER agent_states_data_rollup_insert AFTER INSERT ON agent_states_data
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agent_states_rollup();
CREATE TRIGGER agent_states_data_rollup_update AFTER UPDATE ON agent_states_data
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agent_states_rollup();

CREATE FUNCTION action_add(sim_keys integer[], agent_keys integer[], types text[],
                           rewards double precision[], changes numeric[],
                           sign integer) RETURNS void LANGUAGE sql AS $$
    INSERT INTO action_rollup AS r (sim_key, agent_key, action_type, actions, reward_n,
        reward_sum, change_n, change_sum)
    SELECT x.sim_key, x.agent_key, x.action_type, sign * count(*), sign * count(x.reward),
           sign * sum(x.reward::numeric), sign * count(x.change), sign * sum(x.change)
    FROM unnest(sim_keys, agent_keys, types, rewards, changes)
         AS x(sim_key, agent_key, action_type, reward, change)
    GROUP BY x.sim_key, x.agent_key, x.action_type
    ON CONFLICT (sim_key, agent_key, action_type) DO UPDATE SET
        actions = r.actions + EXCLUDED.actions,
        reward_n = r.reward_n + EXCLUDED.reward_n,
        reward_sum = CASE WHEN r.reward_n + EXCLUDED.reward_n = 0 THEN NULL
                          ELSE coalesce(r.reward_sum, 0) + coalesce(EXCLUDED.reward_sum, 0) END,
        change_n = r.change_n + EXCLUDED.change_n,
        change_sum = CASE WHEN r.change_n + EXCLUDED.change_n = 0 THEN NULL
                          ELSE coalesce(r.change_sum, 0) + coalesce(EXCLUDED.change_sum, 0) END
$$;

CREATE FUNCTION agent_actions_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        PERFORM action_add(array_agg(sim_key), array_agg(agent_key), array_agg(action_type),
                           array_agg(reward),
                           array_agg(resources_after::numeric - resources_before::numeric), -1)
        FROM old_rows;
    END IF;
    PERFORM action_add(array_agg(sim_key), array_agg(agent_key), array_agg(action_type),
                       array_agg(reward),
                       array_agg(resources_after::numeric - resources_before::numeric), 1)
    FROM new_rows;
    RETURN NULL;
END
$$;

CREATE TRIGGER agent_actions_data_rollup_insert AFTER INSERT ON agent_actions_data
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agent_actions_rollup();
CREATE TRIGGER agent_actions_data_rollup_update AFTER UPDATE ON agent_actions_data
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agent_actions_rollup();

-- An agent that changes type moves its states from the old type's counts to the new one's.
CREATE FUNCTION agents_type_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved record;
BEGIN
    FOR moved IN
        SELECT s.sim_key, o.agent_key, o.agent_type AS old_type, n.agent_type AS new_type
        FROM old_rows o
        JOIN new_rows n ON n.simulation_id = o.simulation_id AND n.agent_id = o.agent_id
        JOIN simulations s ON s.simulation_id = n.simulation_id
        WHERE n.agent_type IS DISTINCT FROM o.agent_type
    LOOP
        UPDATE population_rollup p SET
            agents = p.agents - c.agents, health_n = p.health_n - c.health_n,
            health_sum = p.health_sum - coalesce(c.health_sum, 0),
            resource_n = p.resource_n - c.resource_n,
            resource_sum = p.resource_sum - coalesce(c.resource_sum, 0)
        FROM (SELECT step, count(*) AS agents, count(health) AS health_n,
                     sum(health::numeric) AS health_sum, count(resource_level) AS resource_n,
                     sum(resource_level::numeric) AS resource_sum
              FROM agent_states_data
              WHERE sim_key = moved.sim_key AND agent_key = moved.agent_key GROUP BY step) c
        WHERE p.sim_key = moved.sim_key AND p.step = c.step AND p.agent_type = moved.old_type;
        INSERT INTO population_rollup AS p (sim_key, step, agent_type, agents, health_n,
            health_sum, resource_n, resource_sum)
        SELECT moved.sim_key, step, moved.new_type, count(*), count(health),
               sum(health::numeric), count(resource_level), sum(resource_level::numeric)
        FROM agent_states_data
        WHERE sim_key = moved.sim_key AND agent_key = moved.agent_key GROUP BY step
        ON CONFLICT (sim_key, step, agent_type) DO UPDATE SET
            agents = p.agents + EXCLUDED.agents, health_n = p.health_n + EXCLUDED.health_n,
            health_sum = coalesce(p.health_sum, 0) + coalesce(EXCLUDED.health_sum, 0),
            resource_n = p.resource_n + EXCLUDED.resource_n,
            resource_sum = coalesce(p.resource_sum, 0) + coalesce(EXCLUDED.resource_sum, 0);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_type_rollup AFTER UPDATE ON agents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agents_type_rollup();

-- Recomputes both rollups of a simulation from its rows: for rows changed by raw SQL
-- (a DELETE of per-step rows, which the triggers do not follow).
CREATE FUNCTION rebuild_rollups(simulation text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    key_sim integer := (SELECT sim_key FROM simulations WHERE simulation_id = simulation);
BEGIN
    IF key_sim IS NULL THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('rebuild_rollups: simulation %L does not exist', simulation),
            DETAIL = format('Key (simulation_id)=(%s) is not present in table "simulations".',
                            simulation);
    END IF;
    DELETE FROM population_rollup WHERE sim_key = key_sim;
    DELETE FROM action_rollup WHERE sim_key = key_sim;
    PERFORM population_add(array_agg(sim_key), array_agg(step), array_agg(agent_key),
                           array_agg(health), array_agg(resource_level), 1)
    FROM agent_states_data WHERE sim_key = key_sim;
    PERFORM action_add(array_agg(sim_key), array_agg(agent_key), array_agg(action_type),
                       array_agg(reward),
                       array_agg(resources_after::numeric - resources_before::numeric), 1)
    FROM agent_actions_data WHERE sim_key = key_sim;
END
$$;

-- The rollups of the rows that are there already, one simulation at a time.
DO $$
DECLARE
    simulation record;
BEGIN
    FOR simulation IN SELECT simulation_id FROM simulations LOOP
        PERFORM rebuild_rollups(simulation.simulation_id);
    END LOOP;
END
$$;

-- 5. The readable tables become views over the compact ones -----------------------------------

DROP VIEW population_by_step;
DROP VIEW action_statistics;
DROP TABLE agent_states;
DROP TABLE agent_actions;
DROP TABLE resource_states;
DROP TABLE learning_experiences;
DROP TABLE health_incidents;
DROP TABLE interactions;
ALTER TABLE interactions_next RENAME TO interactions;
ALTER INDEX interactions_next_pkey RENAME TO interactions_pkey;
ALTER TABLE interactions RENAME CONSTRAINT interactions_next_simulation_id_fkey
    TO interactions_simulation_id_fkey;
ALTER TABLE interactions RENAME CONSTRAINT interactions_next_step_check
    TO interactions_step_check;
ALTER TABLE interactions RENAME CONSTRAINT interactions_next_ordinal_check
    TO interactions_ordinal_check;

CREATE VIEW agent_states AS
SELECT s.simulation_id, d.step, a.agent_id, d.position_x, d.position_y, d.position_z,
       d.resource_level, d.health, d.is_defending, d.total_reward, d.age, d.profile,
       d.memory, d.relationships, d.extras
FROM agent_states_data d
JOIN simulations s ON s.sim_key = d.sim_key
JOIN agents a ON a.simulation_id = s.simulation_id AND a.agent_key = d.agent_key;

CREATE VIEW agent_actions AS
SELECT s.simulation_id, d.step, a.agent_id, d.ordinal, d.action_type, d.action_target_id,
       d.state_before_step, d.state_after_step, d.resources_before, d.resources_after,
       d.reward, d.details
FROM agent_actions_data d
JOIN simulations s ON s.sim_key = d.sim_key
JOIN agents a ON a.simulation_id = s.simulation_id AND a.agent_key = d.agent_key;

CREATE VIEW resource_states AS
SELECT s.simulation_id, d.step, d.resource_id, d.amount, d.position_x, d.position_y
FROM resource_states_data d
JOIN simulations s ON s.sim_key = d.sim_key;

CREATE VIEW learning_experiences AS
SELECT s.simulation_id, d.step, a.agent_id, d.ordinal, d.module_type, d.module_id,
       d.action_taken, d.action_taken_mapped, d.reward, d.details
FROM learning_experiences_data d
JOIN simulations s ON s.sim_key = d.sim_key
JOIN agents a ON a.simulation_id = s.simulation_id AND a.agent_key = d.agent_key;

CREATE VIEW health_incidents AS
SELECT s.simulation_id, d.step, a.agent_id, d.ordinal, d.health_before, d.health_after,
       d.cause, d.details
FROM health_incidents_data d
JOIN simulations s ON s.sim_key = d.sim_key
JOIN agents a ON a.simulation_id = s.simulation_id AND a.agent_key = d.agent_key;

COMMENT ON VIEW agent_states IS
    'Agent states with readable ids; stored in agent_states_data (integer keys).';
COMMENT ON VIEW agent_actions IS
    'Agent actions with readable ids; stored in agent_actions_data (integer keys).';
COMMENT ON VIEW resource_states IS
    'Resource states with readable ids; stored in resource_states_data (integer keys).';
COMMENT ON VIEW learning_experiences IS
    'Learning experiences with readable ids; stored in learning_experiences_data.';
COMMENT ON VIEW health_incidents IS
    'Health incidents with readable ids; stored in health_incidents_data.';

-- Raw SQL inserts through the views: ids mapped to keys, an unknown simulation or agent
-- refused with the foreign-key error PostgreSQL would raise, a missing ordinal numbered
-- after the rows already stored (and shown by RETURNING). One row at a time: the
-- module's bulk writers copy into the _data tables instead.
CREATE FUNCTION insert_through_view() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stored text := TG_TABLE_NAME || '_data';
    key_sim integer;
    key_agent integer;
    row_json jsonb := to_jsonb(NEW);
    columns text;
BEGIN
    SELECT s.sim_key INTO key_sim FROM simulations s WHERE s.simulation_id = NEW.simulation_id;
    IF key_sim IS NULL THEN
        RAISE foreign_key_violation USING
            MESSAGE = format('insert into %s: simulation %L does not exist', TG_TABLE_NAME,
                             NEW.simulation_id),
            DETAIL = format('Key (simulation_id)=(%s) is not present in table "simulations".',
                            NEW.simulation_id),
            TABLE = TG_TABLE_NAME, COLUMN = 'simulation_id';
    END IF;
    row_json := row_json - 'simulation_id' || jsonb_build_object('sim_key', key_sim);
    IF row_json ? 'agent_id' THEN
        SELECT a.agent_key INTO key_agent FROM agents a
        WHERE a.simulation_id = NEW.simulation_id AND a.agent_id = row_json ->> 'agent_id';
        IF key_agent IS NULL THEN
            RAISE foreign_key_violation USING
                MESSAGE = format('insert into %s: agent %L does not exist', TG_TABLE_NAME,
                                 row_json ->> 'agent_id'),
                DETAIL = format('Key (simulation_id, agent_id)=(%s, %s) is not present in table "agents".',
                                NEW.simulation_id, row_json ->> 'agent_id'),
                TABLE = TG_TABLE_NAME, COLUMN = 'agent_id';
        END IF;
        row_json := row_json - 'agent_id' || jsonb_build_object('agent_key', key_agent);
    END IF;
    IF row_json ? 'ordinal' AND row_json -> 'ordinal' = 'null' THEN
        -- the next ordinal of the agent at the step (the per-step key's last column)
        EXECUTE format('SELECT coalesce(max(ordinal) + 1, 0) FROM %I'
                       ' WHERE sim_key = $1 AND step = $2 AND agent_key = $3', stored)
            INTO NEW.ordinal USING key_sim, NEW.step, key_agent;
        row_json := row_json || jsonb_build_object('ordinal', NEW.ordinal);
    END IF;
    -- Every column of the view but the readable ids has the stored table's name, so a
    -- column added to both needs nothing here; columns left NULL take their default.
    SELECT jsonb_object_agg(key, value), string_agg(format('%I', key), ', ')
    INTO row_json, columns
    FROM jsonb_each(row_json) WHERE value <> 'null';  -- top-level only: JSON values stay
    EXECUTE format('INSERT INTO %I (%s) SELECT %s FROM jsonb_populate_record(NULL::%I, $1)',
                   stored, columns, columns, stored)
        USING row_json;
    RETURN NEW;
END
$$;

CREATE TRIGGER agent_states_insert INSTEAD OF INSERT ON agent_states
    FOR EACH ROW EXECUTE FUNCTION insert_through_view();
CREATE TRIGGER agent_actions_insert INSTEAD OF INSERT ON agent_actions
    FOR EACH ROW EXECUTE FUNCTION insert_through_view();
CREATE TRIGGER resource_states_insert INSTEAD OF INSERT ON resource_states
    FOR EACH ROW EXECUTE FUNCTION insert_through_view();
CREATE TRIGGER learning_experiences_insert INSTEAD OF INSERT ON learning_experiences
    FOR EACH ROW EXECUTE FUNCTION insert_through_view();
CREATE TRIGGER health_incidents_insert INSTEAD OF INSERT ON health_incidents
    FOR EACH ROW EXECUTE FUNCTION insert_through_view();

-- An interaction inserted without its ordinal gets the next one of its step (the logger
-- numbers its rows itself; the WHEN clause keeps COPY from calling the function).
CREATE FUNCTION number_interaction() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.ordinal := (SELECT coalesce(max(ordinal) + 1, 0) FROM interactions
                    WHERE simulation_id = NEW.simulation_id AND step = NEW.step);
    RETURN NEW;
END
$$;

CREATE TRIGGER interactions_number BEFORE INSERT ON interactions
    FOR EACH ROW WHEN (NEW.ordinal IS NULL) EXECUTE FUNCTION number_interaction();

-- Deleting a simulation deletes its rows in the compact tables in the same statement (they
-- have no foreign key to cascade from); its rollup rows go by their foreign key.
CREATE FUNCTION delete_simulation_data() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM agent_states_data WHERE sim_key = OLD.sim_key;
    DELETE FROM agent_actions_data WHERE sim_key = OLD.sim_key;
    DELETE FROM resource_states_data WHERE sim_key = OLD.sim_key;
    DELETE FROM learning_experiences_data WHERE sim_key = OLD.sim_key;
    DELETE FROM health_incidents_data WHERE sim_key = OLD.sim_key;
    RETURN OLD;
END
$$;

CREATE TRIGGER simulations_delete_data BEFORE DELETE ON simulations
    FOR EACH ROW EXECUTE FUNCTION delete_simulation_data();

-- Deleting agents by raw SQL (the module never does) deletes their rows too and recounts
-- the rollups of their simulation. Agents deleted with their simulation find nothing here.
CREATE FUNCTION delete_agent_data() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gone record;
BEGIN
    FOR gone IN
        SELECT s.simulation_id, s.sim_key, array_agg(o.agent_key) AS agent_keys
        FROM old_rows o JOIN simulations s ON s.simulation_id = o.simulation_id
        GROUP BY s.simulation_id, s.sim_key
    LOOP
        DELETE FROM agent_states_data
        WHERE sim_key = gone.sim_key AND agent_key = ANY(gone.agent_keys);
        DELETE FROM agent_actions_data
        WHERE sim_key = gone.sim_key AND agent_key = ANY(gone.agent_keys);
        DELETE FROM learning_experiences_data
        WHERE sim_key = gone.sim_key AND agent_key = ANY(gone.agent_keys);
        DELETE FROM health_incidents_data
        WHERE sim_key = gone.sim_key AND agent_key = ANY(gone.agent_keys);
        PERFORM rebuild_rollups(gone.simulation_id);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_delete_data AFTER DELETE ON agents
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION delete_agent_data();

-- 6. The analyst views that read the bulk tables, now from the rollups ---------------------

CREATE VIEW population_by_step AS
SELECT s.simulation_id,
       p.step,
       p.agent_type,
       p.agents::bigint                                AS agents,
       rollup_float(p.health_sum / nullif(p.health_n, 0)) AS average_health,
       rollup_float(p.resource_sum)                    AS total_resource_level
FROM population_rollup p
JOIN simulations s ON s.sim_key = p.sim_key
WHERE p.agents > 0;

COMMENT ON VIEW population_by_step IS
    'Agents alive (with a state row) per simulation, step and agent type, with their mean health and total resources (from population_rollup).';
COMMENT ON COLUMN population_by_step.agents IS 'Number of agent_states rows of this type at this step.';
COMMENT ON COLUMN population_by_step.average_health IS 'Mean agent_states.health of these agents.';
COMMENT ON COLUMN population_by_step.total_resource_level IS 'Sum of agent_states.resource_level of these agents.';

CREATE VIEW action_statistics AS
SELECT s.simulation_id,
       r.action_type,
       sum(r.actions)::bigint                                AS actions,
       count(*) FILTER (WHERE r.actions > 0)                 AS agents,
       rollup_float(sum(r.reward_sum) / nullif(sum(r.reward_n), 0)) AS mean_reward,
       rollup_float(CASE WHEN sum(r.reward_n) > 0 THEN sum(r.reward_sum) END) AS total_reward,
       rollup_float(sum(r.change_sum) / nullif(sum(r.change_n), 0)) AS mean_resource_change
FROM action_rollup r
JOIN simulations s ON s.sim_key = r.sim_key
GROUP BY s.simulation_id, r.action_type
HAVING sum(r.actions) > 0;

COMMENT ON VIEW action_statistics IS
    'Per simulation and action type: how often it was taken, by how many agents, and its mean reward and resource change (from action_rollup).';
COMMENT ON COLUMN action_statistics.actions IS 'Number of agent_actions rows.';
COMMENT ON COLUMN action_statistics.agents IS 'Distinct agents that took the action.';
COMMENT ON COLUMN action_statistics.mean_reward IS 'Mean reward (NULL rewards ignored).';
COMMENT ON COLUMN action_statistics.total_reward IS 'Sum of rewards.';
COMMENT ON COLUMN action_statistics.mean_resource_change IS 'Mean of resources_after - resources_before.';

-- 7. The functions' settings ---------------------------------------------------------------
-- Each function that reads or writes a table runs with this migration's search path (the
-- module schema), whatever the caller's: a host connection on `public`, a raw insert into
-- `sim.agent_states` or a `DELETE FROM sim.simulations` resolve the same tables.
ALTER FUNCTION assign_agent_key() SET search_path FROM CURRENT;
ALTER FUNCTION population_add(integer[], integer[], integer[], double precision[],
                              double precision[], integer) SET search_path FROM CURRENT;
ALTER FUNCTION agent_states_rollup() SET search_path FROM CURRENT;
ALTER FUNCTION action_add(integer[], integer[], text[], double precision[], numeric[],
                          integer) SET search_path FROM CURRENT;
ALTER FUNCTION agent_actions_rollup() SET search_path FROM CURRENT;
ALTER FUNCTION agents_type_rollup() SET search_path FROM CURRENT;
ALTER FUNCTION rebuild_rollups(text) SET search_path FROM CURRENT;
ALTER FUNCTION insert_through_view() SET search_path FROM CURRENT;
ALTER FUNCTION number_interaction() SET search_path FROM CURRENT;
ALTER FUNCTION delete_simulation_data() SET search_path FROM CURRENT;
ALTER FUNCTION delete_agent_data() SET search_path FROM CURRENT;
-- The rollup upserts get arrays of another size at every call: a generic plan, which
-- PostgreSQL 18 caches for SQL functions after five calls, made each 25,000-row batch
-- 10x slower (docs/performance.md, "Defects found").
ALTER FUNCTION population_add(integer[], integer[], integer[], double precision[],
                              double precision[], integer) SET plan_cache_mode = force_custom_plan;
-- Before PostgreSQL 18 the arrays are parameters the planner cannot see (it assumes 10
-- elements), and with no statistics on `agents` yet it joined them by a nested loop that
-- reads every agent of the simulation per row: 68 us per row on PostgreSQL 15 (3.6 s for
-- a 50,000-row insert), against 5 us with a hash join (0.26 s).
ALTER FUNCTION population_add(integer[], integer[], integer[], double precision[],
                              double precision[], integer) SET enable_nestloop = off;
ALTER FUNCTION action_add(integer[], integer[], text[], double precision[], numeric[],
                          integer) SET plan_cache_mode = force_custom_plan;
