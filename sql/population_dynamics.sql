-- Population dynamics: agents alive, born and died at every step.
--
-- Answers: how does the population grow and shrink, and why?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: step, alive (agents with a state row), births (agents with birth_step = step,
--   step > 0), deaths (agents with death_step = step), net_change (births - deaths),
--   one row per step that has states, births or deaths.
WITH alive AS (
    SELECT step, count(*) AS alive
    FROM agent_states
    WHERE simulation_id = %(simulation_id)s::text
    GROUP BY step
), born AS (
    SELECT birth_step AS step, count(*) AS births
    FROM agents
    WHERE simulation_id = %(simulation_id)s::text AND birth_step > 0
    GROUP BY birth_step
), died AS (
    SELECT death_step AS step, count(*) AS deaths
    FROM agents
    WHERE simulation_id = %(simulation_id)s::text AND death_step IS NOT NULL
    GROUP BY death_step
)
SELECT step,
       coalesce(alive.alive, 0)   AS alive,
       coalesce(born.births, 0)   AS births,
       coalesce(died.deaths, 0)   AS deaths,
       coalesce(born.births, 0) - coalesce(died.deaths, 0) AS net_change
FROM alive
FULL JOIN born USING (step)
FULL JOIN died USING (step)
ORDER BY step;
