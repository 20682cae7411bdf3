//! Call-logging commands: questionnaires and call attempts.

use std::collections::BTreeMap;

use callback_eventstore::{EventStore, ExpectedVersion, NewEvent, StreamName};
use callback_kit::grpc::TracePropagation;
use callback_kit::status;
use callback_kit::telemetry::event_metadata;
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::GetCallbackRequest;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::domain::Questionnaire;

const MAX_NOTES_CHARS: usize = 4000;
const MAX_CALL_SECONDS: i64 = 24 * 3600;
const DISPOSITIONS: [&str; 9] = [
    "reached",
    "no_answer",
    "busy",
    "voicemail",
    "wrong_number",
    "not_convenient",
    "refused",
    "do_not_call",
    "invalid_subject",
];
const CHANNELS: [&str; 6] = ["phone", "sms", "wechat", "email", "letter", "on_site"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionnairePublished {
    pub tenant_id: String,
    pub questionnaire: Questionnaire,
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Complaint {
    pub text: String,
    pub category: String,
    pub severity_hint: String,
    pub reply_by: Option<DateTime<Utc>>,
}

#[derive(Clone)]
pub struct CallLogging {
    store: EventStore,
    scheduling: SchedulingClient<InterceptedService<Channel, TracePropagation>>,
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    status::invalid_argument(field, reason)
}

impl CallLogging {
    pub fn new(store: EventStore, scheduling: Channel) -> Self {
        Self {
            store,
            scheduling: SchedulingClient::with_interceptor(scheduling, TracePropagation),
        }
    }

    fn questionnaire_stream(tenant_id: &str, questionnaire_id: &str) -> Result<StreamName, Status> {
        StreamName::new("questionnaire", format!("{tenant_id}:{questionnaire_id}"))
            .map_err(status::from_store_error)
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
    ) -> Result<(String, u64), Status> {
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
        let event = NewEvent::new("QuestionnairePublished", &published)
            .map_err(status::from_store_error)?
            .with_metadata(event_metadata(Some(tenant_id), Some("system:call-logging")));
        let stream =
            Self::questionnaire_stream(tenant_id, &published.questionnaire.questionnaire_id)?;
        let result = self
            .store
            .append(&stream, ExpectedVersion::Any, &[event])
            .await
            .map_err(status::from_store_error)?;
        Ok((
            published.questionnaire.questionnaire_id,
            result.stream_version,
        ))
    }

    async fn questionnaire(
        &self,
        tenant_id: &str,
        id: &str,
        version: u64,
    ) -> Result<Questionnaire, Status> {
        let events = self
            .store
            .read_stream(&Self::questionnaire_stream(tenant_id, id)?, version.max(1))
            .await
            .map_err(status::from_store_error)?;
        let event = events
            .first()
            .filter(|e| e.stream_version as u64 == version)
            .ok_or_else(|| {
                invalid(
                    "questionnaire_version",
                    format!("questionnaire `{id}` has no version {version}"),
                )
            })?;
        let published: QuestionnairePublished = event.decode().map_err(status::from_store_error)?;
        Ok(published.questionnaire)
    }

    /// Validates and records one attempt; returns (duplicate, event types).
    #[tracing::instrument(name = "call_logging.log_attempt", skip_all, fields(callback_id = %report.callback_id, disposition = %report.disposition))]
    pub async fn log_attempt(&self, report: AttemptReport) -> Result<(bool, Vec<String>), Status> {
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
        if !DISPOSITIONS.contains(&report.disposition.as_str()) {
            return Err(invalid(
                "disposition.kind",
                format!("must be one of {}", DISPOSITIONS.join(", ")),
            ));
        }
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

        let stream = StreamName::new("call_attempt", report.attempt_id.clone())
            .map_err(status::from_store_error)?;
        let existing = self
            .store
            .read_stream(&stream, 1)
            .await
            .map_err(status::from_store_error)?;
        if !existing.is_empty() {
            return Ok((
                true,
                existing.iter().map(|e| e.event_type.clone()).collect(),
            ));
        }

        // The lease, asked of the scheduling service itself (fresh, not a lagging copy).
        let view = self
            .scheduling
            .clone()
            .get_callback(GetCallbackRequest {
                tenant_id: report.tenant_id.clone(),
                callback_id: report.callback_id.clone(),
                as_of: None,
            })
            .await
            .map_err(|s| match s.code() {
                Code::NotFound | Code::InvalidArgument => s,
                _ => Status::unavailable(format!(
                    "scheduling could not confirm the lease: {}",
                    s.message()
                )),
            })?
            .into_inner()
            .callback
            .ok_or_else(|| Status::internal("scheduling returned no callback"))?;
        if view.status != "claimed" {
            return Err(Status::failed_precondition(format!(
                "the callback is {}, not claimed",
                view.status
            )));
        }
        if view.claimed_by != report.agent_id || view.lease_id != lease_id.to_string() {
            return Err(Status::permission_denied(
                "agent_id: this agent does not hold the callback's lease",
            ));
        }

        let mut disposition = json!({ "kind": report.disposition });
        if let Some(t) = named_time {
            disposition["named_time"] = json!(t);
        }
        let metadata = event_metadata(
            Some(&report.tenant_id),
            Some(&format!("agent:{}", report.agent_id)),
        );
        let new = |event_type: &str, payload: Value| {
            NewEvent::new(event_type, &payload)
                .map(|e| e.with_metadata(metadata.clone()))
                .map_err(status::from_store_error)
        };
        let mut events = vec![new(
            "CallAttemptLogged",
            json!({
                "tenant_id": report.tenant_id, "callback_id": callback_id, "attempt_id": report.attempt_id,
                "agent_id": report.agent_id, "lease_id": lease_id, "channel": report.channel,
                "disposition": disposition, "started_at": started_at, "ended_at": ended_at,
                "telephony_call_id": report.telephony_call_id, "recording_ref": report.recording_ref,
                "notes": report.notes,
            }),
        )?];
        if !report.answers.is_empty() {
            events.push(new(
                "SurveyAnswered",
                json!({
                    "tenant_id": report.tenant_id, "callback_id": callback_id, "attempt_id": report.attempt_id,
                    "questionnaire_id": report.questionnaire_id, "questionnaire_version": report.questionnaire_version,
                    "answers": report.answers,
                }),
            )?);
        }
        if let Some(complaint) = &report.complaint {
            events.push(new(
                "ComplaintRaised",
                json!({
                    "tenant_id": report.tenant_id, "callback_id": callback_id, "attempt_id": report.attempt_id,
                    "complaint": complaint,
                }),
            )?);
        }
        if report.disposition == "do_not_call" {
            events.push(new(
                "DoNotCallRequested",
                json!({ "tenant_id": report.tenant_id, "callback_id": callback_id, "attempt_id": report.attempt_id }),
            )?);
        }
        let types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
        match self
            .store
            .append(&stream, ExpectedVersion::NoStream, &events)
            .await
        {
            Ok(_) => {}
            // A concurrent retry of the same attempt won the race.
            Err(callback_eventstore::Error::VersionConflict { .. }) => return Ok((true, types)),
            Err(e) => return Err(status::from_store_error(e)),
        }
        tracing::info!(events = types.len(), "call attempt logged");
        Ok((false, types))
    }
}
