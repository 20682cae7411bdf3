//! Reads: one callback (as of any time), several at once, the lease rule for a batch of
//! attempts, and the due or overdue list.

use super::*;

impl Scheduling {
    /// A callback with its full history; with `as_of`, its state from the events recorded
    /// until then (for audits).
    pub async fn get_callback(
        &self,
        tenant_id: &str,
        callback_id: Uuid,
        as_of: Option<DateTime<Utc>>,
    ) -> Result<CallbackRecord> {
        let events = self
            .store
            .read_stream(&callback_stream(callback_id)?, 1)
            .await?;
        let history: Vec<RecordedEvent> = events
            .into_iter()
            .filter(|e| as_of.is_none_or(|t| e.recorded_at <= t))
            .collect();
        match callback_state(&history)? {
            Some(state) if state.scheduled.tenant_id == tenant_id => {
                Ok(CallbackRecord { state, history })
            }
            _ => Err(Error::NotFound(format!("callback `{callback_id}`"))),
        }
    }

    /// The current state of several callbacks of a tenant, from their streams in one read; in
    /// the order asked, an id the tenant has no callback for left out.
    pub async fn get_callbacks(
        &self,
        tenant_id: &str,
        callback_ids: &[Uuid],
    ) -> Result<Vec<CallbackState>> {
        if callback_ids.len() > MAX_CALLBACKS_PER_READ {
            return Err(invalid(
                "callback_ids",
                format!("at most {MAX_CALLBACKS_PER_READ} per request"),
            ));
        }
        let streams = callback_ids
            .iter()
            .map(|id| callback_stream(*id))
            .collect::<Result<Vec<_>>>()?;
        let mut conn = self.store.pool().acquire().await?;
        let histories = self.store.read_streams_on(&mut conn, &streams).await?;
        let mut states = Vec::with_capacity(histories.len());
        for history in &histories {
            states.extend(callback_state(history)?.filter(|s| s.scheduled.tenant_id == tenant_id));
        }
        Ok(states)
    }

    /// The lease rule ([`CallbackState::check_lease`]) for several leases of a tenant, in one
    /// read; in the order asked: `None` when the tenant has no such callback, else its state
    /// and the verdict.
    #[allow(clippy::type_complexity)]
    pub async fn check_leases(
        &self,
        tenant_id: &str,
        leases: &[LeaseToCheck],
    ) -> Result<Vec<Option<(CallbackState, std::result::Result<(), LeaseRefusal>)>>> {
        if leases.len() > MAX_CALLBACKS_PER_READ {
            return Err(invalid(
                "leases",
                format!("at most {MAX_CALLBACKS_PER_READ} per request"),
            ));
        }
        let ids: Vec<Uuid> = leases.iter().map(|l| l.callback_id).collect();
        let states = self.get_callbacks(tenant_id, &ids).await?;
        let by_id: HashMap<Uuid, &CallbackState> = states
            .iter()
            .map(|s| (s.scheduled.callback_id, s))
            .collect();
        Ok(leases
            .iter()
            .map(|lease| {
                by_id.get(&lease.callback_id).map(|state| {
                    let verdict = state.check_lease(&lease.agent_id, lease.lease_id);
                    ((*state).clone(), verdict)
                })
            })
            .collect())
    }

    /// Due (or overdue) open callbacks of a tenant, most urgent first.
    pub async fn list_callbacks(
        &self,
        tenant_id: &str,
        department: &str,
        agent_id: &str,
        overdue: bool,
        limit: u32,
    ) -> Result<Vec<CallbackRow>> {
        validate_id("tenant_id", tenant_id)?;
        let limit = if limit == 0 { 100 } else { limit.min(1000) };
        let now = self.now();
        let rows = sqlx::query_as::<_, CallbackRow>(&format!(
            "SELECT {CALLBACK_COLUMNS} FROM sched_callbacks WHERE tenant_id = $1 AND status IN ('scheduled', 'claimed') \
             AND ($2 = '' OR department = $2) AND ($3 = '' OR owner_agent_id = $3 OR claimed_by = $3) \
             AND (CASE WHEN $4 THEN deadline <= $5 ELSE due_at <= $5 END) \
             ORDER BY priority, deadline, callback_id LIMIT $6"
        ))
        .bind(tenant_id)
        .bind(department)
        .bind(agent_id)
        .bind(overdue)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows)
    }
}
