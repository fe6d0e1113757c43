-- Cross-simulation comparison of the main step metrics over time.
--
-- Answers: how do the simulations of one experiment differ, step by step?
-- Parameters:
--   %(experiment_id)s  text  the experiment
-- Returns: simulation_id, step, total_agents, total_resources, average_agent_health,
--   average_reward, one row per simulation and step. (For any other metric, use
--   `sim-schema compare --metric NAME`, which checks the name against the schema.)
SELECT st.simulation_id, st.step, st.total_agents, st.total_resources,
       st.average_agent_health, st.average_reward
FROM simulation_steps st
JOIN simulations s ON s.simulation_id = st.simulation_id
WHERE s.experiment_id = %(experiment_id)s::text
ORDER BY st.simulation_id, st.step;
