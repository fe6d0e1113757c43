-- Distribute an existing, migrated sim_schema schema on a Citus coordinator.
--
-- Run on the COORDINATOR, after `sim-schema migrate`, with search_path set to the module's
-- schema (the migrations are unqualified for the same reason; see docs/distributed.md):
--
--   PGOPTIONS='-c search_path=sim' psql "$DSN" -v ON_ERROR_STOP=1 -f sql/citus/distribute.sql
--
-- Layout (docs/distributed.md explains it):
--   reference tables   experiments, simulations   small (one row per run), referenced by all
--   distributed        agents and every other table with a simulation_id column, by
--                      simulation_id, co-located with agents (the anchor of a new group)
--   distributed        the compact bulk tables of migration 0006 (agent_states_data, ...)
--                      and the rollups, by sim_key, co-located with agent_states_data
--   local              schema_migrations  the runner's tracking table, coordinator only
--
-- Order: a referenced table is distributed before every table that references it (Citus
-- refuses a foreign key to a table it does not yet know). Every statement runs in its own
-- transaction and is skipped when the table is already in pg_dist_partition, so the script
-- is safe to re-run, and is re-run after every migration that adds a table.
-- tests/integration/test_distribution.py checks that every table is placed here.

DO $$
BEGIN
    IF to_regclass('simulations') IS NULL OR to_regclass('schema_migrations') IS NULL THEN
        RAISE EXCEPTION 'distribute.sql: no migrated sim_schema schema on search_path (%)',
            current_setting('search_path')
            USING HINT = 'Run it with search_path set to the module schema, after migrate.';
    END IF;
END
$$;

-- Reference tables: replicated to every node, so every distributed table can keep its
-- foreign key to them, and every ingest transaction finds its simulation locally.
SELECT create_reference_table('experiments')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'experiments'::regclass);

SELECT create_reference_table('simulations')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'simulations'::regclass);

-- The readable group. colocate_with => 'none' keeps the module's tables out of the default
-- group that unrelated text-distributed tables of the host database might share.
SELECT create_distributed_table('agents', 'simulation_id', colocate_with => 'none')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'agents'::regclass);

SELECT create_distributed_table('simulation_config', 'simulation_id', colocate_with => 'agents')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'simulation_config'::regclass);

SELECT create_distributed_table('simulation_steps', 'simulation_id', colocate_with => 'agents')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'simulation_steps'::regclass);

SELECT create_distributed_table('interactions', 'simulation_id', colocate_with => 'agents')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'interactions'::regclass);

SELECT create_distributed_table('environment_states', 'simulation_id', colocate_with => 'agents')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'environment_states'::regclass);

SELECT create_distributed_table('events', 'simulation_id', colocate_with => 'agents')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'events'::regclass);

SELECT create_distributed_table('ingest_batches', 'simulation_id', colocate_with => 'agents')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'ingest_batches'::regclass);

-- References agents and events.
SELECT create_distributed_table('agent_decisions', 'simulation_id', colocate_with => 'agents')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'agent_decisions'::regclass);

-- The compact group: no foreign keys (the module's writers check the parents per batch,
-- docs/schema.md#storage), distributed by the integer sim_key.
SELECT create_distributed_table('agent_states_data', 'sim_key', colocate_with => 'none')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'agent_states_data'::regclass);

SELECT create_distributed_table('agent_actions_data', 'sim_key', colocate_with => 'agent_states_data')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'agent_actions_data'::regclass);

SELECT create_distributed_table('resource_states_data', 'sim_key', colocate_with => 'agent_states_data')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'resource_states_data'::regclass);

SELECT create_distributed_table('learning_experiences_data', 'sim_key', colocate_with => 'agent_states_data')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'learning_experiences_data'::regclass);

SELECT create_distributed_table('health_incidents_data', 'sim_key', colocate_with => 'agent_states_data')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'health_incidents_data'::regclass);

SELECT create_distributed_table('population_rollup', 'sim_key', colocate_with => 'agent_states_data')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'population_rollup'::regclass);

SELECT create_distributed_table('action_rollup', 'sim_key', colocate_with => 'agent_states_data')
WHERE NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'action_rollup'::regclass);

-- schema_migrations stays a local table on the coordinator: migrations run there, under the
-- runner's advisory lock, and nothing joins it with distributed data.
