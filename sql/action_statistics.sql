-- Action statistics: how often each action type was taken and what it paid.
--
-- Answers: which actions do agents choose, and which are rewarding?
-- Parameters:
--   %(simulation_id)s  text  the simulation
-- Returns: action_type, actions, agents (distinct), mean_reward, total_reward,
--   mean_resource_change, most frequent first (from the action_statistics view).
SELECT action_type, actions, agents, mean_reward, total_reward, mean_resource_change
FROM action_statistics
WHERE simulation_id = %(simulation_id)s::text
ORDER BY actions DESC, action_type;
