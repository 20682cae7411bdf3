//! The `callback.v1.CallLogging` API: wire types to domain types and back.

use callback_kit::security::{authorized, authorized_caller};
use callback_kit::wire;
use callback_proto::v1::call_logging_server::{CallLogging as CallLoggingApi, CallLoggingServer};
use callback_proto::v1::{
    GetCallRecordRequest, GetCallRecordResponse, IngestTelephonyRecordRequest,
    IngestTelephonyRecordResponse, PublishDispositionsRequest, PublishDispositionsResponse,
};
use callback_proto::v1::{
    LogCallAttemptRequest, LogCallAttemptResponse, PublishQuestionnaireRequest,
    PublishQuestionnaireResponse,
};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use crate::app::{AttemptReport, CallLogging, Complaint, TelephonyRecord};

pub fn service(app: CallLogging) -> CallLoggingServer<Api> {
    CallLoggingServer::new(Api { app })
}

pub struct Api {
    app: CallLogging,
}

#[tonic::async_trait]
impl CallLoggingApi for Api {
    async fn publish_questionnaire(
        &self,
        request: Request<PublishQuestionnaireRequest>,
    ) -> Result<Response<PublishQuestionnaireResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let (questionnaire_id, version) = self
            .app
            .publish_questionnaire(&r.tenant_id, &r.questionnaire_json)
            .await?;
        Ok(Response::new(PublishQuestionnaireResponse {
            questionnaire_id,
            version,
        }))
    }

    async fn log_call_attempt(
        &self,
        request: Request<LogCallAttemptRequest>,
    ) -> Result<Response<LogCallAttemptResponse>, Status> {
        let (caller, r) = authorized_caller(request, |r| &r.tenant_id)?;
        caller.check_agent(&r.tenant_id, &r.agent_id)?;
        let disposition = r
            .disposition
            .ok_or_else(|| callback_kit::status::invalid_argument("disposition", "is required"))?;
        let answers = if r.answers_json.trim().is_empty() {
            Default::default()
        } else {
            serde_json::from_str(&r.answers_json).map_err(|_| {
                callback_kit::status::invalid_argument(
                    "answers_json",
                    "must be a JSON object of item id to answer",
                )
            })?
        };
        let complaint = match r.complaint {
            None => None,
            Some(c) => Some(Complaint {
                text: c.text,
                category: c.category,
                topic: c.topic,
                severity_hint: c.severity_hint,
                reply_by: wire::optional_instant("complaint.reply_by", c.reply_by.as_ref())?,
            }),
        };
        let report = AttemptReport {
            attempt_id: r.attempt_id,
            tenant_id: r.tenant_id,
            callback_id: r.callback_id,
            lease_id: r.lease_id,
            agent_id: r.agent_id,
            channel: r.channel,
            started_at: wire::optional_instant("started_at", r.started_at.as_ref())?,
            ended_at: wire::optional_instant("ended_at", r.ended_at.as_ref())?,
            duration_seconds: r.duration_seconds,
            telephony_call_id: r.telephony_call_id,
            recording_ref: r.recording_ref,
            disposition: disposition.kind,
            named_time: wire::optional_instant(
                "disposition.named_time",
                disposition.named_time.as_ref(),
            )?,
            questionnaire_id: r.questionnaire_id,
            questionnaire_version: r.questionnaire_version,
            answers,
            notes: r.notes,
            complaint,
            survey_declined: r.survey_declined,
        };
        let (duplicate, event_types, flags_raised) = self.app.log_attempt(report).await?;
        Ok(Response::new(LogCallAttemptResponse {
            duplicate,
            event_types,
            flags_raised,
        }))
    }

    async fn ingest_telephony_record(
        &self,
        request: Request<IngestTelephonyRecordRequest>,
    ) -> Result<Response<IngestTelephonyRecordResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let record = TelephonyRecord {
            tenant_id: r.tenant_id,
            call_id: r.call_id,
            number_dialed: r.number_dialed,
            number_key: None,
            started_at: wire::required_instant("started_at", r.started_at.as_ref())?,
            answered_at: wire::optional_instant("answered_at", r.answered_at.as_ref())?,
            ended_at: wire::required_instant("ended_at", r.ended_at.as_ref())?,
            billable_seconds: r.billable_seconds,
            network_result: r.network_result,
        };
        let (duplicate, flags_raised) = self.app.ingest_telephony(record).await?;
        Ok(Response::new(IngestTelephonyRecordResponse {
            duplicate,
            flags_raised,
        }))
    }

    async fn get_call_record(
        &self,
        request: Request<GetCallRecordRequest>,
    ) -> Result<Response<GetCallRecordResponse>, Status> {
        // The reader on record is the authenticated caller, whatever `reader` says.
        let (caller, r) = authorized_caller(request, |r| &r.tenant_id)?;
        let view = self
            .app
            .get_call_record(
                &r.tenant_id,
                &r.attempt_id,
                caller.subject(),
                r.full_view,
                &r.reason,
            )
            .await?;
        let timestamp = |t: Option<DateTime<Utc>>| t.map(wire::timestamp);
        Ok(Response::new(GetCallRecordResponse {
            attempt_id: view.attempt_id,
            callback_id: view.callback_id,
            agent_id: view.agent_id,
            disposition: view.disposition,
            started_at: timestamp(view.started_at),
            ended_at: timestamp(view.ended_at),
            number_dialed: view.number_dialed,
            network_result: view.network_result,
            notes: view.notes,
            answers_json: view.answers_json,
            flags: view.flags,
        }))
    }

    async fn publish_dispositions(
        &self,
        request: Request<PublishDispositionsRequest>,
    ) -> Result<Response<PublishDispositionsResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let version = self
            .app
            .publish_dispositions(&r.tenant_id, &r.mapping_json)
            .await?;
        Ok(Response::new(PublishDispositionsResponse { version }))
    }
}
