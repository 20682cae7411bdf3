-- Call attempts per person (subject), for the tenant's frequency caps across all policies.
-- Derived from CallbackAttempted events; rebuilt with the other scheduling read models.
CREATE TABLE sched_contact_attempts (
    callback_id uuid NOT NULL,
    attempt_id text NOT NULL,
    tenant_id text NOT NULL,
    subject_id text NOT NULL,
    attempted_at timestamptz NOT NULL,
    PRIMARY KEY (callback_id, attempt_id)
);

CREATE INDEX sched_contact_attempts_subject_idx ON sched_contact_attempts (tenant_id, subject_id, attempted_at);
