//! Callback facts from scheduling's feed: one row per callback, new rows copied in, changes
//! merged.

use super::*;

/// What one batch changes about one callback.
#[derive(Default)]
pub(super) struct CallbackDelta {
    tenant_id: Option<String>,
    policy_id: Option<String>,
    step: Option<String>,
    department: Option<String>,
    channel: Option<String>,
    due_at: Option<DateTime<Utc>>,
    deadline: Option<DateTime<Utc>>,
    status: Option<&'static str>,
    end_reason: Option<String>,
    ended_at: Option<DateTime<Utc>>,
    attempts: i32,
    last_agent: Option<String>,
    reached_at: Option<DateTime<Utc>>,
    /// The batch holds the callback's `CallbackScheduled`: its row is new.
    scheduled: bool,
}

/// What one batch of scheduling events changes.
#[derive(Default)]
pub struct SchedulingBatch {
    /// (tenant, time zone, calendar), in log order.
    tenants: Vec<(String, String, Value)>,
    callbacks: HashMap<Uuid, CallbackDelta>,
}

pub struct SchedulingFacts;

impl BatchProjection for SchedulingFacts {
    type Folded = SchedulingBatch;
    type Error = Error;

    fn name(&self) -> &str {
        "analytics.scheduling_facts"
    }

    fn fold(&self, events: &[RecordedEvent]) -> SchedulingBatch {
        let mut batch = SchedulingBatch::default();
        for event in events {
            if event.event_type == TenantPublished::EVENT_TYPE {
                if let Some(published) = decode::<TenantPublished>(event) {
                    let calendar = published.settings.calendar;
                    let time_zone = calendar.time_zone.clone();
                    match serde_json::to_value(&calendar) {
                        Ok(calendar) => {
                            batch
                                .tenants
                                .push((published.tenant_id, time_zone, calendar))
                        }
                        Err(error) => {
                            tracing::error!(event_id = %event.event_id, %error, "calendar not kept");
                        }
                    }
                }
                continue;
            }
            let Some(id) = stream_uuid(event, CallbackEvent::CATEGORY) else {
                continue;
            };
            let delta = batch.callbacks.entry(id).or_default();
            match event.event_type.as_str() {
                CallbackEvent::SCHEDULED => {
                    if let Some(s) = decode_view::<ScheduledView>(event) {
                        delta.tenant_id = Some(s.tenant_id);
                        delta.policy_id = Some(s.policy_id);
                        delta.step = Some(s.step);
                        delta.department = Some(s.department.unwrap_or_default());
                        delta.channel = Some(s.channel.as_str().to_owned());
                        delta.due_at = Some(s.due_at);
                        delta.deadline = Some(s.deadline);
                        delta.status = Some("open");
                        delta.scheduled = true;
                    }
                }
                CallbackEvent::ATTEMPTED => {
                    if let Some(a) = decode_view::<AttemptedView>(event) {
                        delta.attempts += 1;
                        delta.last_agent = Some(a.agent_id);
                    }
                }
                CallbackEvent::RESCHEDULED => {
                    if let Some(r) = decode_view::<RescheduledView>(event) {
                        delta.deadline = Some(r.deadline);
                    }
                }
                kind @ (CallbackEvent::COMPLETED
                | CallbackEvent::LOST
                | CallbackEvent::SKIPPED
                | CallbackEvent::CANCELLED) => {
                    if let Some(e) = decode_view::<EndedView>(event) {
                        delta.status = Some(match kind {
                            CallbackEvent::COMPLETED => "completed",
                            CallbackEvent::LOST => "lost",
                            CallbackEvent::SKIPPED => "skipped",
                            _ => "cancelled",
                        });
                        delta.end_reason = e.reason;
                        delta.ended_at = Some(e.at);
                        if kind == CallbackEvent::COMPLETED {
                            delta.reached_at = Some(e.at);
                        }
                    }
                }
                _ => {}
            }
        }
        batch
    }

    async fn write(&self, conn: &mut PgConnection, batch: SchedulingBatch) -> Result<(), Error> {
        for (tenant_id, time_zone, calendar) in &batch.tenants {
            sqlx::query(
                "INSERT INTO an_tenants (tenant_id, time_zone, calendar) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET time_zone = EXCLUDED.time_zone, calendar = EXCLUDED.calendar",
            )
            .bind(tenant_id)
            .bind(time_zone)
            .bind(calendar)
            .execute(&mut *conn)
            .await?;
        }
        write_callbacks(conn, batch.callbacks).await
    }
}

pub(super) async fn write_callbacks(
    conn: &mut PgConnection,
    callbacks: HashMap<Uuid, CallbackDelta>,
) -> Result<(), Error> {
    // A callback's first event is its `CallbackScheduled`, applied once (the checkpoint commits
    // with the batch), so a delta holding it is a row that does not exist yet. Those rows are
    // copied in (no parameters to decode, no upsert's speculative insertion; and an error
    // rather than a silent merge, should that ever not hold). Deltas of callbacks scheduled in
    // an earlier batch are merged into their rows.
    let (new, known): (Vec<_>, Vec<_>) = callbacks.into_iter().partition(|(_, d)| d.scheduled);
    copy_new_callbacks(conn, new).await?;
    merge_callbacks(conn, known).await
}

