//! Outcomes reported one at a time (the batch path is `outcome_batch`), what follows a
//! callback that ended, and the deadline watch.

use super::*;

impl Scheduling {
    /// Applies an attempt's outcome reported by the claiming agent. Idempotent on
    /// `attempt_id`: a repeated report changes nothing.
    #[tracing::instrument(name = "scheduling.record_outcome", skip_all, fields(callback_id = %callback_id, disposition = disposition.name()))]
    pub async fn record_outcome(
        &self,
        callback_id: Uuid,
        attempt_id: &str,
        agent_id: &str,
        lease_id: Uuid,
        disposition: &Disposition,
        at: DateTime<Utc>,
    ) -> Result<CallbackState> {
        let mut tx = self.store.begin().await?;
        let state = self
            .record_outcome_in(
                &mut tx,
                callback_id,
                attempt_id,
                agent_id,
                lease_id,
                disposition,
                at,
            )
            .await?;
        self.store.commit(tx).await?;
        Ok(state)
    }

    /// [`Scheduling::record_outcome`] inside the caller's transaction: a batch of one
    /// ([`Scheduling::record_outcomes_in`], the one write path of outcomes). A refused outcome
    /// is refused before anything is written, so the transaction stays usable.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_outcome_in(
        &self,
        tx: &mut PgConnection,
        callback_id: Uuid,
        attempt_id: &str,
        agent_id: &str,
        lease_id: Uuid,
        disposition: &Disposition,
        at: DateTime<Utc>,
    ) -> Result<CallbackState> {
        let outcome = ReportedOutcome {
            callback_id,
            attempt_id: attempt_id.to_owned(),
            agent_id: agent_id.to_owned(),
            lease_id,
            disposition: disposition.clone(),
            at,
        };
        match self.record_outcomes_in(tx, &[outcome]).await?.pop() {
            Some(OutcomeApplied::Applied(state) | OutcomeApplied::Before(state)) => Ok(state),
            Some(OutcomeApplied::Refused(error)) => Err(error),
            Some(OutcomeApplied::Unknown) | None => {
                Err(Error::NotFound(format!("callback `{callback_id}`")))
            }
        }
    }

    /// After a callback ended: the next occurrence or step of its policy, with the policy
    /// version the callback was created under.
    pub(super) async fn schedule_next(
        &self,
        tx: &mut PgConnection,
        ended: &CallbackState,
        calendar: &Calendar,
        ended_at: DateTime<Utc>,
    ) -> Result<()> {
        if ended.status == Status::Cancelled {
            return Ok(());
        }
        let s = &ended.scheduled;
        let policy_events = self
            .store
            .read_stream_on(
                tx,
                &policy_stream(&s.tenant_id, &s.policy_id)?,
                s.policy_version,
            )
            .await?;
        let policy = published_policy(decode(policy_events.first().ok_or_else(|| {
            Error::Corrupt(format!(
                "policy {} version {} missing",
                s.policy_id, s.policy_version
            ))
        })?)?)?;
        let fact_name = StreamName::new(
            BusinessEventIngested::CATEGORY,
            s.fact_stream
                .trim_start_matches(BusinessEventIngested::CATEGORY)
                .trim_start_matches('-'),
        )?;
        let fact_events = self.store.read_stream_on(tx, &fact_name, 1).await?;
        let ingested: BusinessEventIngested = decode(
            fact_events
                .first()
                .ok_or_else(|| Error::Corrupt(format!("fact {} missing", s.fact_stream)))?,
        )?;
        let finished = Finished {
            step: s.step_index,
            occurrence: s.occurrence,
            anchor_at: s.anchor_at,
            ended_at,
        };
        for plan in policy.next_callbacks(&ingested.fact, calendar, finished) {
            self.create_callback(
                tx,
                &policy,
                s.policy_version,
                &ingested.fact,
                &ingested.subject,
                &fact_name,
                plan,
                ended_at,
            )
            .await?;
        }
        Ok(())
    }

    /// Loses every open callback whose give-up time has passed ([`crate::domain::GIVEN_UP`]) and schedules
    /// what follows. A callback under a live lease waits for its lease: the agent may be on
    /// the phone with the customer, and a call begun in time counts. Driven by the projection, which is derived from events, so a
    /// restart misses none; the version check means none is lost twice. Returns how many.
    #[tracing::instrument(name = "scheduling.sweep_deadlines", skip_all)]
    pub async fn sweep_deadlines(&self) -> Result<usize> {
        let now = self.now();
        let mut total = 0;
        loop {
            let mut tx = self.store.begin().await?;
            let due: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT callback_id, tenant_id FROM sched_callbacks WHERE status IN ('scheduled', 'claimed') \
                 AND give_up_at <= $1 AND NOT (status = 'claimed' AND lease_until > $1) \
                 ORDER BY give_up_at LIMIT 200 FOR UPDATE SKIP LOCKED",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            if due.is_empty() {
                return Ok(total);
            }
            let mut calendars: HashMap<String, Arc<Calendar>> = HashMap::new();
            for (callback_id, tenant_id) in &due {
                if !calendars.contains_key(tenant_id) {
                    let (_, calendar) = self.tenant(&mut tx, tenant_id).await?;
                    calendars.insert(tenant_id.clone(), calendar);
                }
                let (state, version) = self.load_on(&mut tx, *callback_id).await?;
                let lost = state.decide_expiry(now).map_err(callback_refused)?;
                let ended = self
                    .append_callback(&mut tx, Some(state), version, &[lost], tenant_id)
                    .await?;
                self.schedule_next(&mut tx, &ended, &calendars[tenant_id], now)
                    .await?;
            }
            total += due.len();
            self.store.commit(tx).await?;
        }
    }
}
