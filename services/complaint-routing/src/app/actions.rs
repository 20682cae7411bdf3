//! The department's actions and the timer sweep: load a complaint, decide, append, project.

use super::*;

impl ComplaintRouting {
    #[tracing::instrument(name = "complaints.act", skip_all, fields(tenant_id, action = action.name()))]
    pub async fn act(
        &self,
        tenant_id: &str,
        complaint_id: Uuid,
        actor: &str,
        action: Action,
    ) -> Result<Acted> {
        validate_id("tenant_id", tenant_id)?;
        if actor.trim().is_empty() || actor.len() > 128 {
            return Err(invalid("actor", "must be 1-128 characters"));
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let (complaint, version) = self
            .load(&mut tx, complaint_id, true)
            .await?
            .filter(|(c, _)| c.state.filed.tenant_id == tenant_id)
            .ok_or_else(|| Error::NotFound(format!("complaint `{complaint_id}`")))?;
        let latest = self.latest_rules(&mut tx, tenant_id).await?;
        let calendar = complaint.calendar.clone();
        let (state, mut events) =
            complaint
                .state
                .fire_timers(&latest.rules, &calendar.calendar, now);
        let decided = state.decide(&action, actor, &latest.rules, now);
        let decided = match decided {
            Ok(decided) => decided,
            Err(refused) => {
                // The timers that fell due are still worth recording.
                if !events.is_empty() {
                    self.save(
                        &mut tx,
                        Some(version),
                        &state,
                        &events,
                        &calendar,
                        "system:complaint-routing",
                    )
                    .await?;
                    self.store.commit(tx).await?;
                }
                return Err(refused.into());
            }
        };
        let state = fold(Some(state), &decided, &calendar.calendar)?;
        events.extend(decided);
        self.save(
            &mut tx,
            Some(version),
            &state,
            &events,
            &calendar,
            &format!("staff:{actor}"),
        )
        .await?;
        self.store.commit(tx).await?;
        let event_types = events.iter().map(|e| e.event_type().to_owned()).collect();
        if state.needs_callback_request() {
            // At once, for a prompt callback; the sweep retries if scheduling is unreachable.
            if let Err(error) = self.request_callback(complaint_id).await {
                tracing::warn!(%error, "callback request deferred to the sweep");
            }
        }
        Ok(Acted {
            complaint: Complaint { state, calendar },
            event_types,
        })
    }

    /// Fires every timer that has fallen due (breaches, missed reply times, follow-ups).
    /// Driven by the read model's `next_timer_at`, which is derived from the events: a restart
    /// misses none, and the row lock plus the version check fire none twice. Returns how many
    /// complaints had timers fire.
    #[tracing::instrument(name = "complaints.sweep_timers", skip_all)]
    pub async fn sweep_timers(&self) -> Result<usize> {
        let now = self.now();
        let mut total = 0;
        loop {
            let mut tx = self.store.begin().await?;
            let due: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT complaint_id, tenant_id FROM cr_complaints WHERE next_timer_at <= $1 \
                 ORDER BY next_timer_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(now)
            .bind(SWEEP_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if due.is_empty() {
                return Ok(total);
            }
            let mut latest: HashMap<String, Arc<Rules>> = HashMap::new();
            for (complaint_id, tenant_id) in &due {
                if !latest.contains_key(tenant_id) {
                    let rules = self.latest_rules(&mut tx, tenant_id).await?;
                    latest.insert(tenant_id.clone(), rules);
                }
                let Some((complaint, version)) = self.load(&mut tx, *complaint_id, false).await?
                else {
                    continue;
                };
                let calendar = complaint.calendar.clone();
                let (state, events) =
                    complaint
                        .state
                        .fire_timers(&latest[tenant_id].rules, &calendar.calendar, now);
                self.save(
                    &mut tx,
                    Some(version),
                    &state,
                    &events,
                    &calendar,
                    "system:complaint-routing",
                )
                .await?;
            }
            total += due.len();
            self.store.commit(tx).await?;
            if (due.len() as i64) < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    pub(super) async fn apply_in(
        &self,
        conn: &mut PgConnection,
        complaint: Complaint,
        version: u64,
        events: &[ComplaintEvent],
    ) -> Result<bool> {
        if events.is_empty() {
            return Ok(false);
        }
        let state = fold(Some(complaint.state), events, &complaint.calendar.calendar)?;
        self.save(
            conn,
            Some(version),
            &state,
            events,
            &complaint.calendar,
            "system:complaint-routing",
        )
        .await?;
        Ok(true)
    }

    /// The complaint's snapshot and stream version from the read model; `lock` takes the
    /// row for the rest of the transaction.
    pub(super) async fn load(
        &self,
        conn: &mut PgConnection,
        complaint_id: Uuid,
        lock: bool,
    ) -> Result<Option<(Complaint, u64)>> {
        let sql = if lock {
            "SELECT state, version FROM cr_complaints WHERE complaint_id = $1 FOR UPDATE"
        } else {
            "SELECT state, version FROM cr_complaints WHERE complaint_id = $1"
        };
        let Some(row) = sqlx::query(sql)
            .bind(complaint_id)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let state: ComplaintState =
            serde_json::from_value(row.try_get("state")?).map_err(corrupt)?;
        let version: i64 = row.try_get("version")?;
        let calendar = self
            .rules_version(conn, &state.filed.tenant_id, state.filed.rules_version)
            .await?;
        Ok(Some((Complaint { state, calendar }, version as u64)))
    }

    /// Appends `events` (expecting `version`, or a new stream) and writes the read-model row
    /// for the resulting `state`.
    pub(super) async fn save(
        &self,
        conn: &mut PgConnection,
        version: Option<u64>,
        state: &ComplaintState,
        events: &[ComplaintEvent],
        rules: &Rules,
        actor: &str,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let tenant_id = &state.filed.tenant_id;
        let metadata = event_metadata(Some(tenant_id), Some(actor));
        let new_events = events
            .iter()
            .map(|e| Ok(callback_kit::events::new_event(e)?.with_metadata(metadata.clone())))
            .collect::<Result<Vec<_>>>()?;
        let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let result = self
            .store
            .append_in(
                conn,
                &complaint_stream(state.complaint_id())?,
                expected,
                &new_events,
            )
            .await?;
        project_complaint(conn, state, result.stream_version, &rules.calendar).await?;
        project_callbacks(conn, state.complaint_id(), events).await?;
        Ok(())
    }
}
