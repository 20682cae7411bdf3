-- Reports select a tenant's callbacks by policy, then by due time. With the policy before the due
-- time, a report for one policy reads only that policy's index entries (a fifth of them when a
-- tenant has five policies) instead of every callback in the range. A report over all policies
-- lists the tenant's policies with one index descent each (a loose index scan, see
-- src/report.rs) and reads each policy's range in turn: the same entries as before.
-- The included columns keep the reports index-only scans.
DROP INDEX an_callbacks_due;
CREATE INDEX an_callbacks_policy_due ON an_callbacks (tenant_id, policy_id, due_at)
    INCLUDE (department, step, channel, status, end_reason, deadline, reached_at, attempts,
             reached_by, last_agent);
