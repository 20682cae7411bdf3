-- The one append-only event log shared by every service.
--
-- Global order is (transaction_id, position), not position alone: concurrent transactions
-- take positions from the sequence in one order and commit in another, so a reader polling
-- "position > last seen" could pass a position whose transaction commits later. Readers only
-- read rows whose writing transaction is below their snapshot's xmin (every transaction
-- below it has ended), and no transaction can later obtain an id below that horizon.

CREATE TABLE stream_categories (
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    owner text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    position bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id uuid NOT NULL,
    stream_id text NOT NULL,
    stream_category text NOT NULL,
    stream_version bigint NOT NULL CHECK (stream_version > 0),
    event_type text NOT NULL CHECK (event_type <> ''),
    schema_version integer NOT NULL CHECK (schema_version > 0),
    -- json, not jsonb: the log is read back as text far more often than queried, and
    -- converting jsonb back to text dominates replay cost (see shared notes).
    payload json NOT NULL,
    metadata json NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    -- The global order is the primary key; position alone needs no index of its own
    -- (the identity sequence makes it unique), and each index costs every append.
    CONSTRAINT events_pkey PRIMARY KEY (transaction_id, position),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- Append-only, enforced by the database for every role: statement-level triggers fire
-- even when an UPDATE or DELETE matches no row, and TRUNCATE has its own trigger.
CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'CB001';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

REVOKE UPDATE, DELETE, TRUNCATE ON events FROM PUBLIC;

-- Where each consumer has got to; written in the same transaction as the consumer's effects.
CREATE TABLE consumer_checkpoints (
    consumer text PRIMARY KEY,
    transaction_id bigint NOT NULL,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
