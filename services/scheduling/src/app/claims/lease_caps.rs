//! ClaimNext's entry point, and the per-agent lease cap (`max_leases_per_agent`): how many
//! callbacks one agent may hold under live leases at once.

use super::*;

/// How long a claim over the cap waits for an outcome on its way before it is refused.
const LEASE_CAP_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

impl Scheduling {
    /// Hands the most urgent due callback the agent may take to the agent under a lease.
    #[tracing::instrument(name = "scheduling.claim_next", skip_all, fields(tenant_id, agent_id))]
    pub async fn claim_next(
        &self,
        tenant_id: &str,
        agent_id: &str,
        departments: &[String],
        lease_seconds: u32,
    ) -> Result<Option<Claim>> {
        validate_id("tenant_id", tenant_id)?;
        if agent_id.is_empty() {
            return Err(invalid("agent_id", "must not be empty"));
        }
        if lease_seconds > MAX_LEASE_SECONDS {
            return Err(invalid(
                "lease_seconds",
                format!("at most {MAX_LEASE_SECONDS}"),
            ));
        }
        let lease = if lease_seconds == 0 {
            crate::domain::callback::DEFAULT_LEASE
        } else {
            Duration::seconds(i64::from(lease_seconds))
        };
        // An agent at its lease cap has usually just reported its call, and the outcome is on
        // its way through call-logging's feed: the claim waits a moment for it before saying so.
        let waiting_since = std::time::Instant::now();
        loop {
            // Served together with the claims of other agents arriving at the same time.
            let answer = self
                .claims
                .ask(
                    |reply| claims::ClaimRequest {
                        tenant_id: tenant_id.to_owned(),
                        agent_id: agent_id.to_owned(),
                        departments: departments.to_vec(),
                        lease,
                        reply,
                    },
                    self.store.pool(),
                    || self.without_queues(),
                    claims::SERVE_CLAIMS,
                )
                .await
                .map_err(queue_closed)?;
            match answer {
                Err(Error::LimitReached(_)) if waiting_since.elapsed() < LEASE_CAP_WAIT => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                answer => return answer,
            }
        }
    }

    /// The wants of agents below their tenant's lease cap; the others are answered
    /// RESOURCE_EXHAUSTED (retry later: an outcome just reported frees its lease once
    /// call-logging's feed delivers it). Claims of one agent in one batch count too.
    pub(super) async fn within_lease_caps(
        &self,
        tx: &mut PgConnection,
        wants: Vec<Want>,
        requests: &[ClaimRequest],
        tenants: &Tenants,
        answers: &mut [Option<Result<Option<Claim>>>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Want>> {
        // Tenants without a cap (0: batch work) need no count.
        let capped = |w: &Want| {
            tenants[&requests[w.request].tenant_id]
                .0
                .lease_cap()
                .is_some()
        };
        if !wants.iter().any(capped) {
            return Ok(wants);
        }
        let (tenant_ids, agent_ids): (Vec<&str>, Vec<&str>) = wants
            .iter()
            .filter(|w| capped(w))
            .map(|w| {
                let r = &requests[w.request];
                (r.tenant_id.as_str(), r.agent_id.as_str())
            })
            .unzip();
        // Per agent, through `sched_callbacks_agent_leases_idx` (see its migration for why the
        // status and lease conditions are in the FILTER, not the WHERE).
        let held: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT a.tenant_id, a.agent_id, \
               (SELECT count(*) FILTER (WHERE c.status = 'claimed' AND c.lease_until > $3) \
                FROM sched_callbacks c WHERE c.claimed_by = a.agent_id AND c.tenant_id = a.tenant_id) \
             FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[])) AS a(tenant_id, agent_id)",
        )
        .bind(&tenant_ids)
        .bind(&agent_ids)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut held: HashMap<(String, String), i64> = held
            .into_iter()
            .map(|(tenant, agent, n)| ((tenant, agent), n))
            .collect();
        let mut kept = Vec::with_capacity(wants.len());
        for want in wants {
            let r = &requests[want.request];
            let Some(cap) = tenants[&r.tenant_id].0.lease_cap().map(i64::from) else {
                kept.push(want);
                continue;
            };
            let count = held
                .entry((r.tenant_id.clone(), r.agent_id.clone()))
                .or_default();
            if *count >= cap {
                answers[want.request] = Some(Err(Error::LimitReached(format!(
                    "agent_id: the agent holds {count} callback(s) under live leases, the \
                     tenant's limit (max_leases_per_agent) is {cap}; report or release one first"
                ))));
            } else {
                *count += 1;
                kept.push(want);
            }
        }
        Ok(kept)
    }
}
