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
use callback_contracts::call_logging::ItemKind;
use ports::SchedulingPort;

pub(crate) use crate::domain::attempt::flag_raised;

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
    /// Why a reached call has no survey, when its callback has a questionnaire.
    pub survey_declined: String,
}

/// A complaint raised during a call, as the agent reports it.
pub type Complaint = callback_contracts::call_logging::RaisedComplaint;

#[derive(Clone)]
pub struct CallLogging {
    store: EventStore,
    /// The keys notes, free-text answers, complaint texts and dialled numbers are sealed with.
    vault: callback_vault::Vault,
    scheduling: Arc<dyn SchedulingPort>,
    attempts: attempts::AttemptQueue,
}

mod attempts;
pub mod ports;
mod questionnaires;
mod read_model;
mod records;
mod telephony;

use read_model::*;
pub use records::CallRecordView;

use crate::error::{invalid, Error};

/// The stream of one attempt: attempt ids are the middleware's idempotency keys, chosen per
/// tenant, so the stream is named by both.
pub(crate) fn attempt_stream(tenant_id: &str, attempt_id: &str) -> Result<StreamName, Error> {
    StreamName::new(
        CallAttemptLogged::CATEGORY,
        format!("{tenant_id}:{attempt_id}"),
    )
    .map_err(|_| invalid("attempt_id", "is not valid"))
}

impl CallLogging {
    pub fn new(
        store: EventStore,
        vault: callback_vault::Vault,
        scheduling: Arc<dyn SchedulingPort>,
    ) -> Self {
        Self {
            store,
            vault,
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

    /// Validates and records one attempt with its honesty flags, in one transaction; returns
    /// (duplicate, event types, flag kinds).
    #[tracing::instrument(name = "call_logging.log_attempt", skip_all, fields(callback_id = %report.callback_id, disposition = %report.disposition))]
    pub async fn log_attempt(
        &self,
        report: AttemptReport,
    ) -> Result<(bool, Vec<String>, Vec<String>), Error> {
        // Input first, identifiers first: nothing is looked up or written for a malformed
        // report.
        if let Some(problem) = callback_rules::ids::id_problem(&report.tenant_id) {
            return Err(invalid("tenant_id", problem));
        }
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
        for (field, value) in [
            ("recording_ref", &report.recording_ref),
            ("telephony_call_id", &report.telephony_call_id),
        ] {
            if value.len() > 500 {
                return Err(invalid(
                    field,
                    format!("is {} bytes, over the limit of 500", value.len()),
                ));
            }
        }
        if report.survey_declined.chars().count() > 200 {
            return Err(invalid("survey_declined", "is longer than 200 characters"));
        }
        if !report.survey_declined.is_empty() && !report.answers.is_empty() {
            return Err(invalid(
                "survey_declined",
                "give answers or the reason there are none, not both",
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
        // Free-text answers are personal data, sealed with the notes.
        let mut free_text = Vec::new();
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
            free_text = questionnaire
                .items
                .iter()
                .filter(|item| matches!(item.kind, ItemKind::FreeText { .. }))
                .map(|item| item.id.clone())
                .collect();
        }

        let stream = attempt_stream(&report.tenant_id, &report.attempt_id)?;
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
                    ended: None,
                    free_text,
                    sealed_for: String::new(),
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

    /// The event types of an attempt already logged under the report's attempt id, if it
    /// was: a retry. The same id with another call (another callback, agent, disposition or
    /// start) is a conflict, not a retry, and is refused naming the key.
    async fn logged_events(
        &self,
        stream: &StreamName,
        report: &AttemptReport,
    ) -> Result<Option<Vec<String>>, Error> {
        let existing = self
            .store
            .read_stream(stream, 1)
            .await
            .map_err(Error::from)?;
        let Some(first) = existing.first() else {
            return Ok(None);
        };
        let logged: CallAttemptLogged = decode(first)?;
        // Times are not compared: a middleware's retry may recompute them a little.
        let same_call = logged.callback_id.to_string() == report.callback_id
            && logged.agent_id == report.agent_id
            && logged.disposition.standard.name() == report.disposition;
        if !same_call {
            return Err(Error::Conflict {
                field: "attempt_id".into(),
                reason: "was already used for another call (another callback, agent or \
                         disposition); a retry must repeat the call as first reported"
                    .into(),
            });
        }
        Ok(Some(existing.into_iter().map(|e| e.event_type).collect()))
    }
}
