//! Complaint facts from complaint routing's feed: one row per complaint.

use super::*;

/// What one batch changes about one complaint.
#[derive(Default)]
pub struct ComplaintDelta {
    tenant_id: Option<String>,
    class: Option<String>,
    origin: Option<String>,
    department: Option<String>,
    channel: Option<String>,
    filed_at: Option<DateTime<Utc>>,
    status: Option<&'static str>,
    rejected: bool,
    responded_at: Option<DateTime<Utc>>,
    first_response_breached: bool,
    update_breached: bool,
    resolution_breached: bool,
    reply_missed: bool,
    resolved_at: Option<DateTime<Utc>>,
    reopenings: i32,
    verifications: i32,
    satisfied: i32,
}

impl ComplaintDelta {
    fn responded(&mut self, at: DateTime<Utc>) {
        self.responded_at.get_or_insert(at);
    }
}

pub struct ComplaintFacts;

impl BatchProjection for ComplaintFacts {
    type Folded = HashMap<Uuid, ComplaintDelta>;
    type Error = Error;

    fn name(&self) -> &str {
        "analytics.complaint_facts"
    }

    fn fold(&self, events: &[RecordedEvent]) -> HashMap<Uuid, ComplaintDelta> {
        let mut complaints: HashMap<Uuid, ComplaintDelta> = HashMap::new();
        for event in events {
            let Some(id) = stream_uuid(event, ComplaintEvent::CATEGORY) else {
                continue;
            };
            let Some(fact) = decode::<ComplaintEvent>(event) else {
                continue;
            };
            let d = complaints.entry(id).or_default();
            match fact {
                ComplaintEvent::ComplaintFiled(filed) => {
                    d.tenant_id = Some(filed.tenant_id);
                    d.class = Some(filed.class.as_str().to_owned());
                    d.origin = Some(filed.origin.as_str().to_owned());
                    d.department = Some(filed.department);
                    d.channel = Some(filed.channel);
                    d.filed_at = Some(filed.at);
                    d.status = Some("open");
                }
                ComplaintEvent::ComplaintReclassified { to, department, .. } => {
                    d.class = Some(to.as_str().to_owned());
                    d.department = Some(department);
                }
                ComplaintEvent::ComplaintTransferred { to, .. } => d.department = Some(to),
                ComplaintEvent::ComplaintAcknowledged { at, .. }
                | ComplaintEvent::ProgressAdded { at, .. }
                | ComplaintEvent::InformationRequested { at, .. } => {
                    d.responded(at);
                    d.status = Some("in_progress");
                }
                ComplaintEvent::ComplaintResolved { at, .. } => {
                    d.responded(at);
                    d.resolved_at.get_or_insert(at);
                    d.status = Some("resolved");
                }
                ComplaintEvent::ComplaintRejected { at, .. } => {
                    d.responded(at);
                    d.rejected = true;
                    d.status = Some("rejected");
                }
                ComplaintEvent::ClockBreached { clock, .. } => match clock {
                    ClockName::FirstResponse => d.first_response_breached = true,
                    ClockName::Update => d.update_breached = true,
                    ClockName::Resolution => d.resolution_breached = true,
                },
                ComplaintEvent::ReplyDeadlineMissed { .. } => d.reply_missed = true,
                ComplaintEvent::VerificationAnswered { satisfied, .. } => {
                    d.verifications += 1;
                    d.satisfied += i32::from(satisfied);
                }
                ComplaintEvent::ComplaintReopened { .. } => {
                    d.reopenings += 1;
                    d.status = Some("in_progress");
                }
                ComplaintEvent::ComplaintClosed { .. } => d.status = Some("closed"),
                ComplaintEvent::InformationReceived { .. }
                | ComplaintEvent::ComplaintEscalated { .. }
                | ComplaintEvent::FollowUpReminded { .. }
                | ComplaintEvent::CallbackRequested { .. }
                | ComplaintEvent::CallbackUnavailable { .. } => {}
            }
        }
        complaints
    }

