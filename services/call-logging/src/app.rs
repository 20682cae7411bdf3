//! Call-logging commands: questionnaires and call attempts.

use std::collections::BTreeMap;
use std::sync::Arc;

use callback_contracts::call_logging::{
    CallAttemptLogged, CallRecordViewed, DispositionsPublished, HonestyFlagRaised,
    QuestionnairePublished, SurveyAnswered, TelephonyRecordIngested,
};
use callback_contracts::scheduling::Disposition;
use callback_contracts::EventContract;
use callback_eventstore::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamName};
use callback_kit::telemetry::event_metadata;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::domain::honesty::{self, AttemptFacts, CallRecord, Flag};
use crate::domain::{Questionnaire, QuestionnaireRules};
use ports::SchedulingPort;

const MAX_NOTES_CHARS: usize = 4000;
const MAX_CALL_SECONDS: i64 = 24 * 3600;
const DISPOSITIONS: [&str; 9] = Disposition::NAMES;
const MAX_COMPLAINT_CHARS: usize = 4000;
const CHANNELS: [&str; 6] = ["phone", "sms", "wechat", "email", "letter", "on_site"];

/// A call detail record as the telephony middleware reports it (the event's payload).
pub type TelephonyRecord = TelephonyRecordIngested;

/// A new event of call-logging's, with the tenant and the actor in its metadata.
fn new_event(event: &impl EventContract, tenant_id: &str, actor: &str) -> Result<NewEvent, Error> {
    callback_kit::events::new_event(event)
        .map(|e| e.with_metadata(event_metadata(Some(tenant_id), Some(actor))))
        .map_err(Error::from)
}

fn decode<T: EventContract>(event: &RecordedEvent) -> Result<T, Error> {
    callback_kit::events::decode(event).map_err(Error::from)
}

/// A reported attempt, as the middleware sends it (already converted from the wire).
#[derive(Clone, Debug, Default)]
pub struct AttemptReport {
    pub attempt_id: String,
    pub tenant_id: String,
    pub callback_id: String,
    pub lease_id: String,
    pub agent_id: String,
    pub channel: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: u32,
    pub telephony_call_id: String,
    pub recording_ref: String,
    pub disposition: String,
    pub named_time: Option<DateTime<Utc>>,
    pub questionnaire_id: String,
    pub questionnaire_version: u64,
    pub answers: BTreeMap<String, Value>,
    pub notes: String,
    pub complaint: Option<Complaint>,
}

/// A complaint raised during a call, as the agent reports it.
pub type Complaint = callback_contracts::call_logging::RaisedComplaint;

#[derive(Clone)]
pub struct CallLogging {
    store: EventStore,
    scheduling: Arc<dyn SchedulingPort>,
    attempts: attempts::AttemptQueue,
}

mod attempts;
pub mod ports;

use crate::error::{invalid, Error};

impl CallLogging {
    pub fn new(store: EventStore, scheduling: Arc<dyn SchedulingPort>) -> Self {
        Self {
            store,
            scheduling,
            attempts: Default::default(),
        }
    }

    /// This handle without its command queue, for the queue's own workers.
    fn without_queues(&self) -> Self {
        Self {
            attempts: Default::default(),
            ..self.clone()
        }
    }

    fn questionnaire_stream(tenant_id: &str, questionnaire_id: &str) -> Result<StreamName, Error> {
        StreamName::new(
            QuestionnairePublished::CATEGORY,
            format!("{tenant_id}:{questionnaire_id}"),
        )
        .map_err(Error::from)
    }

