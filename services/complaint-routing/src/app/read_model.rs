//! The read model: the row writers every command and the rebuild share.

use super::*;

/// Folds events onto a state (or a new complaint).
pub fn fold(
    state: Option<ComplaintState>,
    events: &[ComplaintEvent],
    calendar: &Calendar,
) -> Result<ComplaintState> {
    events
        .iter()
        .fold(state, |s, e| ComplaintState::evolve(s, e, calendar))
        .ok_or_else(|| corrupt("complaint events without a filing"))
}

pub(super) async fn project_rules(
    conn: &mut PgConnection,
    tenant_id: &str,
    rules: &RoutingRules,
    version: u64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO cr_rules (tenant_id, version, rules) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, version) DO UPDATE SET rules = EXCLUDED.rules",
    )
    .bind(tenant_id)
    .bind(version as i64)
    .bind(serde_json::to_value(rules).map_err(corrupt)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn project_complaint(
    conn: &mut PgConnection,
    state: &ComplaintState,
    version: u64,
    calendar: &Calendar,
) -> Result<()> {
    let filed = &state.filed;
    sqlx::query(
        "INSERT INTO cr_complaints (complaint_id, tenant_id, customer_id, topic, opinion, class, department, \
         status, escalation_level, breached, filed_at, next_timer_at, needs_callback_request, version, state, phones) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         CASE WHEN EXISTS (SELECT 1 FROM vault_subject_keys k WHERE k.tenant_id = $2 \
              AND k.subject_id = CASE WHEN $3 <> '' THEN $3 ELSE 'complaint:' || $1::text END) \
              THEN $16::text[] ELSE '{}'::text[] END) \
         ON CONFLICT (complaint_id) DO UPDATE SET class = EXCLUDED.class, opinion = EXCLUDED.opinion, \
         department = EXCLUDED.department, status = EXCLUDED.status, escalation_level = EXCLUDED.escalation_level, \
         breached = EXCLUDED.breached, next_timer_at = EXCLUDED.next_timer_at, \
         needs_callback_request = EXCLUDED.needs_callback_request, version = EXCLUDED.version, state = EXCLUDED.state",
    )
    .bind(filed.complaint_id)
    .bind(&filed.tenant_id)
    .bind(&filed.customer.customer_id)
    .bind(&filed.topic)
    .bind(state.class.is_opinion())
    .bind(state.class.as_str())
    .bind(&state.department)
    .bind(state.status.as_str())
    .bind(state.level.as_str())
    .bind(state.is_breached())
    .bind(filed.at)
    .bind(state.next_timer(calendar).map(|(at, _)| at))
    .bind(state.needs_callback_request())
    .bind(version as i64)
    .bind(serde_json::to_value(state).map_err(corrupt)?)
    // The numbers' keyed hashes (repeat complainants), never the numbers.
    .bind(&filed.customer.phone_keys)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn project_callbacks(
    conn: &mut PgConnection,
    complaint_id: Uuid,
    events: &[ComplaintEvent],
) -> Result<()> {
    for event in events {
        if let ComplaintEvent::CallbackRequested {
            purpose: CallbackPurpose::Verification,
            callback_ids,
            ..
        } = event
        {
            for callback_id in callback_ids {
                sqlx::query(
                    "INSERT INTO cr_verification_callbacks (callback_id, complaint_id) VALUES ($1, $2) \
                     ON CONFLICT (callback_id) DO NOTHING",
                )
                .bind(callback_id)
                .bind(complaint_id)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}

impl ComplaintRouting {
    /// Clears the read models and rebuilds them from the log in one transaction, with the
    /// same row-writing functions the commands use. Run with the service stopped.
    pub async fn rebuild_projections(&self) -> Result<u64> {
        // The replay first waits for older transactions; it is opened before the rebuild's
        // own transaction, which would otherwise be one of them.
        let mut replay = self
            .store
            .replay(Filter::categories([
                RoutingRulesPublished::CATEGORY,
                ComplaintEvent::CATEGORY,
            ]))
            .await?;
        let mut tx = self.store.begin().await?;
        sqlx::query("TRUNCATE cr_rules, cr_complaints, cr_verification_callbacks")
            .execute(&mut *tx)
            .await?;
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let mut complaints: HashMap<Uuid, (Vec<ComplaintEvent>, u64)> = HashMap::new();
        let mut applied = 0u64;
        while let Some(events) = replay.next_page().await? {
            for event in &events {
                applied += 1;
                if event.category == RoutingRulesPublished::CATEGORY {
                    let published: RoutingRulesPublished =
                        callback_kit::events::decode(event).map_err(corrupt)?;
                    let tenant_id = published.tenant_id.clone();
                    let rules = published_rules(published)?;
                    project_rules(&mut tx, &tenant_id, &rules, event.stream_version as u64).await?;
                } else {
                    let id: Uuid = event
                        .stream_id
                        .trim_start_matches(ComplaintEvent::CATEGORY)
                        .trim_start_matches('-')
                        .parse()
                        .map_err(|_| corrupt(format!("complaint stream id {}", event.stream_id)))?;
                    let entry = complaints.entry(id).or_default();
                    entry
                        .0
                        .push(callback_kit::events::decode(event).map_err(corrupt)?);
                    entry.1 = event.stream_version as u64;
                }
            }
        }
        for (id, (events, version)) in &complaints {
            let Some(ComplaintEvent::ComplaintFiled(filed)) = events.first() else {
                return Err(corrupt(format!(
                    "complaint {id} does not start with its filing"
                )));
            };
            let rules = self
                .rules_version(&mut tx, &filed.tenant_id, filed.rules_version)
                .await?;
            let state = fold(None, events, &rules.calendar)?;
            project_complaint(&mut tx, &state, *version, &rules.calendar).await?;
            project_callbacks(&mut tx, *id, events).await?;
        }
        self.store.commit(tx).await?;
        Ok(applied)
    }
}
