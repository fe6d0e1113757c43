-- Population over time by agent type.
--
-- Answers: how many agents of each type were alive (had a state row) at each step?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: step, agent_type, agents, average_health, one row per step and type
--   (from the population_by_step view).
SELECT step, agent_type, agents, average_health
FROM population_by_step
WHERE simulation_id = %(simulation_id)s::text
ORDER BY step, agent_type;
