//! The gRPC layer: converts wire types to domain types and back, nothing else.

use callback_kit::security::{authorized, authorized_caller};
use callback_kit::wire;
use callback_proto::v1::scheduling_server::{Scheduling as SchedulingApi, SchedulingServer};
use callback_proto::v1::{
    CallbackView, CheckLeasesRequest, CheckLeasesResponse, ClaimNextRequest, ClaimNextResponse,
    ClaimedCallback, EraseSubjectRequest, EraseSubjectResponse, ErasureMode, GetCallbackRequest,
    GetCallbackResponse, GetCallbacksRequest, GetCallbacksResponse, HistoryEntry,
    IngestBusinessEventRequest, IngestBusinessEventResponse, LeaseCheck, LeaseVerdict,
    ListCallbacksRequest, ListCallbacksResponse, PublishPolicyRequest, PublishPolicyResponse,
    PublishTenantRequest, PublishTenantResponse, ScheduledCallback, Subject,
};
use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::app::{CallbackRow, IngestResult, LeaseToCheck, Scheduling, SubjectContact};
use crate::domain::{BusinessFact, CallbackState, LeaseRefusal};
use crate::error::invalid;

/// The largest `attributes_json` of a business fact, and the longest subject name.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
pub const MAX_NAME_BYTES: usize = 600;

/// The most departments one claim may ask for.
pub const MAX_CLAIM_DEPARTMENTS: usize = 100;
pub fn service(app: Scheduling) -> SchedulingServer<Api> {
    SchedulingServer::new(Api { app })
}

pub struct Api {
    app: Scheduling,
}

