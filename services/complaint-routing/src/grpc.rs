//! The gRPC layer: converts wire types to domain types and back, nothing else.

use callback_kit::security::authorized;
use callback_kit::wire;
use callback_proto::v1::complaint_routing_server::{
    ComplaintRouting as ComplaintRoutingApi, ComplaintRoutingServer,
};
use callback_proto::v1::{
    ClockView, ComplaintActionRequest, ComplaintActionResponse, ComplaintView,
    FileComplaintRequest, FileComplaintResponse, GetComplaintRequest, GetComplaintResponse,
    HistoryEntry, ListComplaintsRequest, ListComplaintsResponse, PublishRoutingRulesRequest,
    PublishRoutingRulesResponse,
};
use callback_rules::privacy::{mask_name, mask_phone};
use serde_json::Value;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::{Complaint, ComplaintRouting, ListFilter};
use crate::domain::{Action, ClockName, Customer, Intake};
use crate::error::invalid;

pub fn service(app: ComplaintRouting) -> ComplaintRoutingServer<Api> {
    ComplaintRoutingServer::new(Api { app })
}

pub struct Api {
    app: ComplaintRouting,
}

fn complaint_id(text: &str) -> Result<Uuid, Status> {
    text.parse()
        .map_err(|_| invalid("complaint_id", "must be a UUID").into())
}

/// The view a department sees: contact details masked, clocks evaluated now.
pub fn view(complaint: &Complaint, now: chrono::DateTime<chrono::Utc>) -> ComplaintView {
    let s = &complaint.state;
    let f = &s.filed;
    let calendar = &complaint.calendar.calendar;
    ComplaintView {
        complaint_id: f.complaint_id.to_string(),
        tenant_id: f.tenant_id.clone(),
        customer_id: f.customer.customer_id.clone(),
        phones_masked: f.customer.phones.iter().map(|p| mask_phone(p)).collect(),
        channel: f.channel.clone(),
        source: f.source.clone(),
        category: f.category.clone(),
        topic: f.topic.clone(),
        class: s.class.as_str().into(),
        origin: f.origin.as_str().into(),
        department: s.department.clone(),
        handler: s.handler.clone(),
        status: s.status.as_str().into(),
        escalation_level: s.level.as_str().into(),
        escalated_to: s.escalated_to.clone(),
        flags: f.flags.clone(),
        filed_at: Some(wire::timestamp(f.at)),
        reply_by: f.reply_by.map(wire::timestamp),
        breached: s.is_breached(),
        clocks: ClockName::ALL
            .into_iter()
            .map(|name| {
                let clock = s.clock(name);
                ClockView {
                    name: name.as_str().into(),
                    target_minutes: clock.target_minutes,
                    elapsed_minutes: clock.elapsed(calendar, now).num_minutes(),
                    running: clock.is_running(),
                    stopped: clock.stopped,
                    breaches: clock.breaches,
                    due_at: clock.next_breach_at(calendar).map(wire::timestamp),
                }
            })
            .collect(),
        verification_callback_ids: s
            .verification_callbacks
            .iter()
            .map(Uuid::to_string)
            .collect(),
        reopenings: s.reopenings,
        outcome: s.outcome.clone().unwrap_or_default(),
        callback_unavailable: s.callback_unavailable.clone().unwrap_or_default(),
        callback_id: f.callback_id.map(|c| c.to_string()).unwrap_or_default(),
    }
}

/// History payloads with the customer's name and phones masked.
fn masked_payload(payload: &str) -> String {
    let Ok(mut value) = serde_json::from_str::<Value>(payload) else {
        return String::new();
    };
    if let Some(customer) = value.get_mut("customer").and_then(Value::as_object_mut) {
        if let Some(Value::String(name)) = customer.get("name") {
            let masked = mask_name(name);
            customer.insert("name".into(), Value::String(masked));
        }
        if let Some(Value::Array(phones)) = customer.get("phones") {
            let masked: Vec<Value> = phones
                .iter()
                .filter_map(Value::as_str)
                .map(|p| Value::String(mask_phone(p)))
                .collect();
            customer.insert("phones".into(), Value::Array(masked));
        }
    }
    value.to_string()
}

impl Api {
    async fn act(
        &self,
        request: ComplaintActionRequest,
        action: impl FnOnce(&ComplaintActionRequest) -> Action,
    ) -> Result<Response<ComplaintActionResponse>, Status> {
        let id = complaint_id(&request.complaint_id)?;
        let action = action(&request);
        let acted = self
            .app
            .act(&request.tenant_id, id, &request.actor, action)
            .await?;
        Ok(Response::new(ComplaintActionResponse {
            complaint: Some(view(&acted.complaint, self.app.now())),
            event_types: acted.event_types,
        }))
    }
}

