-- The claim queue is a partial index over waiting callbacks, walked from its most urgent end.
-- A claim moves a row out of it, but its index entry stays (dead) until a vacuum, and every
-- later claim steps over it: after 46,000 claims without one, the queue query read 490 buffers
-- and took 2.7 ms instead of well under 1 ms. The default trigger (20% of the table dead) would
-- let a million-row table collect 200,000 such entries first, so this table is vacuumed after
-- every 10,000 changed rows whatever its size. (Only where autovacuum runs: see BENCHMARKS.)
ALTER TABLE sched_callbacks SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000
);
