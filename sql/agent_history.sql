-- Agent history: one agent's state at every step it was alive.
--
-- Answers: how did this agent's position, resources, health and reward evolve?
-- Parameters:
--   %(simulation_id)s  text  the simulation
--   %(agent_id)s       text  the agent
-- Returns: step, position_x, position_y, resource_level, health, total_reward, age,
--   one row per step in step order (index agent_states_by_agent_idx, then a sort by step).
SELECT step, position_x, position_y, resource_level, health, total_reward, age
FROM agent_states
WHERE simulation_id = %(simulation_id)s::text
  AND agent_id = %(agent_id)s::text
ORDER BY step;
