-- A complainant is matched by customer id or by phone number (E.164): complaints without a
-- customer id (anonymous, a walk-in, a letter) still find the same person's earlier ones.
ALTER TABLE cr_complaints ADD COLUMN phones text[] NOT NULL DEFAULT '{}';
UPDATE cr_complaints SET phones = ARRAY(SELECT jsonb_array_elements_text(state->'filed'->'customer'->'phones'));
CREATE INDEX cr_complaints_phones ON cr_complaints USING gin (phones);