    #[tracing::instrument(
        name = "call_logging.publish_questionnaire",
        skip_all,
        fields(tenant_id)
    )]
    pub async fn publish_questionnaire(
        &self,
        tenant_id: &str,
        json: &str,
    ) -> Result<(String, u64), Error> {
        if tenant_id.is_empty() || tenant_id.len() > 64 {
            return Err(invalid("tenant_id", "must be 1-64 characters"));
        }
        let questionnaire: Questionnaire =
            serde_json::from_str(json).map_err(|e| invalid("questionnaire_json", e))?;
        questionnaire
            .validate()
            .map_err(|e| invalid(&format!("questionnaire_json.{}", e.field), e.reason))?;
        let published = QuestionnairePublished {
            tenant_id: tenant_id.to_owned(),
            questionnaire,
        };
        let event = new_event(&published, tenant_id, "system:call-logging")?;
        let stream =
            Self::questionnaire_stream(tenant_id, &published.questionnaire.questionnaire_id)?;
        let result = self
            .store
            .append(&stream, ExpectedVersion::Any, &[event])
            .await
            .map_err(Error::from)?;
        Ok((
            published.questionnaire.questionnaire_id,
            result.stream_version,
        ))
    }

    /// Publishes the tenant's own dispositions, each mapped onto a standard one.
    pub async fn publish_dispositions(
        &self,
        tenant_id: &str,
        mapping_json: &str,
    ) -> Result<u64, Error> {
        if tenant_id.is_empty() || tenant_id.len() > 64 {
            return Err(invalid("tenant_id", "must be 1-64 characters"));
        }
        let mapping: BTreeMap<String, String> =
            serde_json::from_str(mapping_json).map_err(|_| {
                invalid(
                    "mapping_json",
                    "must be an object of name to standard disposition",
                )
            })?;
        for (name, standard) in &mapping {
            let well_formed = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !well_formed || DISPOSITIONS.contains(&name.as_str()) {
                return Err(invalid(
                    &format!("mapping_json.{name}"),
                    "must be 1-64 of a-z, 0-9, _ and not a standard name",
                ));
            }
            if !DISPOSITIONS.contains(&standard.as_str()) {
                return Err(invalid(
                    &format!("mapping_json.{name}"),
                    format!("must map to one of {}", DISPOSITIONS.join(", ")),
                ));
            }
        }
        let stream = StreamName::new(DispositionsPublished::CATEGORY, tenant_id.to_owned())
            .map_err(Error::from)?;
        let published = DispositionsPublished {
            tenant_id: tenant_id.to_owned(),
            mapping,
        };
        let event = new_event(&published, tenant_id, "system:call-logging")?;
        let result = self
            .store
            .append(&stream, ExpectedVersion::Any, &[event])
            .await
            .map_err(Error::from)?;
        Ok(result.stream_version)
    }

    /// The tenant's latest published disposition mapping (empty when none).
    async fn dispositions(&self, tenant_id: &str) -> Result<BTreeMap<String, String>, Error> {
        let stream = StreamName::new(DispositionsPublished::CATEGORY, tenant_id.to_owned())
            .map_err(|_| invalid("tenant_id", "is not valid"))?;
        let events = self
            .store
            .read_stream(&stream, 1)
            .await
            .map_err(Error::from)?;
        match events.last() {
            None => Ok(BTreeMap::new()),
            Some(event) => Ok(decode::<DispositionsPublished>(event)?.mapping),
        }
    }

    async fn questionnaire(
        &self,
        tenant_id: &str,
        id: &str,
        version: u64,
    ) -> Result<Questionnaire, Error> {
        let events = self
            .store
            .read_stream(&Self::questionnaire_stream(tenant_id, id)?, version.max(1))
            .await
            .map_err(Error::from)?;
        let event = events
            .first()
            .filter(|e| e.stream_version as u64 == version)
            .ok_or_else(|| {
                invalid(
                    "questionnaire_version",
                    format!("questionnaire `{id}` has no version {version}"),
                )
            })?;
        let published: QuestionnairePublished = decode(event)?;
        Ok(published.questionnaire)
    }

    /// Validates and records one attempt with its honesty flags, in one transaction; returns
    /// (duplicate, event types, flag kinds).
    #[tracing::instrument(name = "call_logging.log_attempt", skip_all, fields(callback_id = %report.callback_id, disposition = %report.disposition))]
    pub async fn log_attempt(
        &self,
        report: AttemptReport,
    ) -> Result<(bool, Vec<String>, Vec<String>), Error> {
        // Input first: nothing is looked up or written for a malformed report.
        if report.attempt_id.is_empty() || report.attempt_id.len() > 128 {
            return Err(invalid("attempt_id", "must be 1-128 characters"));
        }
        if report.agent_id.is_empty() {
            return Err(invalid("agent_id", "must not be empty"));
        }
        let callback_id: uuid::Uuid = report
            .callback_id
            .parse()
            .map_err(|_| invalid("callback_id", "is not a UUID"))?;
        let lease_id: uuid::Uuid = report
            .lease_id
            .parse()
            .map_err(|_| invalid("lease_id", "is not a UUID"))?;
        if !CHANNELS.contains(&report.channel.as_str()) {
            return Err(invalid(
                "channel",
                format!("must be one of {}", CHANNELS.join(", ")),
            ));
        }
        // A tenant's own disposition is recorded as said and acted on by its standard meaning.
        let (standard, tenant_kind) = if DISPOSITIONS.contains(&report.disposition.as_str()) {
            (report.disposition.clone(), None)
        } else {
            match self
                .dispositions(&report.tenant_id)
                .await?
                .get(&report.disposition)
            {
                Some(standard) => (standard.clone(), Some(report.disposition.clone())),
                None => {
                    return Err(invalid(
                        "disposition.kind",
                        format!(
                            "unknown; use one of {} or one the tenant published",
                            DISPOSITIONS.join(", ")
                        ),
                    ))
                }
            }
        };
        let report = AttemptReport {
            disposition: standard,
            ..report
        };
        let started_at = report
            .started_at
            .ok_or_else(|| invalid("started_at", "is required"))?;
        let ended_at = match (report.ended_at, report.duration_seconds) {
            (Some(end), _) => end,
            (None, seconds) => started_at + Duration::seconds(i64::from(seconds)),
        };
        if ended_at < started_at {
            return Err(invalid("ended_at", "is before started_at"));
        }
        if (ended_at - started_at).num_seconds() > MAX_CALL_SECONDS {
            return Err(invalid(
                "duration_seconds",
                "a call cannot last longer than a day",
            ));
        }
        if report.notes.chars().count() > MAX_NOTES_CHARS {
            return Err(invalid(
                "notes",
                format!("at most {MAX_NOTES_CHARS} characters"),
            ));
        }
        let named_time = match (report.disposition.as_str(), report.named_time) {
            ("not_convenient", None) => {
                return Err(invalid(
                    "disposition.named_time",
                    "is required for not_convenient",
                ))
            }
            ("not_convenient", Some(t)) if t <= ended_at => {
                return Err(invalid("disposition.named_time", "must be after the call"))
            }
            (_, t) => t,
        };
        if let Some(complaint) = &report.complaint {
            if complaint.text.trim().is_empty() {
                return Err(invalid("complaint.text", "must not be empty"));
            }
            if complaint.text.chars().count() > MAX_COMPLAINT_CHARS {
                return Err(invalid(
                    "complaint.text",
                    format!("is longer than {MAX_COMPLAINT_CHARS} characters"),
                ));
            }
        }
        if !report.answers.is_empty() {
            if report.questionnaire_id.is_empty() {
                return Err(invalid("questionnaire_id", "is required with answers"));
            }
            let questionnaire = self
                .questionnaire(
                    &report.tenant_id,
                    &report.questionnaire_id,
                    report.questionnaire_version,
                )
                .await?;
            questionnaire
                .check_answers(&report.answers)
                .map_err(|e| invalid(&e.field, e.reason))?;
        }

        let stream = StreamName::new(CallAttemptLogged::CATEGORY, report.attempt_id.clone())
            .map_err(Error::from)?;
        let metadata = event_metadata(
            Some(&report.tenant_id),
            Some(&format!("agent:{}", report.agent_id)),
        );
        // The lease is checked, and the attempt written, together with other attempts that
        // arrive at the same time: one question to scheduling, one transaction.
        self.attempts
            .ask(
                |reply| attempts::PendingAttempt {
                    report,
                    callback_id,
                    lease_id,
                    started_at,
                    ended_at,
                    tenant_kind,
                    named_time,
                    stream,
                    events: Vec::new(),
                    metadata,
                    reply,
                },
                self.store.pool(),
                || self.without_queues(),
                attempts::SERVE_ATTEMPTS,
            )
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?
    }

    /// The event types of an attempt already logged, if it was.
    async fn logged_events(&self, stream: &StreamName) -> Result<Option<Vec<String>>, Error> {
        let existing = self
            .store
            .read_stream(stream, 1)
            .await
            .map_err(Error::from)?;
        Ok((!existing.is_empty()).then(|| existing.into_iter().map(|e| e.event_type).collect()))
    }

    /// Records a call detail record; matched to a logged attempt, it may raise flags there.
    #[tracing::instrument(name = "call_logging.ingest_telephony", skip_all, fields(tenant_id = %record.tenant_id))]
    pub async fn ingest_telephony(
        &self,
        record: TelephonyRecord,
    ) -> Result<(bool, Vec<String>), Error> {
        if record.tenant_id.is_empty() || record.tenant_id.len() > 64 {
            return Err(invalid("tenant_id", "must be 1-64 characters"));
        }
        if record.call_id.is_empty() || record.call_id.len() > 128 {
            return Err(invalid("call_id", "must be 1-128 characters"));
        }
        if !["ANSWER", "BUSY", "NOANSWER", "FAILED"].contains(&record.network_result.as_str()) {
            return Err(invalid(
                "network_result",
                "must be ANSWER, BUSY, NOANSWER or FAILED",
            ));
        }
        if record.ended_at < record.started_at {
            return Err(invalid("ended_at", "is before started_at"));
        }
        if (record.ended_at - record.started_at).num_seconds() > MAX_CALL_SECONDS {
            return Err(invalid("ended_at", "a call cannot last longer than a day"));
        }
        let digits = record
            .number_dialed
            .chars()
            .filter(char::is_ascii_digit)
            .count();
        if !(3..=20).contains(&digits) {
            return Err(invalid("number_dialed", "is not a phone number"));
        }
        let stream = StreamName::new(
            TelephonyRecord::CATEGORY,
            format!("{}:{}", record.tenant_id, record.call_id),
        )
        .map_err(Error::from)?;
        let event = new_event(&record, &record.tenant_id, "system:telephony")?;
        let mut tx = self.store.begin().await.map_err(Error::from)?;
        match self
            .store
            .append_in(&mut tx, &stream, ExpectedVersion::NoStream, &[event])
            .await
        {
            Ok(_) => {}
            Err(callback_eventstore::Error::VersionConflict { .. }) => {
                return Ok((true, Vec::new()))
            }
            Err(e) => return Err(e.into()),
        }
        let frontier = records_until(&mut tx, &record.tenant_id).await?;
        project_telephony(&mut tx, &record).await?;
        let mut raised = Vec::new();
        if frontier.is_none_or(|until| record.started_at > until) {
            raised.extend(
                self.flag_unmatched(&mut tx, &record.tenant_id, frontier, record.started_at)
                    .await?,
            );
        }
        let attempt: Option<MatchedAttempt> = sqlx::query_as(
            "SELECT attempt_id, agent_id, disposition, started_at, ended_at FROM cl_attempts \
             WHERE tenant_id = $1 AND telephony_call_id = $2 LIMIT 1",
        )
        .bind(&record.tenant_id)
        .bind(&record.call_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::from)?;
        if let Some(MatchedAttempt {
            attempt_id,
            agent_id,
            disposition,
            started_at,
            ended_at,
        }) = attempt
        {
            let facts = AttemptFacts {
                disposition,
                started_at,
                ended_at,
            };
            let call = CallRecord {
                call_id: record.call_id.clone(),
                network_result: record.network_result.clone(),
                billable_seconds: i64::from(record.billable_seconds),
            };
            for flag in honesty::check_attempt(&facts, Some(&call)) {
                let already: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM cl_flags WHERE attempt_id = $1 AND kind = $2)",
                )
                .bind(&attempt_id)
                .bind(&flag.kind)
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::from)?;
                if already {
                    continue;
                }
                let attempt_stream =
                    StreamName::new(CallAttemptLogged::CATEGORY, attempt_id.clone())
                        .map_err(Error::from)?;
                let flag_event = flag_raised(
                    &record.tenant_id,
                    &attempt_id,
                    &agent_id,
                    facts.started_at,
                    &flag,
                );
                let event = new_event(&flag_event, &record.tenant_id, "system:telephony")?;
                self.store
                    .append_in(&mut tx, &attempt_stream, ExpectedVersion::Any, &[event])
                    .await
                    .map_err(Error::from)?;
                project_flag(&mut tx, &record.tenant_id, &attempt_id, &agent_id, &flag).await?;
                raised.push(flag.kind);
            }
        }
        self.store.commit(tx).await.map_err(Error::from)?;
        Ok((false, raised))
    }

    /// The records frontier moved from `from` to `until`: "reached" phone calls that ended in
    /// between (less the tolerance) and still have no record are flagged `no_telephony_record`.
    async fn flag_unmatched(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant_id: &str,
        from: Option<DateTime<Utc>>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        let tolerance = chrono::Duration::minutes(honesty::TELEPHONY_TOLERANCE_MINUTES);
        let unmatched: Vec<(String, String, DateTime<Utc>, Option<String>)> = sqlx::query_as(
            "SELECT a.attempt_id, a.agent_id, a.started_at, a.telephony_call_id FROM cl_attempts a \
             WHERE a.tenant_id = $1 AND a.disposition = 'reached' AND a.channel = 'phone' \
             AND a.ended_at < $2 AND ($3::timestamptz IS NULL OR a.ended_at >= $3) \
             AND NOT EXISTS (SELECT 1 FROM cl_telephony t WHERE t.tenant_id = a.tenant_id AND t.call_id = a.telephony_call_id) \
             AND NOT EXISTS (SELECT 1 FROM cl_flags f WHERE f.attempt_id = a.attempt_id AND f.kind = 'no_telephony_record') \
             ORDER BY a.ended_at, a.attempt_id",
        )
        .bind(tenant_id)
        .bind(until - tolerance)
        .bind(from.map(|f| f - tolerance))
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::from)?;
        let mut raised = Vec::new();
        for (attempt_id, agent_id, started_at, call_id) in unmatched {
            let flag = honesty::missing_record(call_id.as_deref().unwrap_or(""), until);
            let stream = StreamName::new(CallAttemptLogged::CATEGORY, attempt_id.clone())
                .map_err(Error::from)?;
            let flag_event = flag_raised(tenant_id, &attempt_id, &agent_id, started_at, &flag);
            let event = new_event(&flag_event, tenant_id, "system:telephony")?;
            self.store
                .append_in(tx, &stream, ExpectedVersion::Any, &[event])
                .await
                .map_err(Error::from)?;
            project_flag(tx, tenant_id, &attempt_id, &agent_id, &flag).await?;
            raised.push(flag.kind);
        }
        Ok(raised)
    }

    /// One call record for `reader`. Phone numbers are masked unless `full_view` is asked for
    /// with a reason; a full view is recorded as a `CallRecordViewed` event before it is given.
    #[tracing::instrument(name = "call_logging.get_call_record", skip_all, fields(attempt_id = %attempt_id, full_view))]
    pub async fn get_call_record(
        &self,
        tenant_id: &str,
        attempt_id: &str,
        reader: &str,
        full_view: bool,
        reason: &str,
    ) -> Result<CallRecordView, Error> {
        if reader.trim().is_empty() {
            return Err(invalid("reader", "must not be empty"));
        }
        if full_view && (reason.trim().is_empty() || reason.chars().count() > 500) {
            return Err(invalid(
                "reason",
                "a full view needs a reason of 1-500 characters",
            ));
        }
        let stream = StreamName::new(CallAttemptLogged::CATEGORY, attempt_id.to_owned())
            .map_err(|_| invalid("attempt_id", "is not valid"))?;
        let events = self
            .store
            .read_stream(&stream, 1)
            .await
            .map_err(Error::from)?;
        let not_found = || Error::NotFound(format!("call record `{attempt_id}` not found"));
        let first = events.first().ok_or_else(not_found)?;
        let logged: CallAttemptLogged = decode(first)?;
        if logged.tenant_id != tenant_id {
            return Err(not_found());
        }
        let mut view = CallRecordView {
            attempt_id: attempt_id.to_owned(),
            callback_id: logged.callback_id.to_string(),
            agent_id: logged.agent_id,
            disposition: logged.disposition.standard.name().to_owned(),
            started_at: Some(logged.started_at),
            ended_at: Some(logged.ended_at),
            notes: logged.notes,
            ..CallRecordView::default()
        };
        for event in &events[1..] {
            match event.event_type.as_str() {
                SurveyAnswered::EVENT_TYPE => {
                    let survey: SurveyAnswered = decode(event)?;
                    view.answers_json = serde_json::to_string(&survey.answers)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                }
                HonestyFlagRaised::EVENT_TYPE => {
                    view.flags.push(decode::<HonestyFlagRaised>(event)?.kind);
                }
                _ => {}
            }
        }
        let call_id = logged.telephony_call_id;
        if !call_id.is_empty() {
            let cdr = StreamName::new(TelephonyRecord::CATEGORY, format!("{tenant_id}:{call_id}"))
                .map_err(Error::from)?;
            if let Some(event) = self
                .store
                .read_stream(&cdr, 1)
                .await
                .map_err(Error::from)?
                .first()
            {
                let record: TelephonyRecord = decode(event)?;
                view.network_result = record.network_result;
                view.number_dialed = record.number_dialed;
            }
        }
        if full_view {
            let viewed = CallRecordViewed {
                tenant_id: tenant_id.to_owned(),
                attempt_id: attempt_id.to_owned(),
                reader: reader.to_owned(),
                reason: reason.to_owned(),
                at: Utc::now(),
            };
            let viewed = new_event(&viewed, tenant_id, reader)?;
            self.store
                .append(&stream, ExpectedVersion::Any, &[viewed])
                .await
                .map_err(Error::from)?;
            tracing::info!("full view of a call record recorded");
        } else {
            view.number_dialed = crate::domain::privacy::mask_phone(&view.number_dialed);
        }
        Ok(view)
    }

    /// Clears call-logging's read models and rebuilds them from the log, in one transaction,
    /// with the same row-writing functions the commands use. Run with the service stopped.
    pub async fn rebuild_projections(&self) -> Result<u64, Error> {
        let mut tx = self.store.begin().await.map_err(Error::from)?;
        sqlx::query("TRUNCATE cl_attempts, cl_telephony, cl_flags")
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
        let mut replay = self.store.replay(callback_eventstore::Filter::categories([
            CallAttemptLogged::CATEGORY,
            TelephonyRecord::CATEGORY,
        ]));
        let mut applied = 0;
        while let Some(events) = replay.next_page().await? {
            for event in &events {
                applied += 1;
                match event.event_type.as_str() {
                    CallAttemptLogged::EVENT_TYPE => {
                        let logged: CallAttemptLogged = decode(event)?;
                        let attempt = AttemptRow {
                            tenant_id: &logged.tenant_id,
                            attempt_id: &logged.attempt_id,
                            callback_id: logged.callback_id,
                            agent_id: &logged.agent_id,
                            disposition: logged.disposition.standard.name(),
                            channel: &logged.channel,
                            started_at: logged.started_at,
                            ended_at: logged.ended_at,
                            telephony_call_id: &logged.telephony_call_id,
                        };
                        project_attempt(&mut tx, &attempt).await?;
                    }
                    HonestyFlagRaised::EVENT_TYPE => {
                        let raised: HonestyFlagRaised = decode(event)?;
                        let flag = Flag {
                            kind: raised.kind,
                            evidence: raised.evidence,
                        };
                        project_flag(
                            &mut tx,
                            &raised.tenant_id,
                            &raised.attempt_id,
                            &raised.agent_id,
                            &flag,
                        )
                        .await?;
                    }
                    TelephonyRecord::EVENT_TYPE => {
                        let record: TelephonyRecord = decode(event)?;
                        project_telephony(&mut tx, &record).await?;
                    }
                    _ => {}
                }
            }
        }
        tx.commit().await.map_err(Error::from)?;
        Ok(applied)
    }
}

