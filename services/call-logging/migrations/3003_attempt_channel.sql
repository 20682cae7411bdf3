-- The attempt's channel: only phone calls are expected to have telephony records. Rebuilt from
-- the CallAttemptLogged events like the rest of the row.
ALTER TABLE cl_attempts ADD COLUMN channel text;
CREATE INDEX cl_attempts_reached_phone_idx ON cl_attempts (tenant_id, ended_at)
    WHERE disposition = 'reached' AND channel = 'phone';
