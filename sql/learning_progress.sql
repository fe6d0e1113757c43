-- Learning progress per module.
--
-- Answers: does each learning module's reward improve over the run?
-- Parameters:
--   %(simulation_id)s  text     the simulation
--   %(bucket_size)s    integer  steps per bucket (for example 100)
-- Returns: module_type, bucket_start (first step of the bucket), experiences,
--   mean_reward, one row per module and bucket.
SELECT module_type,
       (step / %(bucket_size)s::integer) * %(bucket_size)s::integer AS bucket_start,
       count(*)    AS experiences,
       avg(reward) AS mean_reward
FROM learning_experiences
WHERE simulation_id = %(simulation_id)s::text
GROUP BY module_type, bucket_start
ORDER BY module_type, bucket_start;
