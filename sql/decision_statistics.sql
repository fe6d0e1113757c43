-- Decision statistics per agent.
--
-- Answers: how many decisions did each agent make, how long did they take, how were
-- they rated?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: agent_id, decisions, mean_processing_time (seconds), rated, mean_rating,
--   one row per agent with decisions.
SELECT agent_id,
       count(*)             AS decisions,
       avg(processing_time) AS mean_processing_time,
       count(rating)        AS rated,
       avg(rating)          AS mean_rating
FROM agent_decisions
WHERE simulation_id = %(simulation_id)s::text
GROUP BY agent_id
ORDER BY agent_id;