/// A call record as a reader sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallRecordView {
    pub attempt_id: String,
    pub callback_id: String,
    pub agent_id: String,
    pub disposition: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub number_dialed: String,
    pub network_result: String,
    pub notes: String,
    pub answers_json: String,
    pub flags: Vec<String>,
}

/// A logged attempt matched to a telephony record by call id.
#[derive(sqlx::FromRow)]
struct MatchedAttempt {
    attempt_id: String,
    agent_id: String,
    disposition: String,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
}

/// A flag's payload; `attempt_started_at` dates it in business time (reports count flags by
/// when the call was made, also when the evidence arrived later).
fn flag_raised(
    tenant_id: &str,
    attempt_id: &str,
    agent_id: &str,
    attempt_started_at: DateTime<Utc>,
    flag: &Flag,
) -> HonestyFlagRaised {
    HonestyFlagRaised {
        tenant_id: tenant_id.to_owned(),
        attempt_id: attempt_id.to_owned(),
        agent_id: agent_id.to_owned(),
        attempt_started_at: Some(attempt_started_at),
        kind: flag.kind.clone(),
        evidence: flag.evidence.clone(),
    }
}

/// One row of `cl_attempts`.
struct AttemptRow<'a> {
    tenant_id: &'a str,
    attempt_id: &'a str,
    callback_id: uuid::Uuid,
    agent_id: &'a str,
    disposition: &'a str,
    channel: &'a str,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    telephony_call_id: &'a str,
}

