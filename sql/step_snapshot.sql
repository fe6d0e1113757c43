-- Step snapshot: every agent alive at one step.
--
-- Answers: what did the population look like at this step?
-- Parameters:
--   %(simulation_id)s  text     the simulation
--   %(step)s           integer  the step
-- Returns: every column of agent_states, one row per agent in agent_id order
--   (primary-key range scan). Join agents for their types, or see population_by_type.
SELECT *
FROM agent_states
WHERE simulation_id = %(simulation_id)s::text
  AND step = %(step)s::integer
ORDER BY agent_id;
