-- Health incidents by cause.
--
-- Answers: what hurts agents most, and how much?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: cause, incidents, agents (distinct), mean_health_change
--   (health_after - health_before), most frequent first.
SELECT cause,
       count(*)                          AS incidents,
       count(DISTINCT agent_id)          AS agents,
       avg(health_after - health_before) AS mean_health_change
FROM health_incidents
WHERE simulation_id = %(simulation_id)s::text
GROUP BY cause
ORDER BY incidents DESC, cause;
