//! Writing attempts: `LogCallAttempt` reports that arrive together are served as one batch
//! (see `callback_kit::batch`). Each report was validated before it got here. The batch asks
//! scheduling for its callbacks in one call per tenant and refuses the attempts whose agent
//! does not hold the lease; then it reads the honesty context of the rest in one query,
//! appends every attempt's events in one statement and writes the attempt rows in one
//! statement, all in one transaction.
//!
//! Two attempts of one agent are never in the same transaction: the overlap check of the
//! second must see the first. A later one waits for the next round, in arrival order. An
//! attempt whose stream exists is a retry of one logged before: the append names it without
//! writing anything, and it is answered with what was logged.

use std::collections::{HashMap, HashSet};

use callback_calendar::{Calendar, CalendarSpec};
use callback_contracts::call_logging::{
    AttemptDisposition, CallAttemptLogged, ComplaintRaised, RaisedComplaint, SurveyAnswered,
};
use callback_contracts::scheduling::Disposition;
use callback_contracts::EventContract;
use callback_eventstore::{ExpectedVersion, Metadata, NewEvent, StreamAppend, StreamName};
use callback_kit::batch::{BatchQueue, Serve};
use callback_rules::Decider;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::ports::{LeaseClaim, LeaseVerdict};
use super::{flag_raised, project_flag, AttemptReport, CallLogging};
use crate::domain::attempt::{AttemptCommand, AttemptDecider, AttemptEvent};
use crate::domain::honesty::{self, AttemptFacts, CallRecord, Flag};

mod sealing;
mod verdicts;
use crate::error::Error;
use sealing::seal_text;
use verdicts::{lease_claim, lease_held};

/// What `LogCallAttempt` answers: logged before (a retry), the event types, the flag kinds.
pub(super) type Logged = (bool, Vec<String>, Vec<String>);

/// A validated report, waiting for its lease check and its write.
pub(super) struct PendingAttempt {
    pub report: AttemptReport,
    pub callback_id: Uuid,
    pub lease_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// The tenant's own name of the disposition; `report.disposition` holds its standard one.
    pub tenant_kind: Option<String>,
    /// The time the customer named (not convenient).
    pub named_time: Option<DateTime<Utc>>,
    /// Set when scheduling says the callback had already ended (its status): the attempt is
    /// kept on record with a `callback_ended` flag, and scheduling does not apply it.
    pub ended: Option<String>,
    /// The ids of the answered questionnaire's free-text items (sealed).
    pub free_text: Vec<String>,
    /// The vault subject its personal data is sealed for, once the lease is confirmed.
    pub sealed_for: String,
    pub stream: StreamName,
    /// The attempt's events before the honesty checks (which add their flags); made once
    /// scheduling has confirmed the lease, since a complaint carries the callback's subject.
    pub events: Vec<NewEvent>,
    pub metadata: Metadata,
    pub reply: oneshot::Sender<Result<Logged, Error>>,
}

pub(super) type AttemptQueue = BatchQueue<PendingAttempt>;

pub(super) const SERVE_ATTEMPTS: Serve<CallLogging, PendingAttempt> =
    |app, batch| Box::pin(async move { app.serve_attempts(batch).await });

/// How one attempt of a batch ended.
enum Written {
    /// Appended: its event types and flag kinds.
    New(Vec<String>, Vec<String>),
    /// Its stream existed: logged before.
    Before(Vec<String>),
}

impl CallLogging {
    async fn serve_attempts(&self, batch: Vec<PendingAttempt>) {
        let confirmed = self.confirm_leases(batch).await;
        self.write_confirmed(confirmed).await;
    }

