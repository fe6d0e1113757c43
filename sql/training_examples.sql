-- Training examples: rated agent decisions of a simulation, best first.
--
-- Answers: which decisions (prompt, output, feedback) can train the next model?
-- Parameters:
--   %(simulation_id)s  text              the simulation
--   %(min_rating)s     double precision  lowest rating to include
-- Returns: decision_id, event_id, event_type, agent_id, step, prompt, output, context,
--   action, feedback, rating, reason, by rating (highest first), then step
--   (from the decision_training_rows view).
SELECT decision_id, event_id, event_type, agent_id, step, prompt, output, context, action,
       feedback, rating, reason
FROM decision_training_rows
WHERE simulation_id = %(simulation_id)s::text
  AND rating >= %(min_rating)s::float8
ORDER BY rating DESC, step, decision_id;
