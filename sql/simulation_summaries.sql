-- Simulation summaries: status, agents, births, deaths and the final step's metrics.
--
-- Answers: where did each run end up (all of them, some, or those of one experiment)?
-- Parameters:
--   %(simulation_ids)s  text[]  only these simulations (optional)
--   %(experiment_id)s   text    only the simulations of this experiment (optional)
-- Returns: simulation_id, experiment_id, name, status, parameters, step_count, agents,
--   initial_agents, births, deaths, final_step, final_total_agents,
--   final_total_resources, final_average_agent_health, final_average_reward,
--   one row per simulation in simulation_id order (from the simulation_summary view).
SELECT simulation_id, experiment_id, name, status, parameters, step_count, agents,
       initial_agents, births, deaths, final_step, final_total_agents,
       final_total_resources, final_average_agent_health, final_average_reward
FROM simulation_summary
WHERE (%(simulation_ids)s::text[] IS NULL OR simulation_id = ANY(%(simulation_ids)s::text[]))
  AND (%(experiment_id)s::text IS NULL OR experiment_id = %(experiment_id)s::text)
ORDER BY simulation_id;
