-- Step snapshot: every agent alive at one step.
--
-- Answers: what did the population look like at this step?
-- Parameters:
--   %(simulation_id)s  text     the simulation
--   %(step)s           integer  the step
--   %(after_agent_id)s text     only agents after this one: the next page (optional)
--   %(limit)s          bigint   at most this many rows (optional)
-- Returns: every column of agent_states, one row per agent in agent_id order
--   (primary-key range scan). Join agents for their types, or see population_by_type.
SELECT *
FROM agent_states
WHERE simulation_id = %(simulation_id)s::text
  AND step = %(step)s::integer
  AND (%(after_agent_id)s::text IS NULL OR agent_id > %(after_agent_id)s::text)
ORDER BY agent_id
LIMIT %(limit)s::bigint;
