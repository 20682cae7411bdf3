//! Verification and explanation callbacks: asked of scheduling through the port, and the
//! answers and ends that come back on the feeds.

use super::*;

/// A verification answer read against the rules: yes/true, "satisfied", or a rating at least
/// `min_rating` is satisfied; no/false or a lower rating is not; anything else is no answer.
pub fn is_satisfied(answer: &Value, min_rating: u32) -> Option<bool> {
    match answer {
        Value::Bool(yes) => Some(*yes),
        Value::Number(n) => n.as_f64().map(|n| n >= f64::from(min_rating)),
        Value::String(s) => match s.as_str() {
            "yes" | "satisfied" | "fairly_satisfied" => Some(true),
            "no" | "unsatisfied" | "dissatisfied" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

impl ComplaintRouting {
    /// Asks scheduling for every verification or explanation callback not yet asked for
    /// (an outbox: the first try happens right after the action; this catches what failed).
    pub async fn request_pending_callbacks(&self) -> Result<usize> {
        let pending: Vec<Uuid> = sqlx::query_scalar(
            "SELECT complaint_id FROM cr_complaints WHERE needs_callback_request ORDER BY filed_at LIMIT 100",
        )
        .fetch_all(self.store.pool())
        .await?;
        let mut done = 0;
        for complaint_id in pending {
            match self.request_callback(complaint_id).await {
                Ok(()) => done += 1,
                Err(Error::Scheduling(reason)) => {
                    tracing::warn!(%reason, "scheduling unreachable; callback requests wait");
                    break;
                }
                Err(error) => tracing::warn!(%error, "callback request failed"),
            }
        }
        Ok(done)
    }

    /// Asks scheduling (through `IngestBusinessEvent`, idempotent on the complaint, purpose and
    /// round) for the callback the complaint's resolution or rejection needs, and records the
    /// answer.
    pub(super) async fn request_callback(&self, complaint_id: Uuid) -> Result<()> {
        // One connection for both reads, returned before the call to scheduling.
        let mut conn = self.store.pool().acquire().await?;
        let Some((complaint, _)) = self.load(&mut conn, complaint_id, false).await? else {
            return Ok(());
        };
        let state = &complaint.state;
        if !state.needs_callback_request() {
            return Ok(());
        }
        let latest = self.latest_rules(&mut conn, &state.filed.tenant_id).await?;
        drop(conn);
        let purpose = if state.status == Status::Resolved {
            CallbackPurpose::Verification
        } else {
            CallbackPurpose::Explanation
        };
        let (event_type, purpose_name) = match purpose {
            CallbackPurpose::Verification => {
                (&latest.rules.verification.event_type, "verification")
            }
            CallbackPurpose::Explanation => (
                &latest.rules.verification.explanation_event_type,
                "explanation",
            ),
        };
        let filed = &state.filed;
        let attributes = match json!({
            "complaint_id": complaint_id, "class": state.class.as_str(),
            "department": state.department, "purpose": purpose_name,
        }) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        // Scheduling gets the contact in clear (it seals it again under the customer's key);
        // an erased or restricted complainant's is empty.
        let mut customer = filed.customer.clone();
        let mut text = String::new();
        self.open_personal(&filed.tenant_id, complaint_id, &mut customer, &mut text)
            .await?;
        if customer.name == super::ERASED || customer.name == super::RESTRICTED {
            customer.name.clear();
            customer.phones.clear();
        }
        let request = CallbackRequest {
            tenant_id: filed.tenant_id.clone(),
            source_event_id: format!("{complaint_id}:{purpose_name}:{}", state.reopenings),
            event_type: event_type.clone(),
            occurred_at: state.last_at,
            customer,
            department: state.department.clone(),
            attributes,
        };
        let callback_ids = match self.scheduling.request_callback(request).await? {
            CallbackAnswer::Scheduled(ids) => ids,
            CallbackAnswer::Refused(reason) => {
                let at = self.now();
                return self
                    .record_callback_answer(
                        complaint_id,
                        ComplaintEvent::CallbackUnavailable {
                            purpose,
                            reason: format!("scheduling refused the request: {reason}"),
                            at,
                        },
                    )
                    .await;
            }
        };
        let at = self.now();
        let event = if callback_ids.is_empty() {
            ComplaintEvent::CallbackUnavailable {
                purpose,
                reason: format!(
                    "scheduling planned no callback for `{event_type}` (no matching policy)"
                ),
                at,
            }
        } else {
            ComplaintEvent::CallbackRequested {
                purpose,
                callback_ids,
                at,
            }
        };
        self.record_callback_answer(complaint_id, event).await
    }

    pub(super) async fn record_callback_answer(
        &self,
        complaint_id: Uuid,
        event: ComplaintEvent,
    ) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let Some((complaint, version)) = self.load(&mut tx, complaint_id, true).await? else {
            return Ok(());
        };
        if !complaint.state.needs_callback_request() {
            // Recorded meanwhile by another instance.
            return Ok(());
        }
        let events = [event];
        let state = fold(Some(complaint.state), &events, &complaint.calendar.calendar)?;
        self.save(
            &mut tx,
            Some(version),
            &state,
            &events,
            &complaint.calendar,
            "system:complaint-routing",
        )
        .await?;
        self.store.commit(tx).await?;
        Ok(())
    }

    /// The complaint a verification callback belongs to.
    pub(super) async fn complaint_of_callback(
        &self,
        conn: &mut PgConnection,
        callback_id: Uuid,
    ) -> Result<Option<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT complaint_id FROM cr_verification_callbacks WHERE callback_id = $1",
        )
        .bind(callback_id)
        .fetch_optional(conn)
        .await?)
    }

    /// A survey answered on a callback: when it is a verification callback and the rules'
    /// item was answered, the complaint closes (satisfied) or reopens. Returns whether a
    /// complaint changed.
    pub async fn survey_answered_in(
        &self,
        conn: &mut PgConnection,
        callback_id: Uuid,
        answers: &std::collections::BTreeMap<String, Value>,
    ) -> Result<bool> {
        let Some(complaint_id) = self.complaint_of_callback(conn, callback_id).await? else {
            return Ok(false);
        };
        let Some((complaint, version)) = self.load(conn, complaint_id, true).await? else {
            return Ok(false);
        };
        let latest = self
            .latest_rules(conn, &complaint.state.filed.tenant_id)
            .await?;
        let rule = &latest.rules.verification;
        let Some(satisfied) = answers
            .get(&rule.item_id)
            .and_then(|answer| is_satisfied(answer, rule.min_rating))
        else {
            return Ok(false);
        };
        let events = complaint
            .state
            .verification_answered(callback_id, satisfied, self.now());
        self.apply_in(conn, complaint, version, &events).await
    }

    /// A verification callback lost or cancelled: the complaint closes with that fact.
    pub async fn callback_ended_in(
        &self,
        conn: &mut PgConnection,
        callback_id: Uuid,
        outcome: &str,
        reason: &str,
    ) -> Result<bool> {
        let Some(complaint_id) = self.complaint_of_callback(conn, callback_id).await? else {
            return Ok(false);
        };
        let Some((complaint, version)) = self.load(conn, complaint_id, true).await? else {
            return Ok(false);
        };
        let events = complaint
            .state
            .verification_ended(callback_id, outcome, reason, self.now());
        self.apply_in(conn, complaint, version, &events).await
    }
}
