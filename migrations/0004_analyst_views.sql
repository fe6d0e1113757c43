-- description: analyst views: simulation summary, population by step, lifespans, action statistics, decision training rows
--
-- Plain views (not materialized): they always show the current data, and a filter on
-- simulation_id is pushed down into them, so `WHERE simulation_id = ...` uses the
-- per-simulation indexes. Conventions: an agent is *born* when birth_step > 0 (agents
-- present at step 0 are the initial population) and *alive at step s* when it has an
-- agent_states row for s.

CREATE VIEW simulation_summary AS
SELECT s.simulation_id,
       s.experiment_id,
       s.name,
       s.status,
       s.parameters,
       s.step_count,
       s.started_at,
       s.ended_at,
       coalesce(a.agents, 0)          AS agents,
       coalesce(a.initial_agents, 0)  AS initial_agents,
       coalesce(a.births, 0)          AS births,
       coalesce(a.deaths, 0)          AS deaths,
       f.step                         AS final_step,
       f.total_agents                 AS final_total_agents,
       f.total_resources              AS final_total_resources,
       f.average_agent_health         AS final_average_agent_health,
       f.average_reward               AS final_average_reward,
       f.metrics                      AS final_metrics
FROM simulations s
LEFT JOIN LATERAL (
    SELECT count(*)                                 AS agents,
           count(*) FILTER (WHERE g.birth_step = 0) AS initial_agents,
           count(*) FILTER (WHERE g.birth_step > 0) AS births,
           count(g.death_step)                      AS deaths
    FROM agents g
    WHERE g.simulation_id = s.simulation_id
) a ON true
LEFT JOIN LATERAL (
    SELECT st.step, st.total_agents, st.total_resources, st.average_agent_health,
           st.average_reward, st.metrics
    FROM simulation_steps st
    WHERE st.simulation_id = s.simulation_id
    ORDER BY st.step DESC
    LIMIT 1
) f ON true;

COMMENT ON VIEW simulation_summary IS
    'One row per simulation: its experiment, status, parameters, agent counts and the metrics of its last recorded step.';
COMMENT ON COLUMN simulation_summary.agents IS 'Agents ever registered in the simulation.';
COMMENT ON COLUMN simulation_summary.initial_agents IS 'Agents present from step 0 (birth_step = 0).';
COMMENT ON COLUMN simulation_summary.births IS 'Agents born during the run (birth_step > 0).';
COMMENT ON COLUMN simulation_summary.deaths IS 'Agents with a death_step.';
COMMENT ON COLUMN simulation_summary.final_step IS 'Last step with a simulation_steps row (NULL when none).';
COMMENT ON COLUMN simulation_summary.final_total_agents IS 'simulation_steps.total_agents at final_step.';
COMMENT ON COLUMN simulation_summary.final_total_resources IS 'simulation_steps.total_resources at final_step.';
COMMENT ON COLUMN simulation_summary.final_average_agent_health IS 'simulation_steps.average_agent_health at final_step.';
COMMENT ON COLUMN simulation_summary.final_average_reward IS 'simulation_steps.average_reward at final_step.';
COMMENT ON COLUMN simulation_summary.final_metrics IS 'simulation_steps.metrics (open-ended JSON metrics) at final_step.';

CREATE VIEW population_by_step AS
SELECT st.simulation_id,
       st.step,
       a.agent_type,
       count(*)              AS agents,
       avg(st.health)        AS average_health,
       sum(st.resource_level) AS total_resource_level
FROM agent_states st
JOIN agents a ON a.simulation_id = st.simulation_id AND a.agent_id = st.agent_id
GROUP BY st.simulation_id, st.step, a.agent_type;

COMMENT ON VIEW population_by_step IS
    'Agents alive (with a state row) per simulation, step and agent type, with their mean health and total resources.';
COMMENT ON COLUMN population_by_step.agents IS 'Number of agent_states rows of this type at this step.';
COMMENT ON COLUMN population_by_step.average_health IS 'Mean agent_states.health of these agents.';
COMMENT ON COLUMN population_by_step.total_resource_level IS 'Sum of agent_states.resource_level of these agents.';

CREATE VIEW agent_lifespans AS
SELECT a.simulation_id,
       a.agent_id,
       a.agent_type,
       a.generation,
       a.birth_step,
       a.death_step,
       a.death_step IS NULL         AS alive,
       a.death_step - a.birth_step  AS lifespan
FROM agents a;

COMMENT ON VIEW agent_lifespans IS
    'Birth, death and lifespan (in steps) of every agent; lifespan is NULL while the agent is alive.';
COMMENT ON COLUMN agent_lifespans.alive IS 'True when the agent has no death_step.';
COMMENT ON COLUMN agent_lifespans.lifespan IS 'death_step - birth_step; NULL for agents still alive.';

CREATE VIEW action_statistics AS
SELECT simulation_id,
       action_type,
       count(*)                                  AS actions,
       count(DISTINCT agent_id)                  AS agents,
       avg(reward)                               AS mean_reward,
       sum(reward)                               AS total_reward,
       avg(resources_after - resources_before)   AS mean_resource_change
FROM agent_actions
GROUP BY simulation_id, action_type;

COMMENT ON VIEW action_statistics IS
    'Per simulation and action type: how often it was taken, by how many agents, and its mean reward and resource change.';
COMMENT ON COLUMN action_statistics.actions IS 'Number of agent_actions rows.';
COMMENT ON COLUMN action_statistics.agents IS 'Distinct agents that took the action.';
COMMENT ON COLUMN action_statistics.mean_reward IS 'Mean reward (NULL rewards ignored).';
COMMENT ON COLUMN action_statistics.total_reward IS 'Sum of rewards.';
COMMENT ON COLUMN action_statistics.mean_resource_change IS 'Mean of resources_after - resources_before.';

CREATE VIEW decision_training_rows AS
SELECT d.simulation_id,
       s.experiment_id,
       d.decision_id,
       d.event_id,
       e.event_type,
       d.agent_id,
       d.step,
       d.prompt,
       d.output,
       d.context,
       d.action,
       d.feedback,
       d.rating,
       d.reason,
       d.processing_time,
       d.created_at
FROM agent_decisions d
JOIN simulations s ON s.simulation_id = d.simulation_id
LEFT JOIN events e ON e.simulation_id = d.simulation_id AND e.event_id = d.event_id;

COMMENT ON VIEW decision_training_rows IS
    'Agent decisions as training examples: prompt, output, context, action and the feedback, rating and reason given afterwards.';
COMMENT ON COLUMN decision_training_rows.event_type IS 'Type of the event the decision answered (NULL when not linked to an event).';
COMMENT ON COLUMN decision_training_rows.rating IS 'Feedback rating; NULL until feedback was given.';
COMMENT ON COLUMN decision_training_rows.processing_time IS 'Seconds the agent took to decide.';
