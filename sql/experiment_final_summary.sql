-- Experiment-wide final summary: the last step of every simulation of an experiment.
--
-- Answers: where did each run end up?
-- Parameters:
--   %(experiment_id)s  text  the experiment
-- Returns: simulation_id, status, parameters, agents, births, deaths, final_step,
--   final_total_agents, final_total_resources, final_average_agent_health,
--   final_average_reward, one row per simulation (from the simulation_summary view).
SELECT simulation_id, status, parameters, agents, births, deaths, final_step,
       final_total_agents, final_total_resources, final_average_agent_health,
       final_average_reward
FROM simulation_summary
WHERE experiment_id = %(experiment_id)s::text
ORDER BY simulation_id;
