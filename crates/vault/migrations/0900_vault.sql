-- Keys of personal data, outside the append-only log: deleting a subject's key erases what
-- was sealed with it (in the log, the read models and every backup of them) while the log
-- itself is never rewritten.

-- One key per (tenant, subject), wrapped (encrypted) by the master key named by master_key_id.
-- `restricted`: processing is stopped (PIPL art. 44-47) but storage kept; nothing decrypts.
CREATE TABLE vault_subject_keys (
    tenant_id text NOT NULL,
    subject_id text NOT NULL,
    master_key_id text NOT NULL,
    wrapped bytea NOT NULL,
    restricted boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_id)
);

-- The key of the keyed hashes phone numbers are matched by (one row), wrapped like the
-- subject keys: the hashes must stay stable across master key rotations.
CREATE TABLE vault_hash_key (
    id smallint PRIMARY KEY CHECK (id = 1),
    master_key_id text NOT NULL,
    wrapped bytea NOT NULL
);
