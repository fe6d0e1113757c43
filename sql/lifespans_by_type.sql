-- Lifespans by agent type.
--
-- Answers: how long do agents of each type live?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: agent_type, agents, dead, mean_lifespan, max_lifespan (steps, over agents
--   that died), one row per agent type (from the agent_lifespans view).
SELECT agent_type,
       count(*)          AS agents,
       count(lifespan)   AS dead,
       avg(lifespan)::float8 AS mean_lifespan,
       max(lifespan)     AS max_lifespan
FROM agent_lifespans
WHERE simulation_id = %(simulation_id)s::text
GROUP BY agent_type
ORDER BY agent_type;
