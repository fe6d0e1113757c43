-- Agent lifespans: birth, death and lifespan of every agent.
--
-- Answers: when was each agent born, when did it die, how long did it live?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: agent_id, agent_type, birth_step, death_step, lifespan (steps; NULL while
--   alive), one row per agent in agent_id order (from the agent_lifespans view).
SELECT agent_id, agent_type, birth_step, death_step, lifespan
FROM agent_lifespans
WHERE simulation_id = %(simulation_id)s::text
ORDER BY agent_id;
