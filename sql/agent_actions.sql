-- Actions of one agent over a step range.
--
-- Answers: what did this agent do, and what did it earn, between two steps?
-- Parameters:
--   %(simulation_id)s  text     the simulation
--   %(agent_id)s       text     the agent
--   %(start_step)s     integer  first step (inclusive)
--   %(end_step)s       integer  last step (inclusive)
-- Returns: step, action_type, action_target_id, resources_before, resources_after,
--   reward, in step order.
SELECT step, action_type, action_target_id, resources_before, resources_after, reward
FROM agent_actions
WHERE simulation_id = %(simulation_id)s::text
  AND agent_id = %(agent_id)s::text
  AND step BETWEEN %(start_step)s::integer AND %(end_step)s::integer
ORDER BY step, action_id;