    /// Keeps the attempts whose agent holds the callback's lease, with their events made, in
    /// arrival order. Every other one is answered here: logged before (a retry after its
    /// lease ended; a retry while the lease still holds is found by the append) or refused.
    async fn confirm_leases(&self, batch: Vec<PendingAttempt>) -> Vec<PendingAttempt> {
        // One question to scheduling per tenant, for every lease of the batch.
        let mut asked: HashMap<&str, Vec<LeaseClaim>> = HashMap::new();
        for pending in &batch {
            asked
                .entry(&pending.report.tenant_id)
                .or_default()
                .push(lease_claim(pending));
        }
        let mut verdicts: HashMap<(String, LeaseClaim), LeaseVerdict> = HashMap::new();
        let mut failed: HashMap<String, Error> = HashMap::new();
        for (tenant_id, claims) in asked {
            match self.scheduling.check_leases(tenant_id, &claims).await {
                Ok(answers) => {
                    for (claim, verdict) in claims.into_iter().zip(answers) {
                        verdicts.insert((tenant_id.to_owned(), claim), verdict);
                    }
                }
                Err(error) => {
                    failed.insert(tenant_id.to_owned(), error);
                }
            }
        }
        let mut confirmed = Vec::with_capacity(batch.len());
        for mut pending in batch {
            let tenant_id = pending.report.tenant_id.clone();
            let held = match failed.get(&tenant_id) {
                Some(error) => Err(error.again()),
                None => lease_held(&pending, verdicts.get(&(tenant_id, lease_claim(&pending))))
                    .map(|(subject_id, department, ended)| {
                        (
                            subject_id.to_owned(),
                            department.to_owned(),
                            ended.map(str::to_owned),
                        )
                    }),
            };
            let checked = match held {
                Ok((subject_id, department, ended)) => {
                    pending.ended = ended;
                    match self.sealing_key(&pending, &subject_id).await {
                        Ok((sealed_for, key)) => {
                            let events = attempt_events(
                                &pending,
                                &subject_id,
                                &department,
                                &sealed_for,
                                &key,
                            );
                            pending.sealed_for = sealed_for;
                            events
                        }
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
            match checked {
                Ok(events) => {
                    pending.events = events;
                    confirmed.push(pending);
                }
                Err(refused) => {
                    let answer = match self.logged_events(&pending.stream, &pending.report).await {
                        Ok(Some(types)) => Ok((true, types, Vec::new())),
                        Ok(None) => Err(refused),
                        Err(error) => Err(error),
                    };
                    let _ = pending.reply.send(answer);
                }
            }
        }
        confirmed
    }

    /// Writes attempts whose leases were confirmed, a round at a time.
    async fn write_confirmed(&self, batch: Vec<PendingAttempt>) {
        let mut waiting = batch;
        while !waiting.is_empty() {
            // One attempt per agent per round, in arrival order.
            let mut agents = HashSet::new();
            let (round, later): (Vec<_>, Vec<_>) = waiting
                .into_iter()
                .partition(|p| agents.insert(p.report.agent_id.clone()));
            waiting = later;
            match self.write_attempts(&round).await {
                Ok(written) => {
                    for (pending, written) in round.into_iter().zip(written) {
                        let answer = self.answer(&pending, written).await;
                        let _ = pending.reply.send(answer);
                    }
                }
                Err(error) if round.len() == 1 => {
                    if let Some(pending) = round.into_iter().next() {
                        let _ = pending.reply.send(Err(error));
                    }
                }
                // One attempt's problem is not every agent's answer: each alone.
                Err(error) => {
                    tracing::warn!(%error, attempts = round.len(), "attempt batch failed; writing each alone");
                    for pending in round {
                        let answer = match self.write_attempts(std::slice::from_ref(&pending)).await
                        {
                            Ok(mut written) => match written.pop() {
                                Some(written) => self.answer(&pending, written).await,
                                None => Err(Error::Internal("an attempt was not written".into())),
                            },
                            Err(error) => Err(error),
                        };
                        let _ = pending.reply.send(answer);
                    }
                }
            }
        }
    }

    async fn answer(&self, pending: &PendingAttempt, written: Written) -> Result<Logged, Error> {
        match written {
            Written::New(types, flags) => {
                if !flags.is_empty() {
                    tracing::warn!(attempt_id = %pending.report.attempt_id, flags = flags.len(), "honesty flags raised");
                }
                tracing::info!(events = types.len(), "call attempt logged");
                Ok((false, types, flags))
            }
            Written::Before(types) => {
                let logged = self.logged_events(&pending.stream, &pending.report).await?;
                Ok((true, logged.unwrap_or(types), Vec::new()))
            }
        }
    }

    /// One transaction for a round of attempts (at most one per agent).
    async fn write_attempts(&self, round: &[PendingAttempt]) -> Result<Vec<Written>, Error> {
        let mut tx = self.store.begin().await.map_err(Error::from)?;
        let contexts = attempt_contexts(&mut tx, round).await?;
        let mut all_events = Vec::with_capacity(round.len());
        let mut all_flags = Vec::with_capacity(round.len());
        for (pending, context) in round.iter().zip(contexts) {
            let flags = honesty_flags(pending, context);
            let mut events = pending.events.clone();
            for flag in &flags {
                let r = &pending.report;
                let raised = flag_raised(
                    &r.tenant_id,
                    &r.attempt_id,
                    &r.agent_id,
                    pending.started_at,
                    flag,
                );
                events.push(attempt_event(pending, &raised)?);
            }
            all_events.push(events);
            all_flags.push(flags);
        }
        // Retries found by the append (their streams exist) are left out.
        let commands: Vec<Vec<StreamAppend>> = round
            .iter()
            .zip(&all_events)
            .map(|(pending, events)| {
                vec![StreamAppend {
                    stream: &pending.stream,
                    expected: ExpectedVersion::NoStream,
                    events,
                }]
            })
            .collect();
        let written = self
            .store
            .append_commands_in(&mut tx, &commands)
            .await
            .map_err(Error::from)?;
        drop(commands);
        let rows: Vec<super::AttemptRow> = round
            .iter()
            .enumerate()
            .filter(|(i, _)| written[*i])
            .map(|(_, p)| super::AttemptRow {
                tenant_id: &p.report.tenant_id,
                attempt_id: &p.report.attempt_id,
                callback_id: p.callback_id,
                agent_id: &p.report.agent_id,
                disposition: &p.report.disposition,
                channel: &p.report.channel,
                started_at: p.started_at,
                ended_at: p.ended_at,
                telephony_call_id: &p.report.telephony_call_id,
                sealed_for: &p.sealed_for,
            })
            .collect();
        project_attempts(&mut tx, &rows).await?;
        for (i, (pending, flags)) in round.iter().zip(&all_flags).enumerate() {
            if !written[i] {
                continue;
            }
            let r = &pending.report;
            for flag in flags {
                project_flag(&mut tx, &r.tenant_id, &r.attempt_id, &r.agent_id, flag).await?;
            }
        }
        self.store.commit(tx).await.map_err(Error::from)?;
        Ok(all_events
            .into_iter()
            .zip(all_flags)
            .enumerate()
            .map(|(i, (events, flags))| {
                let types = events.into_iter().map(|e| e.event_type).collect();
                if !written[i] {
                    Written::Before(types)
                } else {
                    Written::New(types, flags.iter().map(|f| f.kind().to_owned()).collect())
                }
            })
            .collect())
    }
}

/// One event of `pending`'s attempt, with the attempt's metadata.
fn attempt_event(pending: &PendingAttempt, event: &impl EventContract) -> Result<NewEvent, Error> {
    callback_kit::events::new_event(event)
        .map(|e| e.with_metadata(pending.metadata.clone()))
        .map_err(Error::from)
}

/// The events of an attempt whose lease `view` confirmed, before the honesty checks.
fn attempt_events(
    pending: &PendingAttempt,
    subject_id: &str,
    department: &str,
    sealed_for: &str,
    key: &callback_vault::SubjectKey,
) -> Result<Vec<NewEvent>, Error> {
    let report = &pending.report;
    let callback_id = pending.callback_id;
    let standard = match (report.disposition.as_str(), pending.named_time) {
        ("reached", _) => Disposition::Reached,
        ("no_answer", _) => Disposition::NoAnswer,
        ("busy", _) => Disposition::Busy,
        ("voicemail", _) => Disposition::Voicemail,
        ("wrong_number", _) => Disposition::WrongNumber,
        ("not_convenient", Some(named_time)) => Disposition::NotConvenient { named_time },
        ("refused", _) => Disposition::Refused,
        ("do_not_call", _) => Disposition::DoNotCall,
        ("invalid_subject", _) => Disposition::InvalidSubject,
        (other, _) => {
            // Validation maps every accepted disposition onto a standard one first.
            return Err(Error::Internal(format!("unmapped disposition `{other}`")));
        }
    };
    let attempt = CallAttemptLogged {
        tenant_id: report.tenant_id.clone(),
        callback_id,
        attempt_id: report.attempt_id.clone(),
        agent_id: report.agent_id.clone(),
        lease_id: pending.lease_id,
        channel: report.channel.clone(),
        disposition: AttemptDisposition {
            standard,
            tenant_kind: pending.tenant_kind.clone(),
        },
        started_at: pending.started_at,
        ended_at: pending.ended_at,
        telephony_call_id: report.telephony_call_id.clone(),
        recording_ref: report.recording_ref.clone(),
        notes: seal_text(key, &report.notes),
        survey_declined: (!report.survey_declined.is_empty())
            .then(|| report.survey_declined.clone()),
        sealed_for: Some(sealed_for.to_owned()),
    };
    let mut answered = report.answers.clone();
    for id in &pending.free_text {
        if let Some(serde_json::Value::String(text)) = answered.get_mut(id) {
            *text = key.seal(text);
        }
    }
    let answers = (!report.answers.is_empty()).then(|| SurveyAnswered {
        tenant_id: report.tenant_id.clone(),
        callback_id,
        attempt_id: report.attempt_id.clone(),
        questionnaire_id: report.questionnaire_id.clone(),
        questionnaire_version: report.questionnaire_version,
        answers: answered,
    });
    let complaint = report.complaint.as_ref().map(|complaint| {
        Box::new(ComplaintRaised {
            tenant_id: report.tenant_id.clone(),
            callback_id,
            attempt_id: report.attempt_id.clone(),
            agent_id: report.agent_id.clone(),
            subject_id: subject_id.to_owned(),
            department: department.to_owned(),
            raised_at: pending.ended_at,
            complaint: RaisedComplaint {
                text: key.seal(&complaint.text),
                ..complaint.clone()
            },
        })
    });
    // A new stream: an attempt logged before is found by the append, not here.
    let command = AttemptCommand::Log {
        attempt: Box::new(attempt),
        answers,
        complaint,
        flags: Vec::new(),
    };
    let decided =
        AttemptDecider::decide(&(), None, &command).map_err(|e| Error::Internal(e.to_string()))?;
    decided
        .iter()
        .map(|event| new_attempt_event(&pending.metadata, event))
        .collect()
}

/// An attempt's event as the log stores it, with the attempt's metadata.
pub(super) fn new_attempt_event(
    metadata: &Metadata,
    event: &AttemptEvent,
) -> Result<NewEvent, Error> {
    let new = match event {
        AttemptEvent::Logged(e) => callback_kit::events::new_event(e),
        AttemptEvent::Answered(e) => callback_kit::events::new_event(e),
        AttemptEvent::ComplaintRaised(e) => callback_kit::events::new_event(e),
        AttemptEvent::DoNotCall(e) => callback_kit::events::new_event(e),
        AttemptEvent::Flagged(e) => callback_kit::events::new_event(e),
        AttemptEvent::Viewed(e) => callback_kit::events::new_event(e),
    }?;
    Ok(new.with_metadata(metadata.clone()))
}

/// What the honesty checks of one attempt need to know.
struct AttemptContext {
    /// The telephony record of the attempt's call, if it has arrived.
    record: Option<CallRecord>,
    /// The tenant's calendar as last published through scheduling's feed; `None` until known.
    calendar: Option<Calendar>,
    /// See `records_until` in the parent module.
    records_until: Option<DateTime<Utc>>,
    /// Another attempt of the same agent overlapping this one in time.
    overlapping: Option<(String, DateTime<Utc>, DateTime<Utc>)>,
}

/// The honesty context of every attempt of a round, in one query, in the round's order.
async fn attempt_contexts(
    conn: &mut sqlx::PgConnection,
    round: &[PendingAttempt],
) -> Result<Vec<AttemptContext>, Error> {
    type Row = (
        Option<String>,
        Option<i32>,
        Option<Value>,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let tenants: Vec<&str> = round.iter().map(|p| p.report.tenant_id.as_str()).collect();
    let calls: Vec<&str> = round
        .iter()
        .map(|p| p.report.telephony_call_id.as_str())
        .collect();
    let agents: Vec<&str> = round.iter().map(|p| p.report.agent_id.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = round.iter().map(|p| p.started_at).collect();
    let ends: Vec<DateTime<Utc>> = round.iter().map(|p| p.ended_at).collect();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.network_result, r.billable_seconds, \
           (SELECT calendar FROM cl_tenant_calendars c WHERE c.tenant_id = u.tenant_id), \
           (SELECT max(started_at) FROM cl_telephony f WHERE f.tenant_id = u.tenant_id), \
           o.attempt_id, o.started_at, o.ended_at \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) \
           WITH ORDINALITY AS u(tenant_id, call_id, agent_id, started_at, ended_at, n) \
         LEFT JOIN cl_telephony r ON r.tenant_id = u.tenant_id AND r.call_id = u.call_id \
           AND u.call_id <> '' \
         LEFT JOIN LATERAL (SELECT a.attempt_id, a.started_at, a.ended_at FROM cl_attempts a \
           WHERE a.tenant_id = u.tenant_id AND a.agent_id = u.agent_id \
             AND a.ended_at > u.started_at AND a.started_at < u.ended_at \
           ORDER BY a.ended_at, a.attempt_id LIMIT 1) o ON true \
         ORDER BY u.n",
    )
    .bind(&tenants)
    .bind(&calls)
    .bind(&agents)
    .bind(&starts)
    .bind(&ends)
    // Planned afresh each time (one plan per batch): a plan cached on a pooled connection while
    // `cl_attempts` was nearly empty (a new deployment) scans the whole table for every
    // attempt, until the connection is replaced. Measured in the benchmark: 27-57 ms for this
    // query in a batch of 30, against under 1 ms with the index.
    .persistent(false)
    .fetch_all(conn)
    .await
    .map_err(Error::from)?;
    if rows.len() != round.len() {
        return Err(Error::Internal(
            "the honesty context lost an attempt".into(),
        ));
    }
    // Each tenant's calendar is parsed once per round.
    let mut calendars: HashMap<&str, Option<Calendar>> = HashMap::new();
    let mut contexts = Vec::with_capacity(rows.len());
    for (pending, row) in round.iter().zip(rows) {
        let (network_result, billable, calendar, records_until, other, other_start, other_end) =
            row;
        let record = network_result
            .zip(billable)
            .map(|(network_result, billable)| CallRecord {
                call_id: pending.report.telephony_call_id.clone(),
                network_result,
                billable_seconds: i64::from(billable),
            });
        let calendar = calendars
            .entry(&pending.report.tenant_id)
            .or_insert_with(|| {
                calendar
                    .and_then(|spec| serde_json::from_value::<CalendarSpec>(spec).ok())
                    .and_then(|spec| Calendar::new(&spec).ok())
            })
            .clone();
        let overlapping = match (other, other_start, other_end) {
            (Some(id), Some(start), Some(end)) => Some((id, start, end)),
            _ => None,
        };
        contexts.push(AttemptContext {
            record,
            calendar,
            records_until,
            overlapping,
        });
    }
    Ok(contexts)
}

/// The honesty checks of one attempt against what is known of its call.
fn honesty_flags(pending: &PendingAttempt, context: AttemptContext) -> Vec<Flag> {
    let report = &pending.report;
    let record = context.record;
    let facts = AttemptFacts {
        disposition: report.disposition.clone(),
        started_at: pending.started_at,
        ended_at: pending.ended_at,
    };
    let mut flags = honesty::check_attempt(&facts, record.as_ref());
    if report.channel == "phone" {
        if let Some(calendar) = &context.calendar {
            flags.extend(honesty::outside_window(calendar, pending.started_at));
        }
        // Logged after later calls' records arrived, and no record of its own.
        let records_until = context.records_until;
        if report.disposition == "reached"
            && record.is_none()
            && honesty::record_overdue(pending.ended_at, records_until)
        {
            flags.extend(
                records_until
                    .map(|until| honesty::missing_record(&report.telephony_call_id, until)),
            );
        }
    }
    if let Some((other, start, end)) = context.overlapping {
        flags.push(honesty::overlapping(&other, start, end));
    }
    if let Some(status) = &pending.ended {
        flags.push(Flag::CallbackEnded {
            status: status.clone(),
        });
    }
    flags
}

/// Writes attempt rows in one statement.
pub(super) async fn project_attempts(
    conn: &mut sqlx::PgConnection,
    rows: &[super::AttemptRow<'_>],
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let attempt_ids: Vec<&str> = rows.iter().map(|r| r.attempt_id).collect();
    let tenant_ids: Vec<&str> = rows.iter().map(|r| r.tenant_id).collect();
    let callback_ids: Vec<Uuid> = rows.iter().map(|r| r.callback_id).collect();
    let agent_ids: Vec<&str> = rows.iter().map(|r| r.agent_id).collect();
    let dispositions: Vec<&str> = rows.iter().map(|r| r.disposition).collect();
    let starts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.started_at).collect();
    let ends: Vec<DateTime<Utc>> = rows.iter().map(|r| r.ended_at).collect();
    let calls: Vec<&str> = rows.iter().map(|r| r.telephony_call_id).collect();
    let channels: Vec<&str> = rows.iter().map(|r| r.channel).collect();
    let sealed_for: Vec<&str> = rows.iter().map(|r| r.sealed_for).collect();
    sqlx::query(
        "INSERT INTO cl_attempts (attempt_id, tenant_id, callback_id, agent_id, disposition, started_at, ended_at, \
         telephony_call_id, channel, sealed_for) \
         SELECT a, t, c, g, d, s, e, NULLIF(k, ''), h, NULLIF(f, '') FROM unnest($1::text[], $2::text[], $3::uuid[], \
           $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], $10::text[]) \
           AS u(a, t, c, g, d, s, e, k, h, f) \
         ON CONFLICT (tenant_id, attempt_id) DO NOTHING",
    )
    .bind(&attempt_ids)
    .bind(&tenant_ids)
    .bind(&callback_ids)
    .bind(&agent_ids)
    .bind(&dispositions)
    .bind(&starts)
    .bind(&ends)
    .bind(&calls)
    .bind(&channels)
    .bind(&sealed_for)
    .execute(conn)
    .await
    .map_err(Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use callback_eventstore::EventStore;
    use callback_testkit::TestDb;
    use chrono::TimeZone;
    use tonic::Code;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 9, 8, 2, minute, 0).unwrap()
    }

    /// An attempt whose lease `confirm_leases` confirmed.
    fn pending(
        attempt_id: &str,
        agent_id: &str,
        start: u32,
        end: u32,
    ) -> (PendingAttempt, oneshot::Receiver<Result<Logged, Error>>) {
        let (reply, answer) = oneshot::channel();
        // The same attempt id always names the same call (a retry repeats it).
        let callback_id = Uuid::new_v5(&Uuid::NAMESPACE_OID, attempt_id.as_bytes());
        let lease_id = Uuid::now_v7();
        let report = AttemptReport {
            attempt_id: attempt_id.into(),
            tenant_id: "hospital".into(),
            agent_id: agent_id.into(),
            callback_id: callback_id.to_string(),
            channel: "phone".into(),
            disposition: "no_answer".into(),
            started_at: Some(at(start)),
            ..AttemptReport::default()
        };
        let event = callback_kit::events::new_event(&CallAttemptLogged {
            tenant_id: "hospital".into(),
            callback_id,
            attempt_id: attempt_id.into(),
            agent_id: agent_id.into(),
            lease_id,
            channel: "phone".into(),
            disposition: AttemptDisposition {
                standard: Disposition::NoAnswer,
                tenant_kind: None,
            },
            started_at: at(start),
            ended_at: at(end),
            telephony_call_id: String::new(),
            recording_ref: String::new(),
            notes: String::new(),
            survey_declined: None,
            sealed_for: None,
        })
        .unwrap();
        let stream = crate::app::attempt_stream(&report.tenant_id, attempt_id).unwrap();
        let pending = PendingAttempt {
            report,
            callback_id,
            lease_id,
            started_at: at(start),
            ended_at: at(end),
            tenant_kind: None,
            named_time: None,
            ended: None,
            free_text: Vec::new(),
            sealed_for: String::new(),
            stream,
            events: vec![event],
            metadata: Metadata::default(),
            reply,
        };
        (pending, answer)
    }

    /// The rule itself is scheduling's (`CallbackState::check_lease`, tested there); here,
    /// each of its verdicts becomes the status the reporter gets.
    #[test]
    fn only_the_agent_holding_the_lease_may_report() {
        let (p, _) = pending("a-1", "agent-1", 0, 1);
        let held = LeaseVerdict::Held {
            subject_id: "patient-1".into(),
            department: "ward-a".into(),
            questionnaire_id: String::new(),
        };
        assert_eq!(
            lease_held(&p, Some(&held)).unwrap(),
            ("patient-1", "ward-a", None)
        );
        let code = |verdict: Option<&LeaseVerdict>| {
            tonic::Status::from(lease_held(&p, verdict).unwrap_err()).code()
        };
        assert_eq!(code(None), Code::NotFound);
        assert_eq!(code(Some(&LeaseVerdict::NotFound)), Code::NotFound);
        // Open but nobody's: refused. Ended: kept on record, flagged, not applied.
        let open = LeaseVerdict::NotClaimed {
            status: "scheduled".into(),
        };
        assert_eq!(code(Some(&open)), Code::FailedPrecondition);
        let ended = LeaseVerdict::NotClaimed {
            status: "lost".into(),
        };
        assert_eq!(
            lease_held(&p, Some(&ended)).unwrap(),
            ("", "", Some("lost"))
        );
        assert_eq!(code(Some(&LeaseVerdict::NotHeld)), Code::PermissionDenied);
    }

    /// The writer never asks scheduling (leases are confirmed before it runs).
    struct NoScheduling;

    impl crate::app::ports::SchedulingPort for NoScheduling {
        fn check_leases<'a>(
            &'a self,
            _tenant_id: &'a str,
            _leases: &'a [LeaseClaim],
        ) -> crate::app::ports::BoxFuture<'a, Result<Vec<LeaseVerdict>, Error>> {
            Box::pin(async { panic!("the writer asked scheduling") })
        }
    }