fn timestamp(t: DateTime<Utc>) -> Option<Timestamp> {
    Some(wire::timestamp(t))
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn view(state: &CallbackState) -> CallbackView {
    let s = &state.scheduled;
    CallbackView {
        callback_id: s.callback_id.to_string(),
        tenant_id: s.tenant_id.clone(),
        policy_id: s.policy_id.clone(),
        policy_version: s.policy_version,
        step: s.step.clone(),
        occurrence: s.occurrence,
        subject_id: s.subject_id.clone(),
        department: s.department.clone().unwrap_or_default(),
        status: state.status.as_str().into(),
        due_at: timestamp(state.due_at),
        deadline: timestamp(state.deadline),
        priority: u32::from(s.priority),
        owner_agent_id: s.owner_agent_id.clone().unwrap_or_default(),
        pool: s.pool.clone(),
        claimed_by: state.claimed_by.clone().unwrap_or_default(),
        lease_until: state.lease_until.and_then(timestamp),
        attempts: state.attempts,
        end_reason: state.end_reason.clone().unwrap_or_default(),
        lease_id: state.lease_id.map(|l| l.to_string()).unwrap_or_default(),
        give_up_at: timestamp(state.give_up_at),
    }
}

fn row_view(row: CallbackRow) -> CallbackView {
    CallbackView {
        callback_id: row.callback_id.to_string(),
        tenant_id: row.tenant_id,
        policy_id: row.policy_id,
        policy_version: row.policy_version as u64,
        step: row.step,
        occurrence: row.occurrence as u32,
        subject_id: row.subject_id,
        department: row.department.unwrap_or_default(),
        status: row.status,
        due_at: timestamp(row.due_at),
        deadline: timestamp(row.deadline),
        priority: row.priority as u32,
        owner_agent_id: row.owner_agent_id.unwrap_or_default(),
        pool: row.pool,
        claimed_by: row.claimed_by.unwrap_or_default(),
        lease_until: row.lease_until.and_then(timestamp),
        attempts: row.attempts as u32,
        end_reason: row.end_reason.unwrap_or_default(),
        give_up_at: timestamp(row.give_up_at),
        // The read model does not keep lease ids; GetCallback (from the stream) has them.
        lease_id: String::new(),
    }
}

fn ingest_response(result: IngestResult) -> IngestBusinessEventResponse {
    IngestBusinessEventResponse {
        duplicate: result.duplicate,
        scheduled: result
            .scheduled
            .into_iter()
            .map(|s| ScheduledCallback {
                callback_id: s.callback_id.to_string(),
                policy_id: s.policy_id,
                policy_version: s.policy_version,
                step: s.step,
                occurrence: s.occurrence,
                due_at: timestamp(s.due_at),
                deadline: timestamp(s.deadline),
                status: s.status.as_str().into(),
            })
            .collect(),
        cancelled_callback_ids: result.cancelled.iter().map(ToString::to_string).collect(),
    }
}

#[tonic::async_trait]
impl SchedulingApi for Api {
    async fn publish_tenant(
        &self,
        request: Request<PublishTenantRequest>,
    ) -> Result<Response<PublishTenantResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let version = self
            .app
            .publish_tenant(&r.tenant_id, &r.settings_json)
            .await?;
        Ok(Response::new(PublishTenantResponse { version }))
    }

    async fn publish_policy(
        &self,
        request: Request<PublishPolicyRequest>,
    ) -> Result<Response<PublishPolicyResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let (policy_id, version) = self
            .app
            .publish_policy(&r.tenant_id, &r.policy_json)
            .await?;
        Ok(Response::new(PublishPolicyResponse { policy_id, version }))
    }

    async fn ingest_business_event(
        &self,
        request: Request<IngestBusinessEventRequest>,
    ) -> Result<Response<IngestBusinessEventResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let subject = r
            .subject
            .ok_or_else(|| Status::from(invalid("subject", "is required")))?;
        // Sizes at the edge, per request field (the fact's own event has a larger limit).
        for (field, value, limit) in [
            (
                "attributes_json",
                r.attributes_json.len(),
                MAX_ATTRIBUTES_BYTES,
            ),
            ("subject.name", subject.name.len(), MAX_NAME_BYTES),
        ] {
            if value > limit {
                let reason = format!("is {value} bytes, over the limit of {limit} bytes");
                return Err(invalid(field, reason).into());
            }
        }
        let attributes = if r.attributes_json.trim().is_empty() {
            serde_json::Map::new()
        } else {
            match serde_json::from_str::<serde_json::Value>(&r.attributes_json) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => return Err(invalid("attributes_json", "must be a JSON object").into()),
            }
        };
        let fact = BusinessFact {
            tenant_id: r.tenant_id,
            source: r.source,
            source_event_id: r.source_event_id,
            event_type: r.event_type,
            occurred_at: wire::required_instant("occurred_at", r.occurred_at.as_ref())?,
            subject_id: subject.subject_id.clone(),
            attributes,
        };
        let contact = SubjectContact {
            subject_id: subject.subject_id,
            name: subject.name,
            phones: subject.phones,
            owner_agent_id: non_empty(&subject.owner_agent_id),
            department: non_empty(&subject.department),
            ..Default::default()
        };
        Ok(Response::new(ingest_response(
            self.app.ingest(fact, contact).await?,
        )))
    }

    async fn claim_next(
        &self,
        request: Request<ClaimNextRequest>,
    ) -> Result<Response<ClaimNextResponse>, Status> {
        let (caller, r) = authorized_caller(request, |r| &r.tenant_id)?;
        caller.check_agent(&r.tenant_id, &r.agent_id)?;
        if r.departments.len() > MAX_CLAIM_DEPARTMENTS {
            return Err(invalid(
                "departments",
                format!(
                    "at most {MAX_CLAIM_DEPARTMENTS} entries, got {}",
                    r.departments.len()
                ),
            )
            .into());
        }
        let claim = self
            .app
            .claim_next(&r.tenant_id, &r.agent_id, &r.departments, r.lease_seconds)
            .await?;
        let claimed = claim.map(|c| {
            let s = &c.state.scheduled;
            ClaimedCallback {
                callback_id: s.callback_id.to_string(),
                lease_id: c.lease_id.to_string(),
                lease_until: timestamp(c.lease_until),
                policy_id: s.policy_id.clone(),
                step: s.step.clone(),
                channel: serde_json::to_value(s.channel)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                questionnaire_id: s.questionnaire_id.clone().unwrap_or_default(),
                priority: u32::from(s.priority),
                due_at: timestamp(c.state.due_at),
                deadline: timestamp(c.state.deadline),
                attempts: c.state.attempts,
                subject: Some(Subject {
                    subject_id: c.subject.subject_id,
                    name: c.subject.name,
                    phones: c.subject.phones,
                    owner_agent_id: c.subject.owner_agent_id.unwrap_or_default(),
                    department: c.subject.department.unwrap_or_default(),
                }),
            }
        });
        Ok(Response::new(ClaimNextResponse { claimed }))
    }

    async fn get_callback(
        &self,
        request: Request<GetCallbackRequest>,
    ) -> Result<Response<GetCallbackResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let id = r
            .callback_id
            .parse()
            .map_err(|_| Status::from(invalid("callback_id", "is not a UUID")))?;
        let as_of = wire::optional_bound("as_of", r.as_of.as_ref())?;
        let record = self.app.get_callback(&r.tenant_id, id, as_of).await?;
        let history = if r.without_history {
            &[][..]
        } else {
            &record.history[..]
        };
        Ok(Response::new(GetCallbackResponse {
            callback: Some(view(&record.state)),
            history: history
                .iter()
                .map(|e| HistoryEntry {
                    version: e.stream_version as u64,
                    event_type: e.event_type.clone(),
                    recorded_at: timestamp(e.recorded_at),
                    payload_json: e.payload.clone(),
                })
                .collect(),
        }))
    }

    async fn get_callbacks(
        &self,
        request: Request<GetCallbacksRequest>,
    ) -> Result<Response<GetCallbacksResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let ids = r
            .callback_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                id.parse()
                    .map_err(|_| invalid(format!("callback_ids[{i}]"), "is not a UUID"))
            })
            .collect::<Result<Vec<uuid::Uuid>, _>>()?;
        let states = self.app.get_callbacks(&r.tenant_id, &ids).await?;
        Ok(Response::new(GetCallbacksResponse {
            callbacks: states.iter().map(view).collect(),
        }))
    }

    async fn check_leases(
        &self,
        request: Request<CheckLeasesRequest>,
    ) -> Result<Response<CheckLeasesResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let leases = r
            .leases
            .iter()
            .enumerate()
            .map(|(i, lease)| {
                let uuid = |field: &str, value: &str| {
                    value
                        .parse()
                        .map_err(|_| invalid(format!("leases[{i}].{field}"), "is not a UUID"))
                };
                Ok(LeaseToCheck {
                    callback_id: uuid("callback_id", &lease.callback_id)?,
                    agent_id: lease.agent_id.clone(),
                    lease_id: uuid("lease_id", &lease.lease_id)?,
                })
            })
            .collect::<Result<Vec<_>, crate::Error>>()?;
        let checked = self.app.check_leases(&r.tenant_id, &leases).await?;
        let checks = r
            .leases
            .into_iter()
            .zip(checked)
            .map(|(asked, checked)| {
                let (verdict, state) = match checked {
                    None => (LeaseVerdict::LeaseCallbackNotFound, None),
                    Some((state, Ok(()))) => (LeaseVerdict::LeaseHeld, Some(state)),
                    Some((state, Err(LeaseRefusal::NotHolder))) => {
                        (LeaseVerdict::LeaseNotHeld, Some(state))
                    }
                    Some((state, Err(LeaseRefusal::Ended(_) | LeaseRefusal::NotClaimed))) => {
                        (LeaseVerdict::LeaseCallbackNotClaimed, Some(state))
                    }
                };
                let held = verdict == LeaseVerdict::LeaseHeld;
                LeaseCheck {
                    callback_id: asked.callback_id,
                    verdict: verdict.into(),
                    status: state
                        .as_ref()
                        .map(|s| s.status.as_str().to_owned())
                        .unwrap_or_default(),
                    subject_id: state
                        .as_ref()
                        .filter(|_| held)
                        .map(|s| s.scheduled.subject_id.clone())
                        .unwrap_or_default(),
                    department: state
                        .as_ref()
                        .filter(|_| held)
                        .and_then(|s| s.scheduled.department.clone())
                        .unwrap_or_default(),
                    questionnaire_id: state
                        .as_ref()
                        .filter(|_| held)
                        .and_then(|s| s.scheduled.questionnaire_id.clone())
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(CheckLeasesResponse { checks }))
    }

    async fn erase_subject(
        &self,
        request: Request<EraseSubjectRequest>,
    ) -> Result<Response<EraseSubjectResponse>, Status> {
        let (caller, r) = authorized_caller(request, |r| &r.tenant_id)?;
        let mode = match ErasureMode::try_from(r.mode) {
            Ok(ErasureMode::Erase) => callback_contracts::scheduling::ErasureMode::Erase,
            Ok(ErasureMode::Restrict) => callback_contracts::scheduling::ErasureMode::Restrict,
            _ => {
                return Err(invalid(
                    "mode",
                    "must be ERASURE_MODE_ERASE or ERASURE_MODE_RESTRICT",
                )
                .into())
            }
        };
        let erasure = self
            .app
            .erase_subject(
                &r.tenant_id,
                &r.subject_id,
                mode,
                &r.reason,
                caller.subject(),
            )
            .await?;
        Ok(Response::new(EraseSubjectResponse {
            had_personal_data: erasure.had_key,
            cancelled_callback_ids: erasure.cancelled.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn list_callbacks(
        &self,
        request: Request<ListCallbacksRequest>,
    ) -> Result<Response<ListCallbacksResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let overdue = match r.view.as_str() {
            "" | "due" => false,
            "overdue" => true,
            other => {
                return Err(
                    invalid("view", format!("`{other}` is neither `due` nor `overdue`")).into(),
                )
            }
        };
        let rows = self
            .app
            .list_callbacks(&r.tenant_id, &r.department, &r.agent_id, overdue, r.limit)
            .await?;
        Ok(Response::new(ListCallbacksResponse {
            callbacks: rows.into_iter().map(row_view).collect(),
        }))
    }
}
