//! The gRPC layer: converts wire types to the application's and back, nothing else.

use callback_kit::security::{authorized, authorized_caller};
use callback_kit::wire;
use callback_proto::v1::integration_gateway_server::{
    IntegrationGateway as GatewayApi, IntegrationGatewayServer,
};
use callback_proto::v1::{
    DeadLetter, GetIntegrationSettingsRequest, GetIntegrationSettingsResponse,
    ListDeadLettersRequest, ListDeadLettersResponse, PublishIntegrationSettingsRequest,
    PublishIntegrationSettingsResponse, RetryDeadLetterRequest, RetryDeadLetterResponse,
};
use tonic::{Request, Response, Status};

use crate::app::Gateway;
use crate::error::Error;
use crate::notify;

pub fn service(gateway: Gateway) -> IntegrationGatewayServer<Api> {
    IntegrationGatewayServer::new(Api { gateway })
}

pub struct Api {
    gateway: Gateway,
}

#[tonic::async_trait]
impl GatewayApi for Api {
    async fn publish_integration_settings(
        &self,
        request: Request<PublishIntegrationSettingsRequest>,
    ) -> Result<Response<PublishIntegrationSettingsResponse>, Status> {
        let (caller, r) = authorized_caller(request, |r| &r.tenant_id)?;
        let version = self
            .gateway
            .publish_settings(&r.tenant_id, &r.settings_json, caller.subject())
            .await?;
        Ok(Response::new(PublishIntegrationSettingsResponse {
            version,
        }))
    }

    async fn get_integration_settings(
        &self,
        request: Request<GetIntegrationSettingsRequest>,
    ) -> Result<Response<GetIntegrationSettingsResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let published = self.gateway.settings(&r.tenant_id).await?;
        let settings_json = serde_json::to_string(&published.settings.with_defaults())
            .map_err(|e| Status::from(Error::Corrupt(e.to_string())))?;
        Ok(Response::new(GetIntegrationSettingsResponse {
            version: published.version,
            settings_json,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let r = authorized(request, |r| &r.tenant_id)?;
        let limit = match r.limit {
            0 => 100,
            n @ 1..=500 => n,
            _ => return Err(Error::invalid("limit", "is at most 500").into()),
        };
        let letters =
            notify::dead_letters(self.gateway.store(), &r.tenant_id, i64::from(limit)).await?;
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: letters
                .into_iter()
                .map(|l| DeadLetter {
                    delivery_id: l.delivery_id.to_string(),
                    subscription: l.subscription,
                    topic: l.topic,
                    event_id: l.event_id.to_string(),
                    attempts: l.attempts.max(0) as u32,
                    last_error: l.last_error,
                    first_attempt_at: l.first_attempt_at.map(wire::timestamp),
                    dead_at: l.finished_at.map(wire::timestamp),
                })
                .collect(),
        }))
    }

    async fn retry_dead_letter(
        &self,
        request: Request<RetryDeadLetterRequest>,
    ) -> Result<Response<RetryDeadLetterResponse>, Status> {
        let (caller, r) = authorized_caller(request, |r| &r.tenant_id)?;
        let delivery_id = r
            .delivery_id
            .parse()
            .map_err(|_| Error::invalid("delivery_id", "is not a UUID"))?;
        notify::requeue(
            self.gateway.store(),
            &r.tenant_id,
            delivery_id,
            caller.subject(),
        )
        .await?;
        Ok(Response::new(RetryDeadLetterResponse {}))
    }
}
