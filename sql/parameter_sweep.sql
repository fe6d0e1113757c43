-- Parameter sweep: final results grouped by the value of one simulation parameter.
--
-- Answers: how does a parameter (a key of simulations.parameters) change the outcome?
-- Parameters:
--   %(experiment_id)s  text  the experiment
--   %(parameter)s      text  the parameter key, for example 'learning_rate'
-- Returns: value (the parameter's value as stored, jsonb: a number stays a number and
--   numbers sort as numbers), simulations, mean_final_agents, mean_final_resources,
--   mean_final_reward, one row per value (NULL: key absent).
SELECT parameters -> %(parameter)s::text AS value,
       count(*)                           AS simulations,
       avg(final_total_agents)::float8    AS mean_final_agents,
       avg(final_total_resources)         AS mean_final_resources,
       avg(final_average_reward)          AS mean_final_reward
FROM simulation_summary
WHERE experiment_id = %(experiment_id)s::text
GROUP BY value
ORDER BY value;
