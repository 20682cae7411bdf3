-- One person, one number: subjects sharing a number (in E.164) are matched for do-not-call and
-- frequency caps.
CREATE INDEX sched_subjects_phones ON sched_subjects USING gin (phones);