/// The latest start among the tenant's telephony records: calls that ended well before it
/// should have their records by now.
async fn records_until(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
) -> Result<Option<DateTime<Utc>>, Error> {
    sqlx::query_scalar("SELECT max(started_at) FROM cl_telephony WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(conn)
        .await
        .map_err(Error::from)
}

async fn project_attempt(conn: &mut sqlx::PgConnection, row: &AttemptRow<'_>) -> Result<(), Error> {
    attempts::project_attempts(conn, std::slice::from_ref(row)).await
}

async fn project_flag(
    conn: &mut sqlx::PgConnection,
    tenant_id: &str,
    attempt_id: &str,
    agent_id: &str,
    flag: &Flag,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cl_flags (attempt_id, kind, tenant_id, agent_id, evidence) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (attempt_id, kind) DO NOTHING",
    )
    .bind(attempt_id)
    .bind(&flag.kind)
    .bind(tenant_id)
    .bind(agent_id)
    .bind(&flag.evidence)
    .execute(conn)
    .await
    .map_err(Error::from)?;
    Ok(())
}

async fn project_telephony(
    conn: &mut sqlx::PgConnection,
    record: &TelephonyRecord,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO cl_telephony (tenant_id, call_id, network_result, started_at, answered_at, ended_at, billable_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, call_id) DO NOTHING",
    )
    .bind(&record.tenant_id)
    .bind(&record.call_id)
    .bind(&record.network_result)
    .bind(record.started_at)
    .bind(record.answered_at)
    .bind(record.ended_at)
    .bind(record.billable_seconds as i32)
    .execute(conn)
    .await
    .map_err(Error::from)?;
    Ok(())
}
