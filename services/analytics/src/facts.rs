//! The fact tables, folded from the other services' feeds. Each consumer folds a batch in
//! memory (one delta per callback or complaint) and writes each table once per batch with a
//! multi-row upsert, in the transaction that also stores its checkpoint; so every event counts
//! once, and late or out-of-order facts (a correction, a late telephony record) simply update
//! the rows they concern.

use std::collections::HashMap;

use callback_contracts::call_logging::{HonestyFlagRaised, QuestionnairePublished, SurveyAnswered};
use callback_contracts::complaint_routing::{ClockName, ComplaintEvent};
use callback_contracts::scheduling::{
    AttemptedView, CallbackEvent, EndedView, RescheduledView, ScheduledView, TenantPublished,
};
use callback_contracts::{EventContract, EventView};
use callback_eventstore::{BatchProjection, RecordedEvent};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::copy::BinaryRows;
use crate::Error;

/// Events per consumer transaction: each batch is folded in memory and written once, so larger
/// batches mean fewer statements and commits while catching up.
pub const BATCH: usize = 10_000;

pub const SCHEDULING_CATEGORIES: [&str; 2] = [TenantPublished::CATEGORY, CallbackEvent::CATEGORY];
/// The scheduling events the callback facts use; claims (a fifth of a callback's events) are
/// filtered out by the feed instead of shipped and ignored.
pub const SCHEDULING_EVENT_TYPES: [&str; 8] = [
    TenantPublished::EVENT_TYPE,
    CallbackEvent::SCHEDULED,
    CallbackEvent::ATTEMPTED,
    CallbackEvent::RESCHEDULED,
    CallbackEvent::COMPLETED,
    CallbackEvent::LOST,
    CallbackEvent::SKIPPED,
    CallbackEvent::CANCELLED,
];
pub const CALL_LOGGING_CATEGORIES: [&str; 3] = [
    QuestionnairePublished::CATEGORY,
    SurveyAnswered::CATEGORY,
    callback_contracts::call_logging::TELEPHONY,
];
pub const CALL_LOGGING_EVENT_TYPES: [&str; 3] = [
    QuestionnairePublished::EVENT_TYPE,
    SurveyAnswered::EVENT_TYPE,
    HonestyFlagRaised::EVENT_TYPE,
];
pub const COMPLAINT_CATEGORIES: [&str; 1] = [ComplaintEvent::CATEGORY];

/// A payload that does not decode is a defect upstream; it is skipped by event id (it stays in
/// the log) rather than stopping every report.
fn decode<T: EventContract>(event: &RecordedEvent) -> Option<T> {
    skip_undecodable(event, callback_kit::events::decode(event))
}

/// Like [`decode`], for the part of an event a view reads.
fn decode_view<V: EventView>(event: &RecordedEvent) -> Option<V> {
    let view =
        callback_contracts::decode_view(&event.event_type, event.schema_version, &event.payload)
            .map_err(|e| e.to_string());
    skip_undecodable(event, view)
}

fn skip_undecodable<T, E: std::fmt::Display>(
    event: &RecordedEvent,
    decoded: Result<T, E>,
) -> Option<T> {
    match decoded {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(event_id = %event.event_id, event_type = %event.event_type, %error, "undecodable fact skipped");
            None
        }
    }
}

