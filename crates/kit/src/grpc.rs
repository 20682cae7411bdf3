//! gRPC server bootstrap (health, reflection, request spans, graceful shutdown) and clients
//! that propagate the trace context.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::service::Interceptor;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::server::HealthReporter;

use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid endpoint `{url}`: {reason}")]
    Endpoint { url: String, reason: String },
}

/// A router with standard health checking and server reflection already added; add the
/// service's own gRPC services to it.
pub fn router() -> Result<(Router, HealthReporter), GrpcError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(callback_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let router = Server::builder()
        .trace_fn(crate::telemetry::request_span)
        .add_service(health_service)
        .add_service(reflection);
    Ok((router, health))
}

/// Binds early, so a port conflict is reported before anything else starts.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, GrpcError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| GrpcError::Bind { addr, source })
}

/// Serves until shutdown, then stops accepting, marks every service not serving, and lets
/// in-flight requests finish.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    health: HealthReporter,
    service_names: &[&str],
    shutdown: Shutdown,
) -> Result<(), GrpcError> {
    for name in service_names {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let drain = {
        let shutdown = shutdown.clone();
        let health = health.clone();
        let names: Vec<String> = service_names.iter().map(|s| s.to_string()).collect();
        async move {
            shutdown.wait().await;
            for name in names {
                health
                    .set_service_status(name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
    };
    // Without TCP_NODELAY on accepted connections, a response written in several small
    // segments waits for the client's delayed ACK (40 ms on Linux): measured as 40-50 ms stalls
    // of a service asking another one, several times a second.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router.serve_with_incoming_shutdown(incoming, drain).await?;
    Ok(())
}

/// A lazily connecting channel to another service.
pub fn channel(url: &str) -> Result<Channel, GrpcError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| GrpcError::Endpoint {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A channel whose requests carry the current trace context: what generated clients wrap, e.g.
/// `SchedulingClient::new(traced(channel))`.
pub type Traced = tonic::service::interceptor::InterceptedService<Channel, TracePropagation>;

/// `channel` with [`TracePropagation`].
pub fn traced(channel: Channel) -> Traced {
    tonic::service::interceptor::InterceptedService::new(channel, TracePropagation)
}

/// Client interceptor adding the current trace context to every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracePropagation;

impl Interceptor for TracePropagation {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        crate::telemetry::inject_into(request.metadata_mut());
        Ok(request)
    }
}
