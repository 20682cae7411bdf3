-- Correcting facts that move a policy's callbacks (cancel and plan afresh).
ALTER TABLE sched_policies ADD COLUMN reschedule_on text[] NOT NULL DEFAULT '{}';
