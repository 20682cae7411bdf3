//! The HTTP listener (HTTPS when TLS is configured): FHIR R4 under `/fhir/{tenant}` and the
//! webhooks under `/webhooks/{tenant}/dms` and `/webhooks/{tenant}/telephony`.
//!
//! FHIR requests carry a bearer token with `integration` in the tenant; webhooks are signed
//! by a registered sender (HMAC-SHA256, see [`crate::webhooks`]) or carry such a token
//! (`middleware` may also post call records).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use callback_kit::Shutdown;
use callback_rules::access::{Principal, Role};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::app::{Gateway, Handed};
use crate::fhir;
use crate::mapping::MappingError;
use crate::webhooks;

mod fhir_routes;
mod webhook_routes;

/// The largest request body accepted.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Entries of one transaction Bundle.
const MAX_BUNDLE_ENTRIES: usize = 1000;

pub fn router(gateway: Gateway) -> Router {
    use fhir_routes::{bundle, create, metadata, update, update_by_id};
    use webhook_routes::{dms, telephony};
    Router::new()
        .route("/fhir/{tenant}/metadata", get(metadata))
        .route("/fhir/{tenant}", post(bundle))
        .route("/fhir/{tenant}/{kind}", post(create).put(update))
        .route(
            "/fhir/{tenant}/{kind}/{id}",
            axum::routing::put(update_by_id),
        )
        .route("/webhooks/{tenant}/dms", post(dms))
        .route("/webhooks/{tenant}/telephony", post(telephony))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gateway)
}

/// Serves the router on `listener` until `shutdown`.
pub fn spawn(
    gateway: Gateway,
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    let app = router(gateway);
    tokio::spawn(async move {
        let stop = shutdown.wait_owned();
        let result = match tls {
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Some(config) => {
                let listener = TlsListener::start(listener, config, shutdown.clone());
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "http listener failed");
        }
    })
}

/// Accepts TCP connections and completes their TLS handshakes in their own tasks (a slow
/// client holds up nobody), handing finished ones to the server.
struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn start(
        listener: TcpListener,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
        shutdown: Shutdown,
    ) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (sender, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = shutdown.wait() => return,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        let _ = sender.send((stream, peer)).await;
                    }
                });
            }
        });
        Self { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // Shut down: no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

// ---- answers ----

fn fhir_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+json; charset=utf-8"),
    );
    response
}

fn fhir_error(
    status: StatusCode,
    code: &str,
    diagnostics: &str,
    expression: Option<&str>,
) -> Response {
    let mut response = fhir_json(
        status,
        fhir::outcome("error", code, diagnostics, expression),
    );
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn webhook_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn webhook_error(status: StatusCode, field: &str, reason: &str) -> Response {
    webhook_json(status, json!({"error": {"field": field, "reason": reason}}))
}

/// Why a request is not served: its HTTP status, the field at fault, the reason.
struct Refused {
    status: StatusCode,
    field: String,
    reason: String,
}

impl Refused {
    fn new(status: StatusCode, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            status,
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn unprocessable(error: MappingError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, error.field, error.reason)
    }

    fn fhir(self) -> Response {
        let code = match self.status {
            StatusCode::UNAUTHORIZED => "login",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::CONFLICT => "conflict",
            StatusCode::SERVICE_UNAVAILABLE => "transient",
            StatusCode::UNPROCESSABLE_ENTITY => "processing",
            StatusCode::NOT_FOUND => "not-supported",
            _ => "invalid",
        };
        let diagnostics = if self.field.is_empty() {
            self.reason.clone()
        } else {
            format!("{}: {}", self.field, self.reason)
        };
        fhir_error(
            self.status,
            code,
            &diagnostics,
            (!self.field.is_empty()).then_some(self.field.as_str()),
        )
    }

    fn webhook(self) -> Response {
        webhook_error(self.status, &self.field, &self.reason)
    }
}

/// A fact handed on, as an HTTP status: committed (201, or 200 for a resend), refused by
/// its service (422), a concurrent change (409) or a passing fault (503).
fn handed_status(handed: &Handed) -> Result<StatusCode, Refused> {
    match handed {
        Handed::Accepted {
            duplicate: true, ..
        } => Ok(StatusCode::OK),
        Handed::Accepted { .. } => Ok(StatusCode::CREATED),
        Handed::Rejected(reason) => Err(Refused::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "",
            reason.clone(),
        )),
        Handed::Transient(tonic::Code::Aborted, reason) => {
            Err(Refused::new(StatusCode::CONFLICT, "", reason.clone()))
        }
        Handed::Transient(_, _) => Err(Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "not committed (a service or the database is unavailable); retry",
        )),
    }
}

