//! The gRPC adapter of [`SchedulingPort`]: scheduling's `IngestBusinessEvent`, with the trace
//! context passed on.

use callback_kit::grpc::{traced, Traced};
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{IngestBusinessEventRequest, Subject};
use tonic::Code;
use uuid::Uuid;

use crate::error::Error;
use crate::ports::{BoxFuture, CallbackAnswer, CallbackRequest, SchedulingPort};

/// The source complaint routing's facts carry at scheduling.
const SOURCE: &str = "complaint-routing";

#[derive(Clone)]
pub struct GrpcScheduling {
    client: SchedulingClient<Traced>,
}

impl GrpcScheduling {
    pub fn new(channel: impl Into<callback_kit::grpc::ServiceChannel>) -> Self {
        let client = SchedulingClient::new(traced(channel));
        Self { client }
    }
}

impl SchedulingPort for GrpcScheduling {
    fn request_callback(
        &self,
        request: CallbackRequest,
    ) -> BoxFuture<'_, Result<CallbackAnswer, Error>> {
        Box::pin(async move {
            let wire = IngestBusinessEventRequest {
                tenant_id: request.tenant_id,
                source: SOURCE.into(),
                source_event_id: request.source_event_id,
                event_type: request.event_type,
                occurred_at: Some(callback_kit::wire::timestamp(request.occurred_at)),
                subject: Some(Subject {
                    subject_id: subject_id(&request.customer),
                    name: request.customer.name,
                    phones: request.customer.phones,
                    owner_agent_id: String::new(),
                    department: request.department,
                }),
                attributes_json: serde_json::Value::Object(request.attributes).to_string(),
            };
            match self.client.clone().ingest_business_event(wire).await {
                Ok(response) => Ok(CallbackAnswer::Scheduled(
                    response
                        .into_inner()
                        .scheduled
                        .iter()
                        .filter(|s| s.status == "scheduled")
                        .filter_map(|s| s.callback_id.parse::<Uuid>().ok())
                        .collect(),
                )),
                // Scheduling refuses it (e.g. the tenant is unknown there): retrying will not help.
                Err(status)
                    if status.code() == Code::InvalidArgument
                        || status.code() == Code::NotFound =>
                {
                    Ok(CallbackAnswer::Refused(status.message().to_owned()))
                }
                Err(status) => Err(Error::Scheduling(status.message().to_owned())),
            }
        })
    }
}

/// Who scheduling calls back: the customer by id, or a complainant known only by number by
/// that number (`tel-8613900139000`); an anonymous complainant without one cannot be called,
/// which scheduling answers (empty subject id) and the complaint records.
fn subject_id(customer: &callback_contracts::complaint_routing::Customer) -> String {
    if !customer.customer_id.is_empty() {
        return customer.customer_id.clone();
    }
    customer
        .phones
        .first()
        .map(|phone| format!("tel-{}", phone.trim_start_matches('+')))
        .unwrap_or_default()
}
