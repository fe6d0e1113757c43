-- Resource efficiency: resources held by agents against resources in the environment.
--
-- Answers: how well does the population turn available resources into holdings?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: step, agents, agent_resources (sum of agent_states.resource_level),
--   environment_resources (sum of resource_states.amount), resources_per_agent,
--   held_ratio (agent_resources / environment_resources), one row per step with states.
WITH held AS (
    SELECT step, count(*) AS agents, sum(resource_level) AS agent_resources
    FROM agent_states
    WHERE simulation_id = %(simulation_id)s::text
    GROUP BY step
), env AS (
    SELECT step, sum(amount) AS environment_resources
    FROM resource_states
    WHERE simulation_id = %(simulation_id)s::text
    GROUP BY step
)
SELECT held.step,
       held.agents,
       held.agent_resources,
       env.environment_resources,
       held.agent_resources / held.agents AS resources_per_agent,
       held.agent_resources / nullif(env.environment_resources, 0) AS held_ratio
FROM held
LEFT JOIN env USING (step)
ORDER BY held.step;