    #[tokio::test]
    async fn a_batch_is_one_transaction_per_round_with_one_attempt_per_agent() {
        let db = TestDb::new().await;
        let store = EventStore::open(db.pool.clone()).await.unwrap();
        store
            .register_categories("call-logging", crate::CATEGORIES)
            .await
            .unwrap();
        crate::migrator().run(&db.pool).await.unwrap();
        let vault = callback_vault::Vault::with_fresh_master_key(db.pool.clone())
            .await
            .unwrap();
        let app = CallLogging::new(store.clone(), vault, std::sync::Arc::new(NoScheduling));

        // Logged before: its stream exists.
        let (earlier, _) = pending("a-retried", "agent-9", 0, 1);
        app.write_confirmed(vec![earlier]).await;

        let mut answers = Vec::new();
        let mut batch = Vec::new();
        for (id, agent, start, end) in [
            ("a-1", "agent-1", 10, 14),
            ("a-2", "agent-2", 10, 12),
            ("a-3", "agent-1", 12, 16), // overlaps a-1: waits for the next round
            ("a-retried", "agent-9", 0, 1),
            ("a-4", "agent-3", 20, 21),
        ] {
            let (p, answer) = pending(id, agent, start, end);
            batch.push(p);
            answers.push((id, answer));
        }
        app.write_confirmed(batch).await;
        let mut got = std::collections::HashMap::new();
        for (id, answer) in answers {
            got.insert(id, answer.await.unwrap().unwrap());
        }
        assert!(!got["a-1"].0 && !got["a-2"].0 && !got["a-3"].0 && !got["a-4"].0);
        assert!(got["a-retried"].0, "a retry is answered as logged before");
        assert_eq!(
            got["a-3"].2,
            vec!["overlapping_calls".to_owned()],
            "the second round saw the first"
        );
        assert!(got["a-1"].2.is_empty());

        let transactions: Vec<(String, i64)> = sqlx::query_as(
            "SELECT string_agg(stream_id, ',' ORDER BY stream_id), count(*) FROM events \
             WHERE stream_category = $1 AND event_type = $2 \
             GROUP BY transaction_id ORDER BY min(position)",
        )
        .bind(CallAttemptLogged::CATEGORY)
        .bind(CallAttemptLogged::EVENT_TYPE)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            transactions,
            vec![
                ("call_attempt-hospital:a-retried".to_owned(), 1),
                (
                    "call_attempt-hospital:a-1,call_attempt-hospital:a-2,call_attempt-hospital:a-4"
                        .to_owned(),
                    3
                ),
                ("call_attempt-hospital:a-3".to_owned(), 1),
            ]
        );
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM cl_attempts")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(rows, 5);
    }
}
