-- Call-logging read models, derived from its events and rebuilt by `rebuild_projections`.

-- One row per logged attempt, for the honesty checks (overlaps, telephony matches).
CREATE TABLE cl_attempts (
    attempt_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    callback_id uuid NOT NULL,
    agent_id text NOT NULL,
    disposition text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL,
    telephony_call_id text
);
CREATE INDEX cl_attempts_agent_idx ON cl_attempts (tenant_id, agent_id, started_at);
CREATE INDEX cl_attempts_call_idx ON cl_attempts (tenant_id, telephony_call_id) WHERE telephony_call_id IS NOT NULL;

-- Call detail records from the telephony middleware.
CREATE TABLE cl_telephony (
    tenant_id text NOT NULL,
    call_id text NOT NULL,
    network_result text NOT NULL,
    started_at timestamptz NOT NULL,
    answered_at timestamptz,
    ended_at timestamptz NOT NULL,
    billable_seconds integer NOT NULL,
    PRIMARY KEY (tenant_id, call_id)
);

-- Raised honesty flags (弄虚作假 checks), one per attempt and kind.
CREATE TABLE cl_flags (
    attempt_id text NOT NULL,
    kind text NOT NULL,
    tenant_id text NOT NULL,
    agent_id text NOT NULL,
    evidence jsonb NOT NULL,
    PRIMARY KEY (attempt_id, kind)
);
