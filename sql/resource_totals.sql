-- Resource totals over time.
--
-- Answers: how much resource is left in the environment at each step?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: step, total_amount (sum of resource_states.amount), resource_sites,
--   one row per step.
SELECT step, sum(amount) AS total_amount, count(*) AS resource_sites
FROM resource_states
WHERE simulation_id = %(simulation_id)s::text
GROUP BY step
ORDER BY step;
