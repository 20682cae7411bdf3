//! gRPC server bootstrap (health, reflection, request spans, graceful shutdown) and clients
//! that propagate the trace context.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::server::HealthReporter;

use crate::security::{AuthLayer, RefusalLog, Security, Tls};
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

/// What every response passes through on its way out.
type ResponseMap = fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>;

/// The server's router: tonic's, with the layers every service has (status messages cut
/// short outside, authentication inside).
pub type Router = tonic::transport::server::Router<
    tower::layer::util::Stack<
        AuthLayer,
        tower::layer::util::Stack<
            tower::util::MapResponseLayer<ResponseMap>,
            tower::layer::util::Stack<
                crate::metrics::GrpcMetricsLayer,
                tower::layer::util::Identity,
            >,
        >,
    >,
>;

/// A router serving TLS as `security` says, authenticating every call but health checks,
/// with standard health checking and (unless switched off) server reflection already added;
/// add the service's own gRPC services to it.
pub fn router(
    service: &'static str,
    security: &Security,
    refusals: Option<RefusalLog>,
) -> Result<(Router, HealthReporter), GrpcError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut builder = Server::builder();
    if let Some(tls) = &security.tls {
        builder = builder.tls_config(tls.server_config())?;
    }
    let router = builder
        .trace_fn(crate::telemetry::request_span)
        // Outermost: every request is counted, refused ones included.
        .layer(crate::metrics::GrpcMetricsLayer::new(service))
        .layer(tower::util::MapResponseLayer::new(
            shorten_status_message::<tonic::body::Body> as ResponseMap,
        ))
        .layer(AuthLayer::new(security.clone(), refusals))
        .add_service(health_service);
    let router = if security.reflection {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(callback_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // The older protocol too: Python's grpcio-reflection and other tools speak only it.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(callback_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        router
            .add_service(reflection)
            .add_service(reflection_v1alpha)
    } else {
        router
    };
    Ok((router, health))
}

/// At most this many bytes of a status message (as sent, percent-encoded) reach a client.
pub const MAX_STATUS_MESSAGE: usize = 300;

/// A safety net under every error: a status message travels in an HTTP/2 header, and a long
/// one (a refused megabyte echoed back) makes common clients fail on the header's size
/// instead of reading the answer. Messages are cut at a character boundary, marked as cut.
fn shorten_status_message<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(value) = response.headers().get("grpc-message") else {
        return response;
    };
    let bytes = value.as_bytes();
    if bytes.len() <= MAX_STATUS_MESSAGE {
        return response;
    }
    let cut = char_boundary_before(bytes, MAX_STATUS_MESSAGE);
    let mut shortened = bytes[..cut].to_vec();
    shortened.extend_from_slice(b"...%20(cut)");
    if let Ok(value) = http::HeaderValue::from_bytes(&shortened) {
        response.headers_mut().insert("grpc-message", value);
    }
    response
}

/// The last index at most `limit` in a percent-encoded message where a character starts (an
/// ASCII byte, or an escape of a UTF-8 lead byte), so the cut message still decodes.
fn char_boundary_before(bytes: &[u8], limit: usize) -> usize {
    let (mut boundary, mut i) = (0, 0);
    while i < bytes.len() && i <= limit {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let byte = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .unwrap_or(0);
            if !(0x80..0xC0).contains(&byte) {
                boundary = i;
            }
            i += 3;
        } else {
            boundary = i;
            i += 1;
        }
    }
    boundary
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

/// A lazily connecting plaintext channel (an `http://` URL), or one that trusts the system's
/// defaults for `https://` (none here: give a CA with [`channel_with`]).
pub fn channel(url: &str) -> Result<Channel, GrpcError> {
    Ok(endpoint(url)?.connect_lazy())
}

/// A lazily connecting channel to another service: with `tls`, an `https://` URL is reached
/// over mutual TLS (the service's own certificate as its client identity).
pub fn channel_with(url: &str, tls: Option<&Tls>) -> Result<Channel, GrpcError> {
    channel_with_config(url, tls.map(Tls::client_config))
}

/// A lazily connecting channel with the given client TLS configuration for `https://` URLs.
pub fn channel_with_config(
    url: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<Channel, GrpcError> {
    let mut endpoint = endpoint(url)?;
    if let (Some(tls), true) = (tls, url.starts_with("https://")) {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect_lazy())
}

fn endpoint(url: &str) -> Result<Endpoint, GrpcError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| GrpcError::Endpoint {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true))
}

/// A channel to another service with the credentials this service presents there: its client
/// certificate travels with the channel's TLS; a service token (for plaintext deployments,
/// `CALLBACK_SERVICE_TOKEN_FILE`) with every request.
#[derive(Clone, Debug)]
pub struct ServiceChannel {
    pub channel: Channel,
    pub token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl From<Channel> for ServiceChannel {
    fn from(channel: Channel) -> Self {
        Self {
            channel,
            token: None,
        }
    }
}

/// A channel whose requests carry the current trace context (and the service's token, if it
/// has one): what generated clients wrap, e.g. `SchedulingClient::new(traced(channel))`.
pub type Traced = tonic::service::interceptor::InterceptedService<Channel, TracePropagation>;

/// `channel` with [`TracePropagation`].
pub fn traced(channel: impl Into<ServiceChannel>) -> Traced {
    let channel = channel.into();
    tonic::service::interceptor::InterceptedService::new(
        channel.channel,
        TracePropagation {
            authorization: channel.token,
        },
    )
}

/// Client interceptor adding the current trace context, and the service's token when it has
/// one, to every request.
#[derive(Clone, Debug, Default)]
pub struct TracePropagation {
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Interceptor for TracePropagation {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        crate::telemetry::inject_into(request.metadata_mut());
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_status_messages_are_cut_at_a_character_boundary() {
        let message = format!("name: {}", "界".repeat(1000));
        let encoded: String = message
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let response = http::Response::builder()
            .header("grpc-message", encoded)
            .body(())
            .unwrap();
        let shortened = shorten_status_message(response);
        let value = shortened.headers()["grpc-message"].as_bytes();
        assert!(value.len() <= MAX_STATUS_MESSAGE + 16);
        assert!(value.ends_with(b"...%20(cut)"));
        // Every escape of the kept part is whole, and the kept part ends before a lead byte.
        let kept = &value[..value.len() - b"...%20(cut)".len()];
        assert!(kept.starts_with(b"name") && !kept.ends_with(b"%"));
        let short = http::Response::builder()
            .header("grpc-message", "short")
            .body(())
            .unwrap();
        assert_eq!(
            shorten_status_message(short).headers()["grpc-message"],
            "short"
        );
    }
}
