-- Births and deaths per step.
--
-- Answers: at which steps were agents born or did they die, and how many?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: step, births (agents with birth_step = step, step > 0), deaths (agents with
--   death_step = step), one row per step with a birth or a death.
SELECT step,
       count(*) FILTER (WHERE kind = 'birth') AS births,
       count(*) FILTER (WHERE kind = 'death') AS deaths
FROM (
    SELECT birth_step AS step, 'birth' AS kind FROM agents
    WHERE simulation_id = %(simulation_id)s::text AND birth_step > 0
    UNION ALL
    SELECT death_step, 'death' FROM agents
    WHERE simulation_id = %(simulation_id)s::text AND death_step IS NOT NULL
) e
GROUP BY step
ORDER BY step;
