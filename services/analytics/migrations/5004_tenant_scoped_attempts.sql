-- Attempt ids are chosen per tenant: two tenants may use the same one for different calls.
ALTER TABLE an_answers DROP CONSTRAINT an_answers_pkey, ADD PRIMARY KEY (tenant_id, attempt_id, item_id);
ALTER TABLE an_honesty_flags DROP CONSTRAINT an_honesty_flags_pkey, ADD PRIMARY KEY (tenant_id, attempt_id, kind);
