-- Environment state at one step.
--
-- Answers: what was the environment like at this step?
-- Parameters:
--   %(simulation_id)s  text     the simulation
--   %(step)s           integer  the step
-- Returns: every column of environment_states (step, state as jsonb, created_at),
--   at most one row.
SELECT *
FROM environment_states
WHERE simulation_id = %(simulation_id)s::text
  AND step = %(step)s::integer;