#[tonic::async_trait]
impl ComplaintRoutingApi for Api {
    async fn publish_routing_rules(
        &self,
        request: Request<PublishRoutingRulesRequest>,
    ) -> Result<Response<PublishRoutingRulesResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let version = self.app.publish_rules(&r.tenant_id, &r.rules_json).await?;
        Ok(Response::new(PublishRoutingRulesResponse { version }))
    }

    async fn file_complaint(
        &self,
        request: Request<FileComplaintRequest>,
    ) -> Result<Response<FileComplaintResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let customer = r
            .customer
            .ok_or_else(|| Status::from(invalid("customer", "is required")))?;
        let intake = Intake {
            tenant_id: r.tenant_id,
            source: r.source,
            source_id: r.source_id,
            channel: r.channel,
            customer: Customer {
                customer_id: customer.customer_id,
                name: customer.name,
                phones: customer.phones,
                ..Customer::default()
            },
            text: r.text,
            category: r.category,
            topic: r.topic,
            severity_hints: r.severity_hints,
            reply_by: wire::optional_instant("reply_by", r.reply_by.as_ref())?,
            callback_id: None,
        };
        let filing = self.app.file(intake).await?;
        Ok(Response::new(FileComplaintResponse {
            duplicate: filing.duplicate,
            complaint: Some(view(&filing.complaint, self.app.now())),
        }))
    }

    async fn acknowledge(
        &self,
        request: Request<ComplaintActionRequest>,
    ) -> Result<Response<ComplaintActionResponse>, Status> {
        self.act(authorized(request, |r| &r.tenant_id)?, |_| {
            Action::Acknowledge
        })
        .await
    }

    async fn add_progress(
        &self,
        request: Request<ComplaintActionRequest>,
    ) -> Result<Response<ComplaintActionResponse>, Status> {
        self.act(authorized(request, |r| &r.tenant_id)?, |r| {
            Action::AddProgress {
                note: r.text.clone(),
            }
        })
        .await
    }

    async fn request_information(
        &self,
        request: Request<ComplaintActionRequest>,
    ) -> Result<Response<ComplaintActionResponse>, Status> {
        self.act(authorized(request, |r| &r.tenant_id)?, |r| {
            Action::RequestInformation {
                question: r.text.clone(),
            }
        })
        .await
    }

    async fn receive_information(
        &self,
        request: Request<ComplaintActionRequest>,
    ) -> Result<Response<ComplaintActionResponse>, Status> {
        self.act(authorized(request, |r| &r.tenant_id)?, |r| {
            Action::ReceiveInformation {
                note: r.text.clone(),
            }
        })
        .await
    }

    async fn resolve(
        &self,
        request: Request<ComplaintActionRequest>,
    ) -> Result<Response<ComplaintActionResponse>, Status> {
        self.act(authorized(request, |r| &r.tenant_id)?, |r| {
            Action::Resolve {
                resolution: r.text.clone(),
            }
        })
        .await
    }

    async fn reject(
        &self,
        request: Request<ComplaintActionRequest>,
    ) -> Result<Response<ComplaintActionResponse>, Status> {
        self.act(authorized(request, |r| &r.tenant_id)?, |r| Action::Reject {
            explanation: r.text.clone(),
        })
        .await
    }

    async fn transfer(
        &self,
        request: Request<ComplaintActionRequest>,
    ) -> Result<Response<ComplaintActionResponse>, Status> {
        self.act(authorized(request, |r| &r.tenant_id)?, |r| {
            Action::Transfer {
                to: r.to_department.clone(),
                reason: r.text.clone(),
            }
        })
        .await
    }

    async fn get_complaint(
        &self,
        request: Request<GetComplaintRequest>,
    ) -> Result<Response<GetComplaintResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let id = complaint_id(&r.complaint_id)?;
        let record = self.app.get(&r.tenant_id, id).await?;
        Ok(Response::new(GetComplaintResponse {
            text: record.complaint.state.filed.text.clone(),
            complaint: Some(view(&record.complaint, self.app.now())),
            history: record
                .history
                .iter()
                .map(|e| HistoryEntry {
                    version: e.stream_version as u64,
                    event_type: e.event_type.clone(),
                    recorded_at: Some(wire::timestamp(e.recorded_at)),
                    payload_json: masked_payload(&e.payload),
                })
                .collect(),
        }))
    }

    async fn list_complaints(
        &self,
        request: Request<ListComplaintsRequest>,
    ) -> Result<Response<ListComplaintsResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let filter = ListFilter {
            tenant_id: r.tenant_id,
            department: r.department,
            class: r.class,
            breach: r.breach,
            include_closed: r.include_closed,
            limit: r.limit,
        };
        let now = self.app.now();
        let complaints = self.app.list(&filter).await?;
        Ok(Response::new(ListComplaintsResponse {
            complaints: complaints.iter().map(|c| view(c, now)).collect(),
        }))
    }
}
