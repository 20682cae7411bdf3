-- A callback past its deadline stays open (overdue) until its give-up time, then is lost.
ALTER TABLE sched_callbacks ADD COLUMN give_up_at timestamptz;
UPDATE sched_callbacks SET give_up_at = deadline;
ALTER TABLE sched_callbacks ALTER COLUMN give_up_at SET NOT NULL;
-- The give-up watch: open callbacks by give-up time.
CREATE INDEX sched_callbacks_give_up_idx ON sched_callbacks (give_up_at)
    WHERE status IN ('scheduled', 'claimed');
