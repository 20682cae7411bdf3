-- The integration gateway's read models. Every row follows from the log: the settings from
-- IntegrationSettingsPublished, the deliveries from the feeds it notifies of and its own
-- Notification* events.

-- The current settings of each tenant (the document as published).
CREATE TABLE ig_settings (
    tenant_id text PRIMARY KEY,
    version bigint NOT NULL,
    settings jsonb NOT NULL,
    published_at timestamptz NOT NULL
);

-- Which tenant an HL7 sender (MSH-3 application, MSH-4 facility; '' = any facility) belongs
-- to: one tenant per sender.
CREATE TABLE ig_hl7_senders (
    application text NOT NULL,
    facility text NOT NULL,
    tenant_id text NOT NULL,
    PRIMARY KEY (application, facility)
);

-- Since when each subscription exists: events recorded before it are not notified (so a
-- rebuild does not notify the past).
CREATE TABLE ig_subscriptions (
    tenant_id text NOT NULL,
    name text NOT NULL,
    active_since timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- The outbox: one row per (subscription, event notified of).
CREATE TABLE ig_deliveries (
    delivery_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    subscription text NOT NULL,
    topic text NOT NULL,
    event_id uuid NOT NULL,
    -- The message to send, built when queued (personal data only where the subscription
    -- allows it).
    message jsonb NOT NULL,
    -- pending, delivered, dead
    status text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error text NOT NULL DEFAULT '',
    first_attempt_at timestamptz,
    finished_at timestamptz,
    queued_at timestamptz NOT NULL
);

CREATE INDEX ig_deliveries_due ON ig_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX ig_deliveries_dead ON ig_deliveries (tenant_id, finished_at DESC) WHERE status = 'dead';