/// Adds rows that do not exist yet, in one binary COPY.
pub(super) async fn copy_new_callbacks(
    conn: &mut PgConnection,
    rows: Vec<(Uuid, CallbackDelta)>,
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut data = BinaryRows::new();
    for (id, d) in rows {
        data.row(15);
        data.uuid(id);
        data.text(d.tenant_id.as_deref());
        data.text(d.policy_id.as_deref());
        data.text(d.step.as_deref());
        data.text(d.department.as_deref());
        data.text(d.channel.as_deref());
        data.timestamptz(d.due_at);
        data.timestamptz(d.deadline);
        data.text(d.status);
        data.text(d.end_reason.as_deref());
        data.timestamptz(d.ended_at);
        data.int4(d.attempts);
        data.text(d.last_agent.as_deref());
        // The completing attempt is the callback's last one.
        data.text(d.reached_at.and(d.last_agent.as_deref()));
        data.timestamptz(d.reached_at);
    }
    let mut copy = conn
        .copy_in_raw(
            "COPY an_callbacks (callback_id, tenant_id, policy_id, step, department, channel, due_at, \
               deadline, status, end_reason, ended_at, attempts, last_agent, reached_by, reached_at) \
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    copy.send(data.finish()).await?;
    copy.finish().await?;
    Ok(())
}

/// Merges the deltas of callbacks whose row exists (or, should it not, inserts them), in one
/// multi-row statement.
pub(super) async fn merge_callbacks(
    conn: &mut PgConnection,
    rows: Vec<(Uuid, CallbackDelta)>,
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let mut ids = Vec::with_capacity(n);
    let (mut tenants, mut policies, mut steps, mut departments, mut channels) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut due, mut deadlines, mut statuses, mut reasons, mut ended) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut attempts, mut agents, mut reached) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, d) in rows {
        ids.push(id);
        tenants.push(d.tenant_id);
        policies.push(d.policy_id);
        steps.push(d.step);
        departments.push(d.department);
        channels.push(d.channel);
        due.push(d.due_at);
        deadlines.push(d.deadline);
        statuses.push(d.status);
        reasons.push(d.end_reason);
        ended.push(d.ended_at);
        attempts.push(d.attempts);
        agents.push(d.last_agent);
        reached.push(d.reached_at);
    }
    // The completing attempt is the callback's last one: who reached the customer is the last
    // agent, from this batch or the row.
    sqlx::query(
        "INSERT INTO an_callbacks AS t (callback_id, tenant_id, policy_id, step, department, channel, due_at, \
           deadline, status, end_reason, ended_at, attempts, last_agent, reached_by, reached_at) \
         SELECT u.id, u.tenant, u.policy, u.step, u.department, u.channel, u.due, u.deadline, u.status, u.reason, \
           u.ended, u.attempts, u.agent, CASE WHEN u.reached IS NOT NULL THEN u.agent END, u.reached \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], \
           $8::timestamptz[], $9::text[], $10::text[], $11::timestamptz[], $12::int[], $13::text[], $14::timestamptz[]) \
           AS u(id, tenant, policy, step, department, channel, due, deadline, status, reason, ended, attempts, agent, reached) \
         ON CONFLICT (callback_id) DO UPDATE SET \
           tenant_id = COALESCE(EXCLUDED.tenant_id, t.tenant_id), policy_id = COALESCE(EXCLUDED.policy_id, t.policy_id), \
           step = COALESCE(EXCLUDED.step, t.step), department = COALESCE(EXCLUDED.department, t.department), \
           channel = COALESCE(EXCLUDED.channel, t.channel), due_at = COALESCE(EXCLUDED.due_at, t.due_at), \
           deadline = COALESCE(EXCLUDED.deadline, t.deadline), status = COALESCE(EXCLUDED.status, t.status), \
           end_reason = COALESCE(EXCLUDED.end_reason, t.end_reason), ended_at = COALESCE(EXCLUDED.ended_at, t.ended_at), \
           attempts = t.attempts + EXCLUDED.attempts, last_agent = COALESCE(EXCLUDED.last_agent, t.last_agent), \
           reached_by = CASE WHEN EXCLUDED.reached_at IS NOT NULL THEN COALESCE(EXCLUDED.last_agent, t.last_agent) \
             ELSE t.reached_by END, \
           reached_at = COALESCE(EXCLUDED.reached_at, t.reached_at)",
    )
    .bind(ids)
    .bind(tenants)
    .bind(policies)
    .bind(steps)
    .bind(departments)
    .bind(channels)
    .bind(due)
    .bind(deadlines)
    .bind(statuses)
    .bind(reasons)
    .bind(ended)
    .bind(attempts)
    .bind(agents)
    .bind(reached)
    .execute(conn)
    .await?;
    Ok(())
}
