-- The vault subject whose key seals an attempt's personal data: an erasure of the subject
-- also erases the numbers of the call detail records matched to its attempts.
ALTER TABLE cl_attempts ADD COLUMN sealed_for text;
CREATE INDEX cl_attempts_sealed_for_idx ON cl_attempts (tenant_id, sealed_for) WHERE sealed_for IS NOT NULL;