/// The tenant's settings, or 503 when they cannot be read.
async fn tenant_settings(
    gateway: &Gateway,
    tenant: &str,
) -> Result<Arc<crate::app::Published>, Refused> {
    gateway.settings(tenant).await.map_err(|_| {
        Refused::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "the gateway's database is unavailable; retry",
        )
    })
}

// ---- authentication ----

/// The principal of a bearer token, once it may act in `tenant` with one of `roles`.
fn bearer(
    gateway: &Gateway,
    headers: &HeaderMap,
    tenant: &str,
    roles: &[Role],
    method: &str,
) -> Result<Arc<Principal>, Refused> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| Refused::new(StatusCode::UNAUTHORIZED, "", "a bearer token is required"))?;
    let keys = gateway.security().tokens.as_ref().ok_or_else(|| {
        Refused::new(
            StatusCode::UNAUTHORIZED,
            "",
            "this deployment accepts no tokens (CALLBACK_JWKS_FILE)",
        )
    })?;
    let principal = keys.verify_remembered(token.trim()).map_err(|reason| {
        Refused::new(
            StatusCode::UNAUTHORIZED,
            "",
            format!("the token is not valid: {reason}"),
        )
    })?;
    if let Err(refusal) = principal.may(tenant, roles) {
        gateway
            .refusals()
            .record(&principal, method, Some(tenant), &refusal.message);
        return Err(Refused::new(StatusCode::FORBIDDEN, "", refusal.message));
    }
    Ok(principal)
}

fn check_tenant(tenant: &str) -> Result<(), Refused> {
    match callback_rules::ids::id_problem(tenant) {
        None => Ok(()),
        Some(problem) => Err(Refused::new(StatusCode::NOT_FOUND, "tenant", problem)),
    }
}

/// A signed webhook: the sender registered in the tenant's settings, its secret from the
/// secrets file, the signature and timestamp valid. Or a bearer token with one of `roles`.
async fn signed(
    gateway: &Gateway,
    headers: &HeaderMap,
    tenant: &str,
    body: &[u8],
    roles: &[Role],
    method: &str,
) -> Result<String, Refused> {
    if headers.contains_key(header::AUTHORIZATION) {
        return bearer(gateway, headers, tenant, roles, method).map(|p| p.subject.clone());
    }
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let sender = header_text(webhooks::SENDER_HEADER).ok_or_else(|| {
        Refused::new(
            StatusCode::UNAUTHORIZED,
            webhooks::SENDER_HEADER,
            "is missing (or send a bearer token)",
        )
    })?;
    let published = tenant_settings(gateway, tenant).await?;
    let registered = published
        .settings
        .webhooks
        .senders
        .iter()
        .any(|s| s.name == sender);
    let secret = gateway
        .secrets()
        .get(tenant, sender)
        .filter(|_| registered)
        .ok_or_else(|| {
            Refused::new(
                StatusCode::UNAUTHORIZED,
                webhooks::SENDER_HEADER,
                "is not a registered sender of this tenant",
            )
        })?;
    webhooks::verify(
        secret,
        header_text(webhooks::TIMESTAMP_HEADER),
        header_text(webhooks::SIGNATURE_HEADER),
        body,
        gateway.now(),
        published.settings.webhooks.replay_window_seconds,
    )
    .map_err(|e| Refused::new(StatusCode::UNAUTHORIZED, "", e.to_string()))?;
    Ok(sender.to_owned())
}

fn parse_json(body: &[u8]) -> Result<Value, Refused> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            "body",
            format!("not JSON: line {} column {}", e.line(), e.column()),
        )
    })?;
    if !value.is_object() {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "body",
            "is not a JSON object",
        ));
    }
    Ok(value)
}
