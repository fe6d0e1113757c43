-- Agent history: one agent's state at every step it was alive.
--
-- Answers: how did this agent's position, resources, health, reward and memory evolve?
-- Parameters:
--   %(simulation_id)s  text     the simulation
--   %(agent_id)s       text     the agent
--   %(start_step)s     integer  first step, inclusive (optional)
--   %(end_step)s       integer  last step, inclusive (optional)
--   %(after_step)s     integer  only steps after this one: the next page (optional)
--   %(limit)s          bigint   at most this many rows (optional)
-- Returns: every column of agent_states, one row per step in step order
--   (index agent_states_by_agent_idx, then a sort by step).
SELECT *
FROM agent_states
WHERE simulation_id = %(simulation_id)s::text
  AND agent_id = %(agent_id)s::text
  AND (%(start_step)s::integer IS NULL OR step >= %(start_step)s::integer)
  AND (%(end_step)s::integer IS NULL OR step <= %(end_step)s::integer)
  AND (%(after_step)s::integer IS NULL OR step > %(after_step)s::integer)
ORDER BY step
LIMIT %(limit)s::bigint;
