-- Latest state of an agent, with the latest profile, memory and relationships it has.
--
-- Answers: where does this agent stand now, and what does it know and whom?
-- Parameters:
--   %(simulation_id)s  text  the simulation
--   %(agent_id)s       text  the agent
-- Returns: every column of agent_states, at most one row (none if the agent has no
--   state): the typed columns and extras of its highest stored step; profile, memory and
--   relationships each the latest non-NULL value logged up to that step, so a simulation
--   that logs them only when they change still reads them back (profile falls back to the
--   profile the agent was registered with).
SELECT s.simulation_id, s.step, s.agent_id, s.position_x, s.position_y, s.position_z,
       s.resource_level, s.health, s.is_defending, s.total_reward, s.age,
       COALESCE(s.profile,
                (SELECT h.profile FROM agent_states h
                 WHERE h.simulation_id = s.simulation_id AND h.agent_id = s.agent_id
                   AND h.profile IS NOT NULL ORDER BY h.step DESC LIMIT 1),
                a.profile) AS profile,
       COALESCE(s.memory,
                (SELECT h.memory FROM agent_states h
                 WHERE h.simulation_id = s.simulation_id AND h.agent_id = s.agent_id
                   AND h.memory IS NOT NULL ORDER BY h.step DESC LIMIT 1)) AS memory,
       COALESCE(s.relationships,
                (SELECT h.relationships FROM agent_states h
                 WHERE h.simulation_id = s.simulation_id AND h.agent_id = s.agent_id
                   AND h.relationships IS NOT NULL ORDER BY h.step DESC LIMIT 1))
           AS relationships,
       s.extras
FROM agent_states s
JOIN agents a ON a.simulation_id = s.simulation_id AND a.agent_id = s.agent_id
WHERE s.simulation_id = %(simulation_id)s::text
  AND s.agent_id = %(agent_id)s::text
ORDER BY s.step DESC
LIMIT 1;
