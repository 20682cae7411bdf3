-- The latest start among a tenant's telephony records (the frontier the missing-record check
-- compares against) is read for every phone attempt and every record: without this index that
-- `max(started_at)` read every record the tenant ever sent.
CREATE INDEX cl_telephony_started_idx ON cl_telephony (tenant_id, started_at);
