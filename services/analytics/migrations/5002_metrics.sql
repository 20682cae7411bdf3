-- The analytics read models: one fact row per callback, answer, complaint and honesty flag,
-- folded from the other services' feeds (each consumer writes its rows with its checkpoint in
-- one transaction). Reports aggregate these at query time. Rebuilt from the log by resetting the
-- checkpoints (`callback_analytics::reset_read_models`).

-- Tenants' time zones and calendars (from scheduling's TenantPublished), for periods and for
-- "the first working day of the next month".
CREATE TABLE an_tenants (
    tenant_id text PRIMARY KEY,
    time_zone text NOT NULL,
    calendar jsonb NOT NULL
);

-- Analytics settings, published through the analytics API (latest version per tenant).
CREATE TABLE an_settings (
    tenant_id text PRIMARY KEY,
    version bigint NOT NULL,
    settings jsonb NOT NULL
);

-- One row per callback. Columns other than the key may be NULL while a batch's rows are
-- merged (see the upsert in src/facts.rs).
CREATE TABLE an_callbacks (
    callback_id uuid PRIMARY KEY,
    tenant_id text,
    policy_id text,
    step text,
    department text,
    channel text,
    due_at timestamptz,
    deadline timestamptz,
    -- open, completed, lost, skipped, cancelled
    status text,
    end_reason text,
    ended_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_agent text,
    reached_by text,
    reached_at timestamptz
);
-- Reports select a tenant's callbacks by due time; the included columns let them aggregate from
-- the index alone (an index-only scan) instead of visiting scattered heap pages.
CREATE INDEX an_callbacks_due ON an_callbacks (tenant_id, due_at)
    INCLUDE (department, policy_id, step, channel, status, end_reason, deadline, reached_at, attempts,
             reached_by, last_agent);

-- Questionnaire items by version (from call-logging's QuestionnairePublished).
CREATE TABLE an_questionnaire_items (
    tenant_id text NOT NULL,
    questionnaire_id text NOT NULL,
    version bigint NOT NULL,
    item_id text NOT NULL,
    -- rating, recommend, yes_no, single_choice, multiple_choice, free_text
    kind text NOT NULL,
    PRIMARY KEY (tenant_id, questionnaire_id, version, item_id)
);

-- One row per answered item (from SurveyAnswered). Free-text answers are personal data and
-- are not kept here: only numeric values (ratings, recommend scores, yes = 1 / no = 0).
CREATE TABLE an_answers (
    attempt_id text NOT NULL,
    item_id text NOT NULL,
    tenant_id text NOT NULL,
    callback_id uuid NOT NULL,
    questionnaire_id text NOT NULL,
    questionnaire_version bigint NOT NULL,
    value double precision,
    PRIMARY KEY (attempt_id, item_id)
);
CREATE INDEX an_answers_callback ON an_answers (callback_id);

-- One row per complaint (from complaint routing's feed).
CREATE TABLE an_complaints (
    complaint_id uuid PRIMARY KEY,
    tenant_id text,
    class text,
    origin text,
    department text,
    channel text,
    filed_at timestamptz,
    status text,
    rejected boolean NOT NULL DEFAULT false,
    responded_at timestamptz,
    first_response_breached boolean NOT NULL DEFAULT false,
    update_breached boolean NOT NULL DEFAULT false,
    resolution_breached boolean NOT NULL DEFAULT false,
    reply_missed boolean NOT NULL DEFAULT false,
    resolved_at timestamptz,
    reopenings integer NOT NULL DEFAULT 0,
    verifications integer NOT NULL DEFAULT 0,
    verifications_satisfied integer NOT NULL DEFAULT 0
);
CREATE INDEX an_complaints_filed ON an_complaints (tenant_id, filed_at);

-- One row per honesty flag (from call-logging's HonestyFlagRaised).
CREATE TABLE an_honesty_flags (
    attempt_id text NOT NULL,
    kind text NOT NULL,
    tenant_id text NOT NULL,
    agent_id text NOT NULL,
    -- When the flagged call was made (the flag may be raised later, when evidence arrives).
    raised_at timestamptz NOT NULL,
    PRIMARY KEY (attempt_id, kind)
);
CREATE INDEX an_honesty_flags_raised ON an_honesty_flags (tenant_id, raised_at);

-- Read-only views for BI tools, in their own schema, without phone numbers, customer ids,
-- names, notes or free-text answers. The role `callback_bi` may read this schema and nothing
-- else (views run with their owner's rights, so it needs no grant on the tables behind them).
CREATE SCHEMA callback_bi;

CREATE VIEW callback_bi.callbacks AS
    SELECT c.callback_id, c.tenant_id, c.policy_id, c.step, c.department, c.channel, c.due_at,
           c.deadline, c.status, c.end_reason, c.ended_at, c.attempts, c.reached_by, c.reached_at,
           c.status = 'completed' AND c.reached_at <= c.deadline AS reached_on_time
    FROM an_callbacks c WHERE c.tenant_id IS NOT NULL;

CREATE VIEW callback_bi.answers AS
    SELECT a.tenant_id, a.callback_id, a.attempt_id, a.questionnaire_id, a.questionnaire_version,
           a.item_id, i.kind, a.value
    FROM an_answers a
    JOIN an_questionnaire_items i ON i.tenant_id = a.tenant_id AND i.questionnaire_id = a.questionnaire_id
        AND i.version = a.questionnaire_version AND i.item_id = a.item_id;

CREATE VIEW callback_bi.complaints AS
    SELECT complaint_id, tenant_id, class, origin, department, channel, filed_at, status, rejected,
           responded_at, first_response_breached, update_breached, resolution_breached, reply_missed,
           resolved_at, reopenings, verifications, verifications_satisfied
    FROM an_complaints WHERE tenant_id IS NOT NULL;

CREATE VIEW callback_bi.honesty_flags AS
    SELECT tenant_id, attempt_id, agent_id, kind, raised_at FROM an_honesty_flags;

-- Creating a role needs CREATEROLE; where the service's user lacks it, the migration still
-- succeeds and says so, and an administrator creates the role and runs the two grants.
DO $$
BEGIN
    BEGIN
        CREATE ROLE callback_bi NOLOGIN;
    EXCEPTION
        WHEN duplicate_object OR unique_violation THEN
            NULL; -- another database of this cluster created it first
        WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role callback_bi: create it, then GRANT USAGE ON SCHEMA callback_bi and SELECT ON ALL TABLES IN SCHEMA callback_bi to it';
    END;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'callback_bi') THEN
        GRANT USAGE ON SCHEMA callback_bi TO callback_bi;
        GRANT SELECT ON ALL TABLES IN SCHEMA callback_bi TO callback_bi;
    END IF;
END
$$;
