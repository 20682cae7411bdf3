-- The lease cap counts one agent's live leases on every claim. Read from this index it costs
-- the agent's own leases, not every live lease of the tenant (which made ClaimNext's p99 grow
-- from 15 to 80 ms as leases accumulated in the benchmark). It is not partial on `status`:
-- the count's WHERE names only the agent, so the lease index (partial on status = 'claimed',
-- and cheap-looking to a planner whose statistics predate the leases) cannot be chosen.
CREATE INDEX sched_callbacks_agent_leases_idx ON sched_callbacks (claimed_by, tenant_id)
    WHERE claimed_by IS NOT NULL;
