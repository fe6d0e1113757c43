-- description: agent_states history index on (simulation_id, agent_id): deduplicated, 8 instead of 85 bytes per row
--
-- The history index keyed (simulation_id, agent_id, step) stored every key in full: 85 of
-- the 409 bytes an agent-state row cost. Keyed (simulation_id, agent_id), an agent's
-- entries share one key and PostgreSQL's B-tree deduplication stores them as one key and
-- a list of row pointers: 8.3 bytes per row. An agent's history then sorts its ~1000
-- rows by step after the index scan, which measured no slower (10M rows, side by side:
-- p50 7.1-8.7 ms against 7.2-7.6 ms). The new index is built before the old one is dropped; the build holds
-- a SHARE lock on agent_states (reads continue, writes wait) for its duration.

CREATE INDEX agent_states_by_agent_idx ON agent_states (simulation_id, agent_id);
DROP INDEX agent_states_agent_idx;
