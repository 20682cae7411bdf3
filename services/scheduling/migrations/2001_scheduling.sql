-- Scheduling read models. Every row is derived from events in the log and rebuilt by
-- `rebuild_projections`; nothing here is the source of truth.

CREATE TABLE sched_tenants (
    tenant_id text PRIMARY KEY,
    version bigint NOT NULL,
    settings jsonb NOT NULL
);

-- The latest version of each policy.
CREATE TABLE sched_policies (
    tenant_id text NOT NULL,
    policy_id text NOT NULL,
    version bigint NOT NULL,
    trigger_event_type text NOT NULL,
    cancel_on text[] NOT NULL,
    policy jsonb NOT NULL,
    PRIMARY KEY (tenant_id, policy_id)
);

-- Contact details of subjects, for the claiming agent only. Personal data.
CREATE TABLE sched_subjects (
    tenant_id text NOT NULL,
    subject_id text NOT NULL,
    name text NOT NULL,
    phones text[] NOT NULL,
    owner_agent_id text,
    department text,
    PRIMARY KEY (tenant_id, subject_id)
);

CREATE TABLE sched_callbacks (
    callback_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    policy_id text NOT NULL,
    policy_version bigint NOT NULL,
    step text NOT NULL,
    occurrence integer NOT NULL,
    subject_id text NOT NULL,
    department text,
    status text NOT NULL,
    due_at timestamptz NOT NULL,
    deadline timestamptz NOT NULL,
    priority smallint NOT NULL,
    owner_agent_id text,
    pool text NOT NULL,
    pool_after timestamptz NOT NULL,
    claimed_by text,
    lease_until timestamptz,
    attempts integer NOT NULL,
    end_reason text,
    stream_version bigint NOT NULL
);

-- ClaimNext: the waiting callbacks of a tenant in urgency order. Claimed ones are not in it,
-- so live leases never slow the queue down...
CREATE INDEX sched_callbacks_queue_idx ON sched_callbacks (tenant_id, priority, deadline, due_at, callback_id)
    WHERE status = 'scheduled';
-- ...and expired leases are found by their own index.
CREATE INDEX sched_callbacks_lease_idx ON sched_callbacks (tenant_id, lease_until)
    WHERE status = 'claimed';
-- Deadline watch: open callbacks by deadline.
CREATE INDEX sched_callbacks_deadline_idx ON sched_callbacks (deadline)
    WHERE status IN ('scheduled', 'claimed');
CREATE INDEX sched_callbacks_subject_idx ON sched_callbacks (tenant_id, subject_id);