    async fn write(
        &self,
        conn: &mut PgConnection,
        complaints: HashMap<Uuid, ComplaintDelta>,
    ) -> Result<(), Error> {
        write_complaints(conn, complaints).await
    }
}

pub(super) async fn write_complaints(
    conn: &mut PgConnection,
    complaints: HashMap<Uuid, ComplaintDelta>,
) -> Result<(), Error> {
    if complaints.is_empty() {
        return Ok(());
    }
    let mut rows: Vec<(Uuid, ComplaintDelta)> = complaints.into_iter().collect();
    rows.sort_by_key(|(id, _)| *id);
    let ids: Vec<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    let text = |f: &dyn Fn(&ComplaintDelta) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(|(_, d)| f(d)).collect()
    };
    let time =
        |f: &dyn Fn(&ComplaintDelta) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
            rows.iter().map(|(_, d)| f(d)).collect()
        };
    let flag = |f: &dyn Fn(&ComplaintDelta) -> bool| -> Vec<bool> {
        rows.iter().map(|(_, d)| f(d)).collect()
    };
    let count = |f: &dyn Fn(&ComplaintDelta) -> i32| -> Vec<i32> {
        rows.iter().map(|(_, d)| f(d)).collect()
    };
    sqlx::query(
        "INSERT INTO an_complaints AS t (complaint_id, tenant_id, class, origin, department, channel, filed_at, \
           status, rejected, responded_at, first_response_breached, update_breached, resolution_breached, \
           reply_missed, resolved_at, reopenings, verifications, verifications_satisfied) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
           $7::timestamptz[], $8::text[], $9::bool[], $10::timestamptz[], $11::bool[], $12::bool[], $13::bool[], \
           $14::bool[], $15::timestamptz[], $16::int[], $17::int[], $18::int[]) \
         ON CONFLICT (complaint_id) DO UPDATE SET \
           tenant_id = COALESCE(EXCLUDED.tenant_id, t.tenant_id), class = COALESCE(EXCLUDED.class, t.class), \
           origin = COALESCE(EXCLUDED.origin, t.origin), department = COALESCE(EXCLUDED.department, t.department), \
           channel = COALESCE(EXCLUDED.channel, t.channel), filed_at = COALESCE(EXCLUDED.filed_at, t.filed_at), \
           status = COALESCE(EXCLUDED.status, t.status), rejected = t.rejected OR EXCLUDED.rejected, \
           responded_at = COALESCE(t.responded_at, EXCLUDED.responded_at), \
           first_response_breached = t.first_response_breached OR EXCLUDED.first_response_breached, \
           update_breached = t.update_breached OR EXCLUDED.update_breached, \
           resolution_breached = t.resolution_breached OR EXCLUDED.resolution_breached, \
           reply_missed = t.reply_missed OR EXCLUDED.reply_missed, \
           resolved_at = COALESCE(t.resolved_at, EXCLUDED.resolved_at), \
           reopenings = t.reopenings + EXCLUDED.reopenings, verifications = t.verifications + EXCLUDED.verifications, \
           verifications_satisfied = t.verifications_satisfied + EXCLUDED.verifications_satisfied",
    )
    .bind(&ids)
    .bind(text(&|d| d.tenant_id.clone()))
    .bind(text(&|d| d.class.clone()))
    .bind(text(&|d| d.origin.clone()))
    .bind(text(&|d| d.department.clone()))
    .bind(text(&|d| d.channel.clone()))
    .bind(time(&|d| d.filed_at))
    .bind(text(&|d| d.status.map(str::to_owned)))
    .bind(flag(&|d| d.rejected))
    .bind(time(&|d| d.responded_at))
    .bind(flag(&|d| d.first_response_breached))
    .bind(flag(&|d| d.update_breached))
    .bind(flag(&|d| d.resolution_breached))
    .bind(flag(&|d| d.reply_missed))
    .bind(time(&|d| d.resolved_at))
    .bind(count(&|d| d.reopenings))
    .bind(count(&|d| d.verifications))
    .bind(count(&|d| d.satisfied))
    .execute(conn)
    .await?;
    Ok(())
}
