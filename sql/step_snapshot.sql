-- Step snapshot: every agent alive at one step, with its type.
--
-- Answers: what did the population look like at this step?
-- Parameters:
--   %(simulation_id)s  text     the simulation
--   %(step)s           integer  the step
-- Returns: agent_id, agent_type, position_x, position_y, resource_level, health,
--   one row per agent in agent_id order (primary-key range scan).
SELECT st.agent_id, a.agent_type, st.position_x, st.position_y, st.resource_level, st.health
FROM agent_states st
JOIN agents a ON a.simulation_id = st.simulation_id AND a.agent_id = st.agent_id
WHERE st.simulation_id = %(simulation_id)s::text
  AND st.step = %(step)s::integer
ORDER BY st.agent_id;
