-- Latest environment state.
--
-- Answers: what is the environment's most recent recorded state?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: every column of environment_states (step, state as jsonb, created_at),
--   at most one row.
SELECT *
FROM environment_states
WHERE simulation_id = %(simulation_id)s::text
ORDER BY step DESC
LIMIT 1;
