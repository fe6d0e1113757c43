-- Experiments and their simulations.
--
-- Answers: which experiments are there, in what state, with how many simulations?
-- Parameters:
--   %(experiment_id)s  text  only this experiment (optional)
-- Returns: experiment_id, name, status, description, simulations, created_at,
--   completed_at, one row per experiment in experiment_id order.
SELECT e.experiment_id, e.name, e.status, e.description,
       (SELECT count(*)::int FROM simulations s WHERE s.experiment_id = e.experiment_id)
           AS simulations,
       e.created_at, e.completed_at
FROM experiments e
WHERE %(experiment_id)s::text IS NULL OR e.experiment_id = %(experiment_id)s::text
ORDER BY e.experiment_id;
