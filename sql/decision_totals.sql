-- Decision totals of a simulation.
--
-- Answers: how many decisions were made, how long did they take, how were they rated?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: decisions, mean_processing_time (seconds), rated, mean_rating, one row.
SELECT count(*)             AS decisions,
       avg(processing_time) AS mean_processing_time,
       count(rating)        AS rated,
       avg(rating)          AS mean_rating
FROM agent_decisions
WHERE simulation_id = %(simulation_id)s::text;
