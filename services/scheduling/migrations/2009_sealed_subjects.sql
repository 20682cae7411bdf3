-- Subjects' names and numbers are sealed with the subject's key (callback-vault): the row
-- keeps the sealed contact and the keyed hash of each number (what do-not-call and frequency
-- caps match on), never the clear text. Rows written before sealing keep what they had.
ALTER TABLE sched_subjects RENAME COLUMN name TO sealed;
ALTER TABLE sched_subjects ALTER COLUMN sealed DROP NOT NULL;
ALTER TABLE sched_subjects RENAME COLUMN phones TO phone_keys;
