//! Reads: one complaint with its history, and lists by department, class and breach state.

use super::*;
use callback_contracts::complaint_routing::Customer;

impl ComplaintRouting {
    /// A `ComplaintFiled` payload with its customer and text opened.
    async fn opened_payload(
        &self,
        tenant_id: &str,
        complaint_id: Uuid,
        payload: &str,
    ) -> Result<String> {
        let mut value: Value = serde_json::from_str(payload).map_err(corrupt)?;
        let mut customer: Customer =
            serde_json::from_value(value["customer"].clone()).map_err(corrupt)?;
        let mut text = value["text"].as_str().unwrap_or_default().to_owned();
        self.open_personal(tenant_id, complaint_id, &mut customer, &mut text)
            .await?;
        value["customer"] = serde_json::to_value(&customer).map_err(corrupt)?;
        value["text"] = Value::String(text);
        serde_json::to_string(&value).map_err(corrupt)
    }

    /// One complaint with its history (from its stream).
    pub async fn get(&self, tenant_id: &str, complaint_id: Uuid) -> Result<ComplaintRecord> {
        validate_id("tenant_id", tenant_id)?;
        let mut history = self
            .store
            .read_stream(&complaint_stream(complaint_id)?, 1)
            .await?;
        let mut conn = self.store.pool().acquire().await?;
        let (complaint, _) = self
            .load(&mut conn, complaint_id, false)
            .await?
            .filter(|(c, _)| c.state.filed.tenant_id == tenant_id)
            .ok_or_else(|| Error::NotFound(format!("complaint `{complaint_id}`")))?;
        // The filing's sealed contact and text, opened for the reader (who sees the contact
        // masked) while the key lasts.
        for event in &mut history {
            if event.event_type == ComplaintEvent::FILED {
                event.payload = self
                    .opened_payload(tenant_id, complaint_id, &event.payload)
                    .await?;
            }
        }
        let complaint = self.opened(complaint).await?;
        Ok(ComplaintRecord { complaint, history })
    }

    /// Complaints by department, class and breach state; open ones unless asked otherwise,
    /// the most urgent (earliest timer) first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Complaint>> {
        validate_id("tenant_id", &filter.tenant_id)?;
        if !filter.class.is_empty() && domain::Class::parse(&filter.class).is_none() {
            return Err(invalid("class", "must be one of A, B, C, D, E"));
        }
        if !["", "breached", "on_track"].contains(&filter.breach.as_str()) {
            return Err(invalid("breach", "must be `breached`, `on_track` or empty"));
        }
        let limit = if filter.limit == 0 {
            100
        } else {
            filter.limit.min(1000)
        };
        let rows: Vec<Value> = sqlx::query_scalar(
            "SELECT state FROM cr_complaints WHERE tenant_id = $1 AND ($2 = '' OR department = $2) \
             AND ($3 = '' OR class = $3) AND ($4 = '' OR breached = ($4 = 'breached')) \
             AND ($5 OR status NOT IN ('closed', 'rejected')) \
             ORDER BY next_timer_at NULLS LAST, filed_at, complaint_id LIMIT $6",
        )
        .bind(&filter.tenant_id)
        .bind(&filter.department)
        .bind(&filter.class)
        .bind(&filter.breach)
        .bind(filter.include_closed)
        .bind(i64::from(limit))
        .fetch_all(self.store.pool())
        .await?;
        let mut conn = self.store.pool().acquire().await?;
        let mut complaints = Vec::with_capacity(rows.len());
        for value in rows {
            let state: ComplaintState = serde_json::from_value(value).map_err(corrupt)?;
            let calendar = self
                .rules_version(&mut conn, &state.filed.tenant_id, state.filed.rules_version)
                .await?;
            complaints.push(self.opened(Complaint { state, calendar }).await?);
        }
        Ok(complaints)
    }
}
