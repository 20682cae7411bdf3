-- Attempt ids are the middleware's idempotency keys, chosen per tenant: two tenants may use
-- the same one for different calls. Rows are keyed by tenant as well.
ALTER TABLE cl_attempts DROP CONSTRAINT cl_attempts_pkey, ADD PRIMARY KEY (tenant_id, attempt_id);
ALTER TABLE cl_flags DROP CONSTRAINT cl_flags_pkey, ADD PRIMARY KEY (tenant_id, attempt_id, kind);
