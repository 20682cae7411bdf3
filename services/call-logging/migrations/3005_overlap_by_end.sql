-- The overlapping-calls check asks for an attempt of the same agent that ended after this one
-- started and started before it ended. Searched by start, the scan had to step over every call
-- of the agent's previous day (the longest a call may last); searched by end, it reads only
-- the calls that ended after this one started, which for calls logged in order is none or the
-- overlapping one itself.
CREATE INDEX cl_attempts_agent_end_idx ON cl_attempts (tenant_id, agent_id, ended_at);
DROP INDEX cl_attempts_agent_idx;
