//! The gRPC adapter of [`SchedulingPort`]: scheduling's `CheckLeases`, with the trace context
//! passed on.

use callback_kit::grpc::{traced, Traced};
use callback_proto::v1::scheduling_client::SchedulingClient;
use callback_proto::v1::{CheckLeasesRequest, LeaseToCheck};
use tonic::Code;

use crate::app::ports::{BoxFuture, LeaseClaim, LeaseVerdict, SchedulingPort};
use crate::error::Error;

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
    fn check_leases<'a>(
        &'a self,
        tenant_id: &'a str,
        leases: &'a [LeaseClaim],
    ) -> BoxFuture<'a, Result<Vec<LeaseVerdict>, Error>> {
        Box::pin(async move {
            let request = CheckLeasesRequest {
                tenant_id: tenant_id.to_owned(),
                leases: leases
                    .iter()
                    .map(|l| LeaseToCheck {
                        callback_id: l.callback_id.to_string(),
                        agent_id: l.agent_id.clone(),
                        lease_id: l.lease_id.to_string(),
                    })
                    .collect(),
            };
            let checks = self
                .client
                .clone()
                .check_leases(request)
                .await
                .map_err(|s| match s.code() {
                    Code::InvalidArgument => Error::InvalidArgument {
                        field: "leases".into(),
                        reason: s.message().to_owned(),
                    },
                    _ => Error::Unavailable(format!(
                        "scheduling could not confirm the lease: {}",
                        s.message()
                    )),
                })?
                .into_inner()
                .checks;
            if checks.len() != leases.len() {
                return Err(Error::Unavailable(
                    "scheduling answered for another number of leases".into(),
                ));
            }
            use callback_proto::v1::LeaseVerdict as Wire;
            Ok(checks
                .into_iter()
                .map(|check| match Wire::try_from(check.verdict) {
                    Ok(Wire::LeaseHeld) => LeaseVerdict::Held {
                        subject_id: check.subject_id,
                        department: check.department,
                        questionnaire_id: check.questionnaire_id,
                    },
                    Ok(Wire::LeaseCallbackNotFound) => LeaseVerdict::NotFound,
                    Ok(Wire::LeaseCallbackNotClaimed) => LeaseVerdict::NotClaimed {
                        status: check.status,
                    },
                    Ok(Wire::LeaseNotHeld | Wire::Unspecified) | Err(_) => LeaseVerdict::NotHeld,
                })
                .collect())
        })
    }
}
