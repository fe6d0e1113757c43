-- Latest environment state.
--
-- Answers: what is the environment's most recent recorded state?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: step, state (jsonb), at most one row.
SELECT step, state
FROM environment_states
WHERE simulation_id = %(simulation_id)s::text
ORDER BY step DESC
LIMIT 1;
