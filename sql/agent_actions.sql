-- Actions of a simulation, of one agent, one type or a step range.
--
-- Answers: what did the agents (or this agent) do, and what did it earn?
-- Parameters:
--   %(simulation_id)s  text     the simulation
--   %(agent_id)s       text     only this agent (optional)
--   %(action_type)s    text     only this action type (optional)
--   %(step)s           integer  only this step (optional)
--   %(start_step)s     integer  first step, inclusive (optional)
--   %(end_step)s       integer  last step, inclusive (optional)
--   %(after_step)s     integer  the next page: the rows after the action (optional)
--   %(after_agent_id)s text     (after_step, after_agent_id, after_ordinal) (optional)
--   %(after_ordinal)s  smallint (all three or none) (optional)
--   %(limit)s          bigint   at most this many rows (optional)
-- Returns: every column of agent_actions, in (step, agent_id, ordinal) order.
SELECT *
FROM agent_actions
WHERE simulation_id = %(simulation_id)s::text
  AND (%(agent_id)s::text IS NULL OR agent_id = %(agent_id)s::text)
  AND (%(action_type)s::text IS NULL OR action_type = %(action_type)s::text)
  AND (%(step)s::integer IS NULL OR step = %(step)s::integer)
  AND (%(start_step)s::integer IS NULL OR step >= %(start_step)s::integer)
  AND (%(end_step)s::integer IS NULL OR step <= %(end_step)s::integer)
  AND (%(after_step)s::integer IS NULL OR (step >= %(after_step)s::integer
       AND (step, agent_id, ordinal) > (%(after_step)s::integer, %(after_agent_id)s::text,
                                        %(after_ordinal)s::smallint)))
ORDER BY step, agent_id, ordinal
LIMIT %(limit)s::bigint;