/// The id of an event's stream of `category` (`<category>-<uuid>`).
fn stream_uuid(event: &RecordedEvent, category: &str) -> Option<Uuid> {
    event
        .stream_id
        .strip_prefix(category)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

// ---- scheduling: tenants and callbacks ----

/// What one batch changes about one callback.
#[derive(Default)]
struct CallbackDelta {
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

async fn write_callbacks(
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
async fn copy_new_callbacks(
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
async fn merge_callbacks(
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

// ---- call-logging: questionnaires, answers, honesty flags ----

/// The numeric value of an answer: ratings and scores as they are, yes = 1 and no = 0; choices
/// and free text have none (free text is personal data and is not kept).
pub fn numeric_answer(answer: &Value) -> Option<f64> {
    match answer {
        Value::Number(n) => n.as_f64(),
        Value::Bool(yes) => Some(if *yes { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// What one batch of call-logging events adds: rows to insert (each is written once; a
/// replayed event's rows are already there).
#[derive(Default)]
pub struct CallLoggingBatch {
    items: ItemRows,
    answers: AnswerRows,
    flags: FlagRows,
}

#[derive(Default)]
struct ItemRows {
    tenant: Vec<String>,
    questionnaire: Vec<String>,
    version: Vec<i64>,
    item: Vec<String>,
    kind: Vec<String>,
}

#[derive(Default)]
struct AnswerRows {
    attempt: Vec<String>,
    item: Vec<String>,
    tenant: Vec<String>,
    callback: Vec<Uuid>,
    questionnaire: Vec<String>,
    version: Vec<i64>,
    value: Vec<Option<f64>>,
}

#[derive(Default)]
struct FlagRows {
    attempt: Vec<String>,
    kind: Vec<String>,
    tenant: Vec<String>,
    agent: Vec<String>,
    raised_at: Vec<DateTime<Utc>>,
}

pub struct CallLoggingFacts;

impl BatchProjection for CallLoggingFacts {
    type Folded = CallLoggingBatch;
    type Error = Error;

    fn name(&self) -> &str {
        "analytics.call_logging_facts"
    }

    fn fold(&self, events: &[RecordedEvent]) -> CallLoggingBatch {
        let mut batch = CallLoggingBatch::default();
        for event in events {
            match event.event_type.as_str() {
                QuestionnairePublished::EVENT_TYPE => {
                    let Some(published) = decode::<QuestionnairePublished>(event) else {
                        continue;
                    };
                    let rows = &mut batch.items;
                    for item in published.questionnaire.items {
                        rows.tenant.push(published.tenant_id.clone());
                        rows.questionnaire
                            .push(published.questionnaire.questionnaire_id.clone());
                        rows.version.push(event.stream_version);
                        rows.item.push(item.id);
                        rows.kind.push(item.kind.name().to_owned());
                    }
                }
                SurveyAnswered::EVENT_TYPE => {
                    let Some(survey) = decode::<SurveyAnswered>(event) else {
                        continue;
                    };
                    let rows = &mut batch.answers;
                    for (item, answer) in &survey.answers {
                        rows.attempt.push(survey.attempt_id.clone());
                        rows.item.push(item.clone());
                        rows.tenant.push(survey.tenant_id.clone());
                        rows.callback.push(survey.callback_id);
                        rows.questionnaire.push(survey.questionnaire_id.clone());
                        rows.version.push(survey.questionnaire_version as i64);
                        rows.value.push(numeric_answer(answer));
                    }
                }
                HonestyFlagRaised::EVENT_TYPE => {
                    let Some(flag) = decode::<HonestyFlagRaised>(event) else {
                        continue;
                    };
                    let rows = &mut batch.flags;
                    rows.raised_at
                        .push(flag.attempt_started_at.unwrap_or(event.recorded_at));
                    rows.attempt.push(flag.attempt_id);
                    rows.kind.push(flag.kind);
                    rows.tenant.push(flag.tenant_id);
                    rows.agent.push(flag.agent_id);
                }
                _ => {}
            }
        }
        batch
    }

    async fn write(&self, conn: &mut PgConnection, batch: CallLoggingBatch) -> Result<(), Error> {
        let CallLoggingBatch {
            items,
            answers,
            flags,
        } = batch;
        if !items.item.is_empty() {
            sqlx::query(
                "INSERT INTO an_questionnaire_items (tenant_id, questionnaire_id, version, item_id, kind) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(items.tenant)
            .bind(items.questionnaire)
            .bind(items.version)
            .bind(items.item)
            .bind(items.kind)
            .execute(&mut *conn)
            .await?;
        }
        if !answers.item.is_empty() {
            sqlx::query(
                "INSERT INTO an_answers (attempt_id, item_id, tenant_id, callback_id, questionnaire_id, \
                   questionnaire_version, value) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::bigint[], \
                   $7::float8[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(answers.attempt)
            .bind(answers.item)
            .bind(answers.tenant)
            .bind(answers.callback)
            .bind(answers.questionnaire)
            .bind(answers.version)
            .bind(answers.value)
            .execute(&mut *conn)
            .await?;
        }
        if !flags.kind.is_empty() {
            sqlx::query(
                "INSERT INTO an_honesty_flags (attempt_id, kind, tenant_id, agent_id, raised_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(flags.attempt)
            .bind(flags.kind)
            .bind(flags.tenant)
            .bind(flags.agent)
            .bind(flags.raised_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

// ---- complaint routing: complaints ----

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

async fn write_complaints(
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
