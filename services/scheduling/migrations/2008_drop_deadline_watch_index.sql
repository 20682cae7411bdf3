-- The watch that loses callbacks now reads `give_up_at` (sched_callbacks_give_up_idx); the old
-- deadline index only cost every claim an index write.
DROP INDEX IF EXISTS sched_callbacks_deadline_idx;
