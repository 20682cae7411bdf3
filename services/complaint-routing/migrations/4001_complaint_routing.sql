-- Complaint routing's read models. Every row here is derived from the event log (categories
-- `routing_rules` and `complaint`) and rebuilt from it by `callbackd rebuild complaint-routing`.

-- Every published version of a tenant's routing rules: a complaint's clocks count on the
-- calendar of the version it was filed under.
CREATE TABLE cr_rules (
    tenant_id text NOT NULL,
    version bigint NOT NULL,
    rules jsonb NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- One row per complaint: the folded state (a snapshot at `version` of its stream) and the
-- columns queries, group detection and the timer sweep select on.
CREATE TABLE cr_complaints (
    complaint_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    customer_id text NOT NULL,
    topic text NOT NULL,
    opinion boolean NOT NULL,
    class text NOT NULL,
    department text NOT NULL,
    status text NOT NULL,
    escalation_level text NOT NULL,
    breached boolean NOT NULL,
    filed_at timestamptz NOT NULL,
    -- The next clock breach, reply deadline or follow-up; NULL when none can fall.
    next_timer_at timestamptz,
    -- Resolved or rejected, and scheduling not yet asked for the callback that follows.
    needs_callback_request boolean NOT NULL,
    version bigint NOT NULL,
    state jsonb NOT NULL
);

CREATE INDEX cr_complaints_timers ON cr_complaints (next_timer_at) WHERE next_timer_at IS NOT NULL;
CREATE INDEX cr_complaints_callback_requests ON cr_complaints (filed_at) WHERE needs_callback_request;
CREATE INDEX cr_complaints_topic ON cr_complaints (tenant_id, topic, opinion, filed_at);
CREATE INDEX cr_complaints_customer ON cr_complaints (tenant_id, customer_id, filed_at);
CREATE INDEX cr_complaints_open ON cr_complaints (tenant_id, department, class, filed_at)
    WHERE status NOT IN ('closed', 'rejected');

-- Verification callbacks asked of scheduling, to match their outcomes to complaints.
CREATE TABLE cr_verification_callbacks (
    callback_id uuid PRIMARY KEY,
    complaint_id uuid NOT NULL
);
