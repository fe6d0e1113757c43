-- Distribute an existing, migrated sim_schema schema on a Citus coordinator.
--
-- Run on the COORDINATOR, after `sim-schema migrate`, with search_path set to the module's
-- schema (the migrations are unqualified for the same reason; see docs/distributed.md):
--
--   PGOPTIONS='-c search_path=sim' psql "$DSN" -v ON_ERROR_STOP=1 -f sql/citus/distribute.sql
--
-- Layout (docs/distributed.md explains it):
--   reference table    experiments        small, no simulation_id, referenced by simulations
--   distributed        simulations        by simulation_id, the anchor of a new co-location group
--   distributed        every table with a simulation_id column, co-located with simulations
--   local              schema_migrations  the runner's tracking table, coordinator only
--
-- Order: a referenced table is distributed before every table that references it (Citus
-- refuses a foreign key to a table it does not yet know). Every statement runs in its own
-- transaction and is skipped when the table is already in pg_dist_partition, so the script
-- is safe to re-run, and is re-run after every migration that adds a table.
-- tests/test_distribution.py checks that every table with simulation_id is named here.

DO $$
BEGIN
    IF to_regclass('simulations') IS NULL OR to_regclass('schema_migrations') IS NULL THEN
        RAISE EXCEPTION 'distribute.sql: no migrated sim_schema schema on search_path (%)',
            current_setting('search_path')
            USING HINT = 'Run it with search_path set to the module schema, after migrate.';
    END IF;
END
$$;

-- Reference table: replicated to every node, so simulations can keep its foreign key to it.
SELECT create_reference_table('experiments')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'experiments'::regclass);

-- The anchor. colocate_with => 'none' keeps the module's tables out of the default group
-- that unrelated text-distributed tables of the host database might share.
SELECT create_distributed_table('simulations', 'simulation_id', colocate_with => 'none')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'simulations'::regclass);

-- Tables that reference only simulations.
SELECT create_distributed_table('simulation_config', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'simulation_config'::regclass);

SELECT create_distributed_table('agents', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'agents'::regclass);

SELECT create_distributed_table('resource_states', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'resource_states'::regclass);

SELECT create_distributed_table('simulation_steps', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'simulation_steps'::regclass);

SELECT create_distributed_table('interactions', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'interactions'::regclass);

SELECT create_distributed_table('environment_states', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'environment_states'::regclass);

SELECT create_distributed_table('events', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'events'::regclass);

SELECT create_distributed_table('ingest_batches', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'ingest_batches'::regclass);

-- Tables that also reference agents (and, for agent_decisions, events).
SELECT create_distributed_table('agent_states', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'agent_states'::regclass);

SELECT create_distributed_table('agent_actions', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'agent_actions'::regclass);

SELECT create_distributed_table('learning_experiences', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'learning_experiences'::regclass);

SELECT create_distributed_table('health_incidents', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'health_incidents'::regclass);

SELECT create_distributed_table('agent_decisions', 'simulation_id', colocate_with => 'simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'agent_decisions'::regclass);

-- schema_migrations stays a local table on the coordinator: migrations run there, under the
-- runner's advisory lock, and nothing joins it with distributed data.
